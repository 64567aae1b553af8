"""ASGI middleware: request ids, the body-size limit (checked before parsing), the body deadline, request metrics."""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.log_format import REQUEST_ID
from app.metrics import ServiceMetrics

# Ops routes and the docs (with their assets) stay outside request metrics: probes would drown the real traffic.
UNMETERED_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/docs", "/openapi.json"})
UNMETERED_PREFIXES = ("/docs/",)
_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class RequestContextMiddleware:
    """Gives each request an id (``X-Request-ID``, also on its log lines), refuses oversized bodies with 413 and
    bodies not received within ``body_timeout_s`` with 408, and counts requests.
    """

    def __init__(
        self, app: ASGIApp, metrics: ServiceMetrics, max_body_bytes: int, body_timeout_s: float = 30.0
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self.body_timeout_s = body_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        offered = headers.get("x-request-id", "")
        request_id = offered if _SAFE_REQUEST_ID.match(offered) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        REQUEST_ID.set(request_id)  # this request's task (and the threads it starts) log with its id
        status_holder = {"status": 500, "started": False}

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
                status_holder["started"] = True
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        declared = headers.get("content-length")
        try:
            if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
                await self._too_large(send_with_id, request_id)
                return
            # Read the whole body here, bounded in size and time, then replay it: a chunked body has no length to
            # check up front, and a client that stops sending must not hold the request (and its connection) open.
            # Raising from inside the app's receive() would surface as FastAPI's generic 400 instead.
            try:
                async with asyncio.timeout(self.body_timeout_s):
                    replay = await self._read_bounded(receive)
            except TimeoutError:
                self.metrics.rejections.labels("body_timeout").inc()
                await self._refuse(
                    send_with_id,
                    408,
                    "request_timeout",
                    f"request body not complete within {self.body_timeout_s:g} s (VQA_BODY_TIMEOUT_S); "
                    "send the whole body at once",
                    request_id,
                )
                return
            if replay is None:
                await self._too_large(send_with_id, request_id)
                return
            await self.app(scope, replay, send_with_id)
        finally:
            path = scope.get("path", "")
            if path not in UNMETERED_PATHS and not path.startswith(UNMETERED_PREFIXES):
                route = scope.get("route")
                template = getattr(route, "path", None) or "unmatched"
                self.metrics.requests.labels(template, str(status_holder["status"])).inc()
                self.metrics.request_duration.labels(template).observe(time.perf_counter() - started)

    async def _read_bounded(self, receive: Receive) -> Receive | None:
        """The whole body if it stays within the limit (as a replaying receive), else None."""
        parts: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                return None
            parts.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(parts)
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return replay

    async def _too_large(self, send: Send, request_id: str) -> None:
        await self._refuse(
            send,
            413,
            "payload_too_large",
            f"request body exceeds {self.max_body_bytes} bytes (VQA_MAX_BODY_BYTES); send fewer or shorter contexts",
            request_id,
        )

    @staticmethod
    async def _refuse(send: Send, status: int, code: str, message: str, request_id: str) -> None:
        """The error body, then close: the rest of the request body is still on its way (or never comes)."""
        body: dict[str, Any] = {"error": {"code": code, "message": message, "request_id": request_id}}
        payload = json.dumps(body).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(payload)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})
