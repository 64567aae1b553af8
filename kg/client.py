"""The service's graph client: the official neo4j async driver, read transactions with timeouts, a TTL cache.

One driver per process (created in the app's lifespan), a session per unit of work, ``database`` always named,
Cypher always parameterised and limited to what both Neo4j 5 and ArcadeDB run.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import date
from typing import Any

from neo4j import AsyncDriver, AsyncGraphDatabase, AsyncManagedTransaction, unit_of_work
from neo4j.exceptions import DriverError, Neo4jError

from kg.linker import EntityRef
from kg.timeline import ScheduledChange, in_force

log = logging.getLogger(__name__)

FACTS_QUERY = """
MATCH (e:Entity) WHERE e.id IN $ids
OPTIONAL MATCH (e)-[r]-(o:Entity)
RETURN e.id AS id, e.name AS name, e.type AS type, properties(e) AS props,
       type(r) AS rel, properties(r) AS rel_props, startNode(r).id AS rel_source,
       o.id AS other_id, o.name AS other_name, o.type AS other_type
LIMIT $limit
"""

ALIASES_QUERY = "MATCH (e:Entity) RETURN e.id AS id, e.name AS name, e.type AS type, e.aliases AS aliases"


class GraphUnavailableError(Exception):
    """The graph did not answer (down, slow or refused); the caller degrades instead of failing."""


@dataclass(frozen=True, slots=True)
class Relation:
    type: str
    direction: str  # "out" when the entity is the source
    other: EntityRef
    props: dict[str, Any]


@dataclass(frozen=True, slots=True)
class EntityFacts:
    """An entity's properties and relations. As read from the graph, dated facts are still encoded; :meth:`on`
    gives the view a reader wants: the values in force on a day plus the changes scheduled after it."""

    entity: EntityRef
    props: dict[str, Any]
    relations: list[Relation] = field(default_factory=list)
    changes: list[ScheduledChange] = field(default_factory=list)

    def on(self, day: date) -> EntityFacts:
        props, changes = in_force(self.props, day)
        return replace(self, props=props, changes=changes)


@dataclass(slots=True)
class _CacheEntry:
    value: EntityFacts | None  # None: the id is not in the graph (cached too, so misses cost no round trip)
    expires: float


class GraphClient:
    """Reads entity facts and aliases from a Bolt graph (Neo4j 5 or the embedded ArcadeDB).

    ``facts_for`` answers from a TTL cache where it can and fetches the rest in one round trip. Failures raise
    :class:`GraphUnavailableError` and mark the client unhealthy; the driver reconnects by itself, and the next
    successful query (or :meth:`ping`) marks it healthy again.
    """

    def __init__(
        self,
        uri: str,
        user: str,
        password: str,
        database: str,
        timeout_s: float = 1.0,
        cache_ttl_s: float = 300.0,
        max_relations_per_entity: int = 20,
        on_lookup: Callable[[float], None] | None = None,
        on_cache_hit: Callable[[int], None] | None = None,
        on_error: Callable[[str], None] | None = None,
    ) -> None:
        self.uri = uri
        self.database = database
        self.timeout_s = timeout_s
        self.cache_ttl_s = cache_ttl_s
        self.max_relations_per_entity = max_relations_per_entity
        self._auth = (user, password)
        self._driver: AsyncDriver | None = None
        self._cache: dict[str, _CacheEntry] = {}
        self._on_lookup = on_lookup
        self._on_cache_hit = on_cache_hit
        self._on_error = on_error
        self.healthy = False

    def connect(self) -> None:
        self._driver = AsyncGraphDatabase.driver(
            self.uri,
            auth=self._auth,
            connection_timeout=self.timeout_s,
            connection_acquisition_timeout=self.timeout_s,
            # execute_read retries transient errors for 30 s by default: far past any request deadline.
            max_transaction_retry_time=self.timeout_s,
            max_connection_lifetime=300,
        )

    async def close(self) -> None:
        if self._driver is not None:
            await self._driver.close()
            self._driver = None

    async def _read(self, query: str, **params: Any) -> list[dict[str, Any]]:
        if self._driver is None:
            raise GraphUnavailableError("graph client is not connected")

        @unit_of_work(timeout=self.timeout_s)
        async def work(tx: AsyncManagedTransaction) -> list[dict[str, Any]]:
            result = await tx.run(query, **params)
            return [record.data() async for record in result]

        try:
            async with self._driver.session(database=self.database) as session:
                rows = await asyncio.wait_for(session.execute_read(work), timeout=self.timeout_s * 2)
        except (TimeoutError, DriverError, Neo4jError, OSError) as exc:
            self.healthy = False
            kind = "timeout" if isinstance(exc, TimeoutError) else type(exc).__name__
            if self._on_error is not None:
                self._on_error(kind)
            raise GraphUnavailableError(f"graph read failed ({kind}): {exc}") from exc
        self.healthy = True
        return rows

    async def ping(self) -> bool:
        try:
            await self._read("RETURN 1 AS ok")
        except GraphUnavailableError:
            return False
        return True

    async def entity_aliases(self) -> list[tuple[EntityRef, list[str]]]:
        rows = await self._read(ALIASES_QUERY)
        return [(EntityRef(r["id"], r["name"], r["type"]), list(r["aliases"] or [])) for r in rows]

    async def facts_for(self, ids: Sequence[str]) -> list[EntityFacts]:
        """Facts (properties and 1-hop typed relations, bounded) of each known id, in the order given."""
        now = time.monotonic()
        wanted = list(dict.fromkeys(ids))
        cached = {i: self._cache[i] for i in wanted if i in self._cache and self._cache[i].expires > now}
        if cached and self._on_cache_hit is not None:
            self._on_cache_hit(len(cached))
        missing = [i for i in wanted if i not in cached]
        if missing:
            started = time.perf_counter()
            rows = await self._read(FACTS_QUERY, ids=missing, limit=len(missing) * (self.max_relations_per_entity + 1))
            if self._on_lookup is not None:
                self._on_lookup(time.perf_counter() - started)
            fetched = self._assemble(rows)
            for i in missing:
                cached[i] = _CacheEntry(fetched.get(i), now + self.cache_ttl_s)
                self._cache[i] = cached[i]
        return [entry.value for i in wanted if (entry := cached[i]).value is not None]

    def _assemble(self, rows: list[dict[str, Any]]) -> dict[str, EntityFacts]:
        out: dict[str, EntityFacts] = {}
        for row in rows:
            facts = out.get(row["id"])
            if facts is None:
                props = {k: v for k, v in (row["props"] or {}).items() if k not in {"id", "name", "type", "aliases"}}
                facts = EntityFacts(EntityRef(row["id"], row["name"], row["type"]), props, [])
                out[row["id"]] = facts
            if row["rel"] is None or len(facts.relations) >= self.max_relations_per_entity:
                continue
            facts.relations.append(
                Relation(
                    type=row["rel"],
                    direction="out" if row["rel_source"] == row["id"] else "in",
                    other=EntityRef(row["other_id"], row["other_name"], row["other_type"]),
                    props=dict(row["rel_props"] or {}),
                )
            )
        return out

    def clear_cache(self) -> None:
        self._cache.clear()
