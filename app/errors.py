"""One JSON error body for every failure: ``{"error": {"code", "message", "request_id"}}``.

Domain errors map to their status here; anything unexpected becomes a sanitized 500 and its trace goes only to the
log.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.qa.batcher import BatcherClosedError, DeadlineExceededError, InferenceError, OverloadedError
from app.qa.windows import WindowOverflowError

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An error the client should see, with its status, stable code and a message that says how to fix it."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


def request_id_of(request: Request) -> str:
    return str(getattr(request.state, "request_id", "") or request.headers.get("x-request-id", ""))


def error_response(
    status: int,
    code: str,
    message: str,
    request_id: str,
    headers: dict[str, str] | None = None,
    details: list[dict[str, Any]] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {"code": code, "message": message, "request_id": request_id}
    if details:
        body["details"] = details
    return JSONResponse({"error": body}, status_code=status, headers=headers)


def _field_path(loc: tuple[Any, ...]) -> str:
    parts = [p for p in loc if p not in ("body", "query", "path", "header")]
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "body"


def _unparseable_body_reason(exc: BaseException | None) -> str:
    """Why the JSON parser gave up, in words a client can act on (FastAPI only says 'error parsing the body')."""
    if isinstance(exc, UnicodeDecodeError):
        return f"it is not UTF-8 (invalid byte at position {exc.start})"
    if isinstance(exc, RecursionError):
        return "arrays or objects are nested too deeply"
    if isinstance(exc, ValueError) and "digits" in str(exc):
        return f"a number has more than {sys.get_int_max_str_digits()} digits"
    return "it could not be parsed"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message, request_id_of(request), exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            reason = next(str(e.get("ctx", {}).get("error", "")) for e in errors if e.get("type") == "json_invalid")
            return error_response(
                400, "invalid_json", f"request body is not valid JSON: {reason}", request_id_of(request)
            )
        details = [{"field": _field_path(tuple(e.get("loc", ()))), "message": str(e.get("msg", ""))} for e in errors]
        message = "; ".join(f"{d['field']}: {d['message']}" for d in details)
        return error_response(422, "invalid_request", message, request_id_of(request), details=details)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400:  # FastAPI's only 400: a JSON body the parser refused for other than syntax
            return error_response(
                400,
                "invalid_json",
                f"request body is not valid JSON: {_unparseable_body_reason(exc.__cause__)}",
                request_id_of(request),
            )
        codes = {404: "not_found", 405: "method_not_allowed", 401: "unauthorized"}
        return error_response(
            exc.status_code,
            codes.get(exc.status_code, "http_error"),
            str(exc.detail),
            request_id_of(request),
            dict(exc.headers or {}),
        )

    @app.exception_handler(OverloadedError)
    async def _overloaded(request: Request, exc: OverloadedError) -> JSONResponse:
        return error_response(503, exc.code, str(exc), request_id_of(request), {"Retry-After": str(exc.retry_after_s)})

    @app.exception_handler(InferenceError)
    async def _inference_failed(request: Request, exc: InferenceError) -> JSONResponse:
        # The batcher already logged the model's error; the requests that shared the batch got their answers. A
        # handled error: the connection stays usable (unlike the unexpected 500 below).
        rid = request_id_of(request)
        return error_response(500, "inference_failed", f"{exc}; quote request id {rid} when reporting it", rid)

    @app.exception_handler(DeadlineExceededError)
    async def _deadline(request: Request, exc: DeadlineExceededError) -> JSONResponse:
        return error_response(
            504,
            "deadline_exceeded",
            f"{exc}; the service is overloaded or the timeout (VQA_REQUEST_TIMEOUT_MS) is too short",
            request_id_of(request),
        )

    @app.exception_handler(BatcherClosedError)
    async def _closed(request: Request, exc: BatcherClosedError) -> JSONResponse:
        return error_response(503, "shutting_down", str(exc), request_id_of(request), {"Retry-After": "1"})

    @app.exception_handler(WindowOverflowError)
    async def _window_overflow(request: Request, exc: WindowOverflowError) -> JSONResponse:
        # Never sent to the model: only this request fails, and the log keeps the sizes for the bug report.
        rid = request_id_of(request)
        log.error("request %s: %s", rid, exc)
        return error_response(
            500, "window_overflow", f"the text could not be cut into model windows; quote request id {rid}", rid
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Starlette sends this from outside every middleware and then re-raises, and uvicorn closes the connection
        # on that: say so (Connection: close) so that the client does not send its next request down a dead line.
        rid = request_id_of(request)
        log.exception("unhandled error in request %s", rid)
        return error_response(
            500,
            "internal_error",
            f"internal error; quote request id {rid} when reporting it",
            rid,
            {"Connection": "close", "X-Request-ID": rid},
        )
