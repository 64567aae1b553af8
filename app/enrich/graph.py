"""Knowledge-graph enrichment of answers: link entities in question and answers, return their facts.

``GraphEnrichment`` owns the graph side of the service for its lifetime: the embedded ArcadeDB server when
``VQA_KG_URI`` is unset (or a real Neo4j when it is set), the first load of the domain pack into an empty graph, the
driver, the entity linker built from the graph's aliases, and a supervisor that notices when the graph goes away and
comes back. A request never fails because of the graph: it gets ``graph_status: unavailable`` and no facts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Literal

from neo4j import GraphDatabase

from app.config import Settings
from app.metrics import ServiceMetrics
from kg.client import EntityFacts, GraphClient, GraphUnavailableError
from kg.embedded import EmbeddedGraph, stored_password
from kg.linker import EntityLinker, EntityMention
from kg.loader import graph_counts, load_pack, loaded_version
from kg.pack import GraphPack

log = logging.getLogger(__name__)

GraphStatus = Literal["ok", "unavailable", "disabled"]


@dataclass(slots=True)
class Enrichment:
    status: GraphStatus
    mentions: list[tuple[str, EntityMention]] = field(default_factory=list)  # (source, mention)
    facts: list[EntityFacts] = field(default_factory=list)

    def entities_json(self) -> list[dict[str, Any]]:
        return [
            {
                "id": m.entity.id,
                "name": m.entity.name,
                "type": m.entity.type,
                "text": m.text,
                "start": m.start,
                "end": m.end,
                "source": source,
            }
            for source, m in self.mentions
        ]

    def facts_json(self) -> list[dict[str, Any]]:
        return [
            {
                "entity": {"id": f.entity.id, "name": f.entity.name, "type": f.entity.type},
                "properties": f.props,
                "changes": [c.as_json() for c in f.changes],
                "relations": [
                    {
                        "type": r.type,
                        "direction": r.direction,
                        "other": {"id": r.other.id, "name": r.other.name, "type": r.other.type},
                        "properties": r.props,
                    }
                    for r in f.relations
                ],
            }
            for f in self.facts
        ]


class GraphEnrichment:
    def __init__(
        self,
        settings: Settings,
        metrics: ServiceMetrics,
        pack_graph: GraphPack | None = None,
        today: Callable[[], date] = date.today,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.pack_graph = pack_graph  # loaded into an empty graph
        self.today = today  # facts are answered as they are in force on this day
        self.embedded: EmbeddedGraph | None = None
        self.client: GraphClient | None = None
        self.linker = EntityLinker([])
        self._supervisor: asyncio.Task[None] | None = None
        self.start_error: str | None = None

    @property
    def enabled(self) -> bool:
        return self.settings.kg_enabled

    @property
    def status(self) -> GraphStatus:
        if not self.enabled:
            return "disabled"
        return "ok" if self.client is not None and self.client.healthy else "unavailable"

    async def start(self) -> None:
        """Start (embedded) or reach the graph, load the pack if the graph is empty, build the linker.

        Failures are logged and leave the status ``unavailable``; the supervisor keeps trying.
        """
        if not self.enabled:
            return
        s = self.settings
        try:
            if s.kg_uri is None:
                root = s.kg_data_dir.resolve()
                self.embedded = EmbeddedGraph(root=root, password=stored_password(root), heap_mb=s.kg_heap_mb)
                await asyncio.to_thread(self.embedded.start)
                uri, user, password, database = (
                    self.embedded.uri,
                    "root",
                    self.embedded.password,
                    self.embedded.database,
                )
            else:
                uri, user = s.kg_uri, s.kg_user
                password, database = s.kg_password.get_secret_value(), s.kg_database
            if self.pack_graph is not None and s.kg_load_pack:
                await asyncio.to_thread(self._load_pack_if_empty, uri, user, password, database, self.pack_graph)
            self.client = GraphClient(
                uri,
                user,
                password,
                database,
                timeout_s=s.kg_timeout_ms / 1000,
                cache_ttl_s=s.kg_cache_ttl_s,
                max_relations_per_entity=s.kg_max_relations,
                on_lookup=self.metrics.kg_lookup_duration.observe,
                on_cache_hit=self.metrics.kg_cache_hits.inc,
                on_error=lambda kind: self.metrics.kg_errors.labels(kind).inc(),
            )
            self.client.connect()
            await self._refresh_linker()
        except Exception as exc:  # the service must come up without its graph
            self.start_error = f"{type(exc).__name__}: {exc}"
            log.error("graph unavailable at start-up: %s", self.start_error)
        self.metrics.kg_up.set(1 if self.status == "ok" else 0)
        self._supervisor = asyncio.get_running_loop().create_task(self._supervise(), name="vqa-graph-supervisor")

    @staticmethod
    def _load_pack_if_empty(uri: str, user: str, password: str, database: str, pack: GraphPack) -> None:
        """Load the pack into an empty graph, or over an older version of the same pack (which it replaces)."""
        with GraphDatabase.driver(uri, auth=(user, password)) as driver:
            entities, _ = graph_counts(driver, database)
            loaded = loaded_version(driver, database, pack.name)
            if entities and loaded in (None, pack.version):
                return
            counts = load_pack(driver, pack, database)
            log.info("loaded pack %s v%s (the graph held %s): %s", pack.name, pack.version, loaded or "nothing", counts)

    async def _refresh_linker(self) -> None:
        if self.client is None:
            return
        entries = await self.client.entity_aliases()
        self.linker = await asyncio.to_thread(EntityLinker, entries)
        log.info("entity linker: %d aliases of %d entities", self.linker.size, len(entries))

    async def _supervise(self) -> None:
        """While the graph is down (or the linker empty), ping it; on recovery rebuild the linker."""
        interval = self.settings.kg_health_interval_s
        while True:
            await asyncio.sleep(interval)
            if self.client is None:
                continue
            if not self.client.healthy or not self.linker.size:
                if await self.client.ping():
                    try:
                        await self._refresh_linker()
                    except GraphUnavailableError:
                        pass
            self.metrics.kg_up.set(1 if self.status == "ok" else 0)

    async def enrich(self, question: str, answers: list[str]) -> Enrichment:
        if not self.enabled:
            return Enrichment("disabled")
        if self.client is None or not self.client.healthy:
            return Enrichment("unavailable")
        mentions: list[tuple[str, EntityMention]] = [("question", m) for m in self.linker.link(question)]
        for index, text in enumerate(answers):
            mentions.extend((f"answer:{index}", m) for m in self.linker.link(text))
        if not mentions:
            return Enrichment("ok")
        try:
            facts = await self.client.facts_for([m.entity.id for _, m in mentions])
        except GraphUnavailableError as exc:
            log.warning("enrichment skipped: %s", exc)
            self.metrics.kg_up.set(0)
            return Enrichment("unavailable", mentions)
        day = self.today()
        return Enrichment("ok", mentions, [f.on(day) for f in facts])

    async def stop(self) -> None:
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        if self.client is not None:
            await self.client.close()
        if self.embedded is not None:
            await asyncio.to_thread(self.embedded.stop)
