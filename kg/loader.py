"""Load a domain pack into the graph: constraint, batched ``UNWIND ... MERGE``, idempotent, all or nothing.

A load makes the graph's entities the pack's: entities, properties and relations an earlier version of the pack
wrote and this one no longer has are removed in the same transaction (a renamed entity must not keep its aliases).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from neo4j import Driver, ManagedTransaction

from kg.pack import GraphPack
from kg.timeline import encode

BATCH = 500


@dataclass(frozen=True, slots=True)
class LoadCounts:
    entities: int
    relations: int
    nodes_created: int
    relationships_created: int

    def __str__(self) -> str:
        return (
            f"{self.entities} entities, {self.relations} relations in the graph "
            f"({self.nodes_created} nodes and {self.relationships_created} relationships created by this load)"
        )


def ensure_schema(driver: Driver, database: str) -> None:
    with driver.session(database=database) as session:
        session.run("CREATE CONSTRAINT entity_id IF NOT EXISTS FOR (e:Entity) REQUIRE e.id IS UNIQUE").consume()


def load_pack(driver: Driver, pack: GraphPack, database: str) -> LoadCounts:
    """Write ``pack`` in one transaction: a failure rolls everything back, a second run creates nothing.

    Dated facts are stored as parallel lists (:mod:`kg.timeline`). Values always travel as parameters.
    Relationship types cannot be parameters in Cypher; they are spliced in only after :class:`kg.pack.RelationRow`
    has held them to ``^[A-Z][A-Z0-9_]*$``. What the pack no longer has is removed first (see the module docstring).
    """
    ensure_schema(driver, database)
    entity_rows = [
        {"id": e.id, "type": e.type, "name": e.name, "aliases": e.aliases, "props": encode(e)} for e in pack.entities
    ]
    by_type: dict[str, list[dict[str, object]]] = defaultdict(list)
    for r in pack.relations:
        by_type[r.type].append({"source": r.source, "target": r.target, "props": r.props})
    wanted_props = {row["id"]: set(row["props"]) | {"id", "type", "name", "aliases"} for row in entity_rows}
    wanted_relations = {(r.source, r.type, r.target) for r in pack.relations}

    def remove_stale(tx: ManagedTransaction) -> None:
        tx.run("MATCH (e:Entity) WHERE NOT e.id IN $ids DETACH DELETE e", ids=list(wanted_props)).consume()
        stale_props = [
            {"id": row["id"], "nulls": dict.fromkeys(set(row["props"]) - wanted_props[row["id"]])}
            for row in tx.run("MATCH (e:Entity) RETURN e.id AS id, properties(e) AS props").data()
            if set(row["props"]) - wanted_props.get(row["id"], set(row["props"]))
        ]
        if stale_props:  # setting a property to null removes it
            tx.run("UNWIND $rows AS r MATCH (e:Entity {id: r.id}) SET e += r.nulls", rows=stale_props).consume()
        stale_relations = [
            row
            for row in tx.run(
                "MATCH (a:Entity)-[x]->(b:Entity) RETURN a.id AS source, type(x) AS type, b.id AS target"
            ).data()
            if (row["source"], row["type"], row["target"]) not in wanted_relations
        ]
        if stale_relations:
            tx.run(
                "UNWIND $rows AS r MATCH (a:Entity {id: r.source})-[x]->(b:Entity {id: r.target}) "
                "WHERE type(x) = r.type DELETE x",
                rows=stale_relations,
            ).consume()

    def write(tx: ManagedTransaction) -> tuple[int, int]:
        remove_stale(tx)
        nodes = rels = 0
        for i in range(0, len(entity_rows), BATCH):
            summary = tx.run(
                "UNWIND $rows AS r MERGE (e:Entity {id: r.id}) "
                "SET e.type = r.type, e.name = r.name, e.aliases = r.aliases, e += r.props",
                rows=entity_rows[i : i + BATCH],
            ).consume()
            nodes += summary.counters.nodes_created
        for rel_type, rows in sorted(by_type.items()):
            for i in range(0, len(rows), BATCH):
                summary = tx.run(
                    "UNWIND $rows AS r MATCH (a:Entity {id: r.source}) MATCH (b:Entity {id: r.target}) "
                    f"MERGE (a)-[x:{rel_type}]->(b) SET x += r.props",
                    rows=rows[i : i + BATCH],
                ).consume()
                rels += summary.counters.relationships_created
        tx.run(
            "MERGE (p:Pack {name: $name}) SET p.version = $version, p.entities = $entities, p.relations = $relations",
            name=pack.name,
            version=pack.version,
            entities=len(entity_rows),
            relations=len(pack.relations),
        ).consume()
        return nodes, rels

    with driver.session(database=database) as session:
        nodes_created, rels_created = session.execute_write(write)
        entities, relations = graph_counts(driver, database)
    return LoadCounts(entities, relations, nodes_created, rels_created)


def loaded_version(driver: Driver, database: str, name: str) -> str | None:
    """Version of pack ``name`` the graph was last loaded with (None: never)."""

    def read(tx: ManagedTransaction) -> str | None:
        row = tx.run("MATCH (p:Pack {name: $name}) RETURN p.version AS version", name=name).single()
        return None if row is None else str(row["version"])

    with driver.session(database=database) as session:
        return session.execute_read(read)


def graph_counts(driver: Driver, database: str) -> tuple[int, int]:
    """(entities, relationships between entities) now in the graph."""

    def read(tx: ManagedTransaction) -> tuple[int, int]:
        entities = tx.run("MATCH (e:Entity) RETURN count(e) AS n").single(strict=True)["n"]
        relations = tx.run("MATCH (:Entity)-[r]->(:Entity) RETURN count(r) AS n").single(strict=True)["n"]
        return int(entities), int(relations)

    with driver.session(database=database) as session:
        return session.execute_read(read)
