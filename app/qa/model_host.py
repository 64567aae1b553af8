"""The served model and its zero-downtime swap.

A :class:`ServedModel` is one loaded reader with its own batcher. Requests take a *lease* on the current one for
their whole life (tokenise, queue, forward, decode), so a request never mixes two models. :meth:`ModelHost.swap`
makes a new model current at once (requests that start from then on lease it) and drains the old one: it waits
until its last lease is returned, then closes its batcher, so nothing in flight is dropped or failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from app.qa.batcher import WindowBatcher
from app.qa.reader import Reader

log = logging.getLogger(__name__)


class ReloadInProgressError(Exception):
    """A reload is already running; one at a time."""


class NoModelError(Exception):
    """No model is loaded yet."""


@dataclass(eq=False)
class ServedModel:
    """A loaded reader, its batcher, where it came from, and the requests that hold it."""

    reader: Reader
    batcher: WindowBatcher
    source: Path
    loaded_at: float = field(default_factory=time.time)
    leases: int = 0
    draining: bool = False
    _idle: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def name(self) -> str:
        return self.reader.card.name

    @property
    def version(self) -> str:
        return self.reader.card.version

    def _take(self) -> None:
        self.leases += 1
        self._idle.clear()

    def _give_back(self) -> None:
        self.leases -= 1
        if self.leases == 0:
            self._idle.set()

    async def drain(self, timeout_s: float) -> bool:
        """Wait for the last lease (at most ``timeout_s``), then close the batcher. True if nothing was cut off."""
        self.draining = True
        if self.leases == 0:
            self._idle.set()
        try:
            await asyncio.wait_for(self._idle.wait(), timeout=timeout_s)
            drained = True
        except TimeoutError:
            drained = False
            log.warning("%s v%s: %d requests still running after %.0fs; closing", self.name, self.version,
                        self.leases, timeout_s)  # fmt: skip
        await self.batcher.close()
        return drained


@dataclass(frozen=True, slots=True)
class SwapResult:
    previous: ServedModel | None
    current: ServedModel
    load_s: float
    drained: bool


ModelBuilder = Callable[[Path], Awaitable[ServedModel]]


class ModelHost:
    """Holds the current :class:`ServedModel`; swaps it for a new one without failing requests in flight."""

    def __init__(
        self,
        build: ModelBuilder,
        resolve: Callable[[], Path],
        on_swap: Callable[[ServedModel], None] | None = None,
        drain_timeout_s: float = 30.0,
    ) -> None:
        self._build = build
        self._resolve = resolve
        self._on_swap = on_swap
        self.drain_timeout_s = drain_timeout_s
        self.current: ServedModel | None = None
        self._reloading = asyncio.Lock()
        self._draining: set[ServedModel] = set()

    @property
    def reloading(self) -> bool:
        return self._reloading.locked()

    @contextlib.asynccontextmanager
    async def lease(self) -> AsyncIterator[ServedModel]:
        """The current model, held until the block ends (a swap in between waits for it)."""
        served = self.current
        if served is None:
            raise NoModelError("no model is loaded yet")
        served._take()
        try:
            yield served
        finally:
            served._give_back()

    async def reload(self) -> SwapResult:
        """Load the checkpoint that should be served now (the registry's serving version, or the configured path)."""
        return await self.load(self._resolve())

    async def load(self, path: Path) -> SwapResult:
        """Build a model from ``path`` (the current one keeps serving meanwhile), make it current, drain the old.

        Raises :class:`ReloadInProgressError` if another load runs; a failed build leaves the current model serving.
        """
        if self._reloading.locked():
            raise ReloadInProgressError("a model reload is already running")
        async with self._reloading:
            started = time.perf_counter()
            new = await self._build(path)
            load_s = time.perf_counter() - started
            previous, self.current = self.current, new
            if self._on_swap is not None:
                self._on_swap(new)
            drained = True
            if previous is not None:
                log.info("serving %s v%s; draining %s v%s (%d in flight)", new.name, new.version, previous.name,
                         previous.version, previous.leases)  # fmt: skip
                self._draining.add(previous)
                try:
                    drained = await previous.drain(self.drain_timeout_s)
                finally:
                    self._draining.discard(previous)
            return SwapResult(previous, new, load_s, drained)

    async def close(self) -> None:
        """Close every batcher (the current one and any still draining)."""
        models = [m for m in (self.current, *self._draining) if m is not None]
        self.current = None
        for model in models:
            await model.batcher.close()
