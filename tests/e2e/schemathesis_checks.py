"""Schemathesis checks of this service; the CLI loads them with ``SCHEMATHESIS_HOOKS=tests.e2e.schemathesis_checks``."""

from __future__ import annotations

from typing import Any

import schemathesis
from schemathesis.core.failures import Failure


@schemathesis.check
def one_error_body(ctx: Any, response: Any, case: Any) -> bool | None:
    """Every 4xx/5xx is ``{"error": {"code", "message", "request_id"}}`` in JSON, its id also in X-Request-ID."""
    if response.status_code < 400:
        return None
    try:
        body = response.json()
    except ValueError:
        raise Failure(
            operation=case.operation.label, title="Error without the JSON error body", message=response.text[:300]
        ) from None
    error = body.get("error") if isinstance(body, dict) else None
    header = response.headers.get("x-request-id") or [""]
    if not (
        isinstance(error, dict)
        and set(body) == {"error"}
        and {"code", "message", "request_id"} <= set(error)
        and error["request_id"] == header[0]
    ):
        raise Failure(operation=case.operation.label, title="Error body not in the documented shape", message=str(body))
    return True
