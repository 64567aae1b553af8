"""Log lines as JSON objects, each carrying the id of the request it was logged in.

The request id lives in a context variable that :class:`app.middleware.RequestContextMiddleware` sets for each
request; asyncio tasks and ``asyncio.to_thread`` copy the context, so a line logged anywhere while serving a request
(uvicorn's access line, a worker thread, the error handler) names it. Lines outside any request have no id.
"""

from __future__ import annotations

import logging
import sys
from contextvars import ContextVar

from pythonjsonlogger.json import JsonFormatter

from app.config import Settings

REQUEST_ID: ContextVar[str | None] = ContextVar("vqa_request_id", default=None)
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s"


class RequestIdFilter(logging.Filter):
    """Adds ``request_id`` (or None) to every record that passes through the handler."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = REQUEST_ID.get()
        return True


def configure_logging(settings: Settings) -> None:
    """One handler on the root logger, on stderr: JSON (``VQA_LOG_FORMAT=json``, default) or text.

    Transformers logs through its own handler and draws progress bars on stderr; both would break a stream of
    one JSON object per line, so its records go to the root handler and the bars are off.
    """
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_default_handler()
    transformers_logging.enable_propagation()
    transformers_logging.disable_progress_bar()
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RequestIdFilter())
    if settings.log_format == "json":
        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s %(request_id)s",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            )
        )
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(settings.log_level.upper())
