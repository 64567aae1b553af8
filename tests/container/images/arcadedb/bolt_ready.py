"""Healthcheck: a Bolt query as the NEO4J_AUTH user succeeds (what cypher-shell 'RETURN 1' checks on Neo4j)."""

import os

from neo4j import GraphDatabase

user, _, password = os.environ["NEO4J_AUTH"].partition("/")
uri = f"bolt://127.0.0.1:{os.environ['GRAPH_BOLT_PORT']}"
with GraphDatabase.driver(uri, auth=(user, password), connection_timeout=3) as driver:
    with driver.session(database=os.environ["GRAPH_DATABASE"]) as session:
        session.run("RETURN 1 AS ok").consume()
