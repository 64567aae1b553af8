#!/bin/sh
# ArcadeDB server with Bolt; the user and password come from NEO4J_AUTH (user/password), as with the Neo4j image.
set -eu
auth="${NEO4J_AUTH:?set NEO4J_AUTH=user/password}"
user="${auth%%/*}"
password="${auth#*/}"
home=/opt/arcadedb/home
exec "$home/jre/bin/java" "-Xmx${GRAPH_HEAP_MB}m" -cp "$home/jars/*" \
  -Darcadedb.server.rootPath=/data \
  "-Darcadedb.server.rootPassword=$password" \
  "-Darcadedb.server.defaultDatabases=$GRAPH_DATABASE[$user:$password:admin]" \
  "-Darcadedb.server.httpIncomingHost=$GRAPH_HOST" \
  "-Darcadedb.server.httpIncomingPort=$GRAPH_HTTP_PORT" \
  -Darcadedb.server.plugins=Bolt:com.arcadedb.bolt.BoltProtocolPlugin \
  "-Darcadedb.bolt.host=$GRAPH_HOST" \
  "-Darcadedb.bolt.port=$GRAPH_BOLT_PORT" \
  com.arcadedb.server.ArcadeDBServer
