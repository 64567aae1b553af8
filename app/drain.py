"""Graceful drain: on SIGTERM stop taking requests, let the ones in progress finish, then stop with exit code 0.

``vqa serve`` runs :class:`DrainingServer`. Its first SIGTERM (or SIGINT) starts :func:`drain` instead of stopping:

1. ``/readyz`` answers 503 ``draining`` so that load balancers stop sending; a new request gets 503
   ``shutting_down`` with ``Retry-After`` (another replica can take it), and every response from now on carries
   ``Connection: close`` so that clients do not reuse a connection that is about to go away.
2. Requests already in progress finish, for up to ``VQA_DRAIN_GRACE_S``; then the drain waits for half a second in
   which no request arrives, so that the listening socket does not close on a client in the middle of connecting.
3. If the grace period runs out first, the model host's batchers are closed (the current model's, and a reload's
   old one still finishing): requests still waiting for the model are answered 503 ``shutting_down`` (a response,
   not a cut connection).
4. uvicorn closes the listening socket and the idle connections, the lifespan stops the feedback desk, the canary
   and the graph child, and the process exits 0. A second signal stops at once (uvicorn's own shutdown).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import time
from types import FrameType

import uvicorn
from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import error_response
from app.middleware import UNMETERED_PATHS
from app.qa.model_host import ModelHost

log = logging.getLogger(__name__)

# When the grace period has this much left and requests still wait for the model, they are answered 503 instead.
_CLOSE_BATCHER_BEFORE_END_S = 1.0
# The drain ends once nothing is in flight and no request has arrived for this long: closing the listening socket
# resets connections that the kernel accepted but the server had not, so the close waits for a quiet moment, and a
# client sending on a keep-alive connection meanwhile gets a 503 to act on instead of a socket closed under it.
_QUIET_S = 0.5


class DrainState:
    """Whether the service is draining, and how many requests (ops probes aside) are in progress."""

    def __init__(self) -> None:
        self.draining = False
        self.in_flight = 0
        self.last_arrival = 0.0  # monotonic time of the latest request (ops probes aside), refused ones included
        self._idle = asyncio.Event()
        self._idle.set()

    def begin(self) -> None:
        self.draining = True

    def enter(self) -> None:
        self.in_flight += 1
        self._idle.clear()

    def leave(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 0:
            self._idle.set()

    async def wait_idle(self, timeout_s: float) -> bool:
        """True once no request is in progress; False if ``timeout_s`` passed first."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout=max(timeout_s, 0.0))
        except TimeoutError:
            return False
        return True


class DrainMiddleware:
    """Counts requests in progress and, once draining, refuses new ones with 503 ``shutting_down``."""

    def __init__(self, app: ASGIApp, state: DrainState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_closing(message: Message) -> None:
            if message["type"] == "http.response.start" and self.state.draining:
                headers = list(message.get("headers", []))
                if not any(name.lower() == b"connection" for name, _ in headers):
                    headers.append((b"connection", b"close"))
                message["headers"] = headers
            await send(message)

        if scope.get("path", "") in UNMETERED_PATHS:
            await self.app(scope, receive, send_closing)
            return
        self.state.last_arrival = time.monotonic()
        if self.state.draining:
            request_id = str(scope.get("state", {}).get("request_id", ""))
            refusal = error_response(
                503,
                "shutting_down",
                "the service is shutting down and takes no new requests; retry (another replica will answer)",
                request_id,
                {"Retry-After": "1"},
            )
            await refusal(scope, receive, send_closing)
            return
        self.state.enter()
        try:
            await self.app(scope, receive, send_closing)
        finally:
            self.state.leave()


async def drain(app: FastAPI, grace_s: float) -> bool:
    """Stop taking requests and wait up to ``grace_s`` for those in progress; True if all finished normally."""
    state: DrainState = app.state.drain
    state.begin()
    started = time.monotonic()
    log.info("draining: %d requests in progress, grace period %.0f s", state.in_flight, grace_s)
    first_wait = max(grace_s - _CLOSE_BATCHER_BEFORE_END_S, grace_s / 2)
    if await state.wait_idle(first_wait):
        end = started + grace_s
        while (quiet_left := _QUIET_S - (time.monotonic() - state.last_arrival)) > 0 and time.monotonic() < end:
            await asyncio.sleep(min(quiet_left, end - time.monotonic()))
        log.info("drained in %.2f s", time.monotonic() - started)
        return True
    host: ModelHost | None = getattr(app.state, "models", None)
    if host is not None:
        log.warning(
            "grace period ending with %d requests in progress: refusing what waits for the model", state.in_flight
        )
        await host.close()  # every batcher, a reload's draining one included
    finished = await state.wait_idle(grace_s - (time.monotonic() - started))
    log.info("drain ended after %.2f s (%d requests still in progress)", time.monotonic() - started, state.in_flight)
    return finished


class DrainingServer(uvicorn.Server):
    """uvicorn's server, except that the first SIGTERM/SIGINT drains the app (see :func:`drain`) before stopping,
    and a drained stop exits 0 (uvicorn re-raises the signal after shutting down, which exits 143)."""

    def __init__(self, config: uvicorn.Config, app: FastAPI, grace_s: float) -> None:
        super().__init__(config)
        self.app = app
        self.grace_s = grace_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._drain_requested = False
        self._drain_task: asyncio.Task[None] | None = None

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._loop is not None and self.started and not self._drain_requested and not self.should_exit:
            log.info("received %s: draining", signal.Signals(sig).name)
            self._drain_requested = True
            self._loop.call_soon_threadsafe(self._start_drain)
            return
        # Not started yet, or a second signal: stop now, like uvicorn (a third one on SIGINT forces the exit).
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True
        self.should_exit = True

    def _start_drain(self) -> None:
        self._drain_task = asyncio.get_running_loop().create_task(self._drain_then_exit(), name="vqa-drain")

    async def _drain_then_exit(self) -> None:
        try:
            await drain(self.app, self.grace_s)
        finally:
            self.should_exit = True
