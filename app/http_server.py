"""The HTTP/1.1 server around the app: uvicorn's h11 protocol with a deadline for request headers and JSON errors.

uvicorn closes a keep-alive connection that stays idle between requests, but it sets no timer while a request's
headers arrive: a client that connects and sends nothing, or half a request line, holds its connection (and a file
descriptor) for ever, and a few hundred such clients exhaust the server. Its answer to a malformed request is a
plain-text 400. :class:`DeadlineH11Protocol` adds the header deadline (``VQA_HEADER_TIMEOUT_S``) and answers
malformed requests in the service's one JSON error body. The body deadline (``VQA_BODY_TIMEOUT_S``) lives in
:class:`app.middleware.RequestContextMiddleware`, where the body is read.
"""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from typing import Any, ClassVar

import h11
from uvicorn.config import Config
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.server import ServerState

from app.config import Settings


def error_response_bytes(status: int, reason: bytes, code: str, message: str, request_id: str) -> bytes:
    """A complete HTTP/1.1 response in the one JSON error body that closes the connection."""
    body = json.dumps({"error": {"code": code, "message": message, "request_id": request_id}}).encode()
    head = (
        f"HTTP/1.1 {status} {reason.decode()}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\nx-request-id: {request_id}\r\n\r\n"
    )
    return head.encode("latin-1") + body


class DeadlineH11Protocol(H11Protocol):
    """uvicorn's h11 protocol plus a deadline for request headers and JSON 400s.

    The header timer runs while the connection waits for a request's headers: from connect, and from the first byte
    of each later request (between requests uvicorn's keep-alive timeout applies). When it fires, a client that sent
    part of a request gets 408 ``request_timeout``; one that sent nothing is just disconnected.
    """

    header_timeout_s: ClassVar[float] = 10.0

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._watch_headers()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._watch_headers()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_header_timer()
        super().connection_lost(exc)

    def _watch_headers(self) -> None:
        waiting = self.conn.their_state is h11.IDLE and not self.transport.is_closing()
        if not waiting:
            self._stop_header_timer()
        elif self._header_timer is None:
            self._header_timer = self.loop.call_later(self.header_timeout_s, self._headers_timed_out)

    def _stop_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_timed_out(self) -> None:
        self._header_timer = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        partial, _ = self.conn.trailing_data
        if partial:
            self.transport.write(
                error_response_bytes(
                    408,
                    b"Request Timeout",
                    "request_timeout",
                    f"request headers not complete within {self.header_timeout_s:g} s (VQA_HEADER_TIMEOUT_S); "
                    "send the whole request at once",
                    uuid.uuid4().hex,
                )
            )
        self.transport.close()

    def send_400_response(self, msg: str) -> None:
        # uvicorn calls this from inside its `except h11.RemoteProtocolError`, so the parser's reason is at hand.
        problem = sys.exception()
        reason = str(problem) if isinstance(problem, h11.RemoteProtocolError) and str(problem) else msg
        self.transport.write(
            error_response_bytes(
                400,
                b"Bad Request",
                "invalid_http",
                f"malformed HTTP request ({reason}); send a valid HTTP/1.1 request line and headers",
                uuid.uuid4().hex,
            )
        )
        self.transport.close()


def deadline_protocol(header_timeout_s: float) -> type[DeadlineH11Protocol]:
    """The protocol class with this header deadline (uvicorn builds one instance per connection)."""
    return type("DeadlineH11Protocol", (DeadlineH11Protocol,), {"header_timeout_s": header_timeout_s})


def server_options(settings: Settings) -> dict[str, Any]:
    """uvicorn keyword arguments every way of serving this app uses (``uvicorn.run`` or ``uvicorn.Config``).

    ``log_config=None`` leaves logging to :func:`app.log_format.configure_logging`, so uvicorn's own lines come out
    in the same JSON as the service's.
    """
    return {"http": deadline_protocol(settings.header_timeout_s), "log_config": None}
