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
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Literal

from neo4j import GraphDatabase

from app.config import Settings
from app.metrics import ServiceMetrics
from kg.client import EntityFacts, GraphClient, GraphUnavailableError
from kg.embedded import EmbeddedGraph
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
    """The graph side of the service: server (embedded) or driver (Neo4j), pack, linker, and their supervisor.

    The supervisor pings the graph every ``VQA_KG_HEALTH_INTERVAL_S``, traffic or not, so ``/readyz`` and
    ``vqa_kg_up`` follow a dead or frozen graph within a ping or two. An embedded server that exits is reaped and
    started again in the same folder; one alive but silent for ``VQA_KG_UNRESPONSIVE_RESTART_S`` is killed and
    started again; failed starts are retried with exponential backoff up to ``VQA_KG_RESTART_BACKOFF_MAX_S``. A
    Neo4j server (``VQA_KG_URI``) is only pinged: its driver reconnects by itself.
    """

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
        # One long-lived thread starts and stops the embedded server: the kernel's parent-death signal follows the
        # thread that forked the child, so a short-lived worker thread would take the server down with it.
        self._launcher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vqa-graph-launcher")
        self._last_answer = time.monotonic()
        self._next_attempt = 0.0
        self._backoff_s = 1.0

    @property
    def enabled(self) -> bool:
        return self.settings.kg_enabled

    @property
    def status(self) -> GraphStatus:
        if not self.enabled:
            return "disabled"
        return "ok" if self.client is not None and self.client.healthy else "unavailable"

    async def start(self) -> None:
        """Start (embedded) or reach the graph, load the pack if the graph is empty, build the linker; supervise.

        Failures are logged and leave the status ``unavailable``; the supervisor keeps trying.
        """
        if not self.enabled:
            return
        self._after_attempt(await self._connect())
        self._publish_status()
        self._supervisor = asyncio.get_running_loop().create_task(self._supervise(), name="vqa-graph-supervisor")

    async def _in_launcher(self, work: Callable[[], object]) -> None:
        await asyncio.get_running_loop().run_in_executor(self._launcher, work)

    async def _connect(self) -> bool:
        s = self.settings
        try:
            if s.kg_uri is None:
                if self.embedded is None:
                    self.embedded = EmbeddedGraph(root=s.kg_data_dir.resolve(), heap_mb=s.kg_heap_mb)
                    self.metrics.kg_process_pid = lambda: self.embedded.pid if self.embedded is not None else None
                await self._in_launcher(self.embedded.start)
                uri, user, password, database = (
                    self.embedded.uri,
                    self.embedded.user,
                    self.embedded.password,
                    self.embedded.database,
                )
            else:
                uri, user = s.kg_uri, s.kg_user
                password, database = s.kg_password.get_secret_value(), s.kg_database
            if self.pack_graph is not None and s.kg_load_pack:
                await asyncio.to_thread(self._load_pack_if_empty, uri, user, password, database, self.pack_graph)
            if self.client is None or self.client.uri != uri:
                if self.client is not None:
                    await self.client.close()
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
        except Exception as exc:  # the service must come up (and stay up) without its graph
            self.start_error = f"{type(exc).__name__}: {exc}"
            log.error("graph unavailable: %s", self.start_error)
            return False
        self.start_error = None
        return True

    def _after_attempt(self, succeeded: bool) -> None:
        """Reset the backoff after a success; after a failure wait twice as long as last time (capped)."""
        now = time.monotonic()
        if succeeded:
            self._backoff_s, self._next_attempt, self._last_answer = 1.0, 0.0, now
        else:
            self._next_attempt = now + self._backoff_s
            self._backoff_s = min(self._backoff_s * 2, self.settings.kg_restart_backoff_max_s)

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

    def _publish_status(self) -> None:
        self.metrics.kg_up.set(1 if self.status == "ok" else 0)

    async def _supervise(self) -> None:
        interval = self.settings.kg_health_interval_s
        while True:
            await asyncio.sleep(interval)
            try:
                await self.check()
            except Exception:  # a bug here must not end supervision
                log.exception("graph supervision round failed")
            self._publish_status()

    async def check(self) -> None:
        """One supervision round: reap and restart a dead server, ping a live one, restart one silent too long."""
        now = time.monotonic()
        embedded = self.embedded
        if embedded is not None and embedded.process is not None:
            exit_code = embedded.poll()  # reaps the child once it has exited
            if exit_code is not None:
                if self.client is not None and self.client.healthy:
                    log.error("embedded graph (pid %s) exited with %s; restarting it", embedded.pid, exit_code)
                    self.client.healthy = False
                self._publish_status()  # before the restart, which takes seconds
                await self._restart(now)
                return
        if self.client is None:  # never connected: keep trying, with backoff
            if now >= self._next_attempt:
                self._after_attempt(await self._connect())
            return
        if await self.client.ping():
            self._last_answer = now
            if not self.linker.size:
                with contextlib.suppress(GraphUnavailableError):
                    await self._refresh_linker()
            return
        self._publish_status()
        silent_s = now - self._last_answer
        if embedded is not None and embedded.running and silent_s >= self.settings.kg_unresponsive_restart_s:
            log.error("embedded graph (pid %s) silent for %.0f s; killing and restarting it", embedded.pid, silent_s)
            await self._in_launcher(embedded.kill)
            await self._restart(now)

    async def _restart(self, now: float) -> None:
        if now < self._next_attempt or self.embedded is None:
            return
        self.metrics.kg_restarts.inc()
        succeeded = await self._connect()
        if not succeeded:
            # e.g. another process took its port meanwhile: the next attempt picks free ones
            self.embedded.bolt_port = self.embedded.http_port = 0
        self._after_attempt(succeeded)

    async def enrich(self, question: str, answers: list[str]) -> Enrichment:
        """Link question and answers with the graph's own aliases, then :meth:`facts_for`."""
        mentions: list[tuple[str, EntityMention]] = [("question", m) for m in self.linker.link(question)]
        for index, text in enumerate(answers):
            mentions.extend((f"answer:{index}", m) for m in self.linker.link(text))
        return await self.facts_for(mentions)

    async def facts_for(self, mentions: list[tuple[str, EntityMention]]) -> Enrichment:
        """The facts of entities already linked, as (source, mention) pairs; one read transaction, cached."""
        if not self.enabled:
            return Enrichment("disabled", mentions)
        if self.client is None or not self.client.healthy:
            return Enrichment("unavailable", mentions)
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
            await self._in_launcher(self.embedded.stop)
        self._launcher.shutdown(wait=True)
