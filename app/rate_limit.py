"""Per-API-key request limits (``VQA_RATE_LIMIT``), a moving window from the ``limits`` library, in memory.

Keys are counted by a hash, never by their text. Each replica counts on its own: behind N replicas a key gets up to
N times the limit (``limits`` also has Redis storage, should one shared count be needed).
"""

from __future__ import annotations

import hashlib
import math
import time

from limits import parse_many
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter


class KeyRateLimiter:
    """Admits a request for a key while every one of its limits has room, counting it against all of them."""

    def __init__(self, spec: str) -> None:
        self.spec = spec
        self._items = parse_many(spec) if spec else []
        self._limiter = MovingWindowRateLimiter(MemoryStorage())

    @property
    def enabled(self) -> bool:
        return bool(self._items)

    def retry_after_s(self, key: str) -> int | None:
        """None when the key may go ahead now (and the request is counted), else whole seconds to wait."""
        ident = hashlib.sha256(key.encode()).hexdigest()[:24]
        full = [item for item in self._items if not self._limiter.test(item, ident)]
        if not full:
            # test() and hit() run with no await between them: on the event loop nothing else counts in between.
            for item in self._items:
                self._limiter.hit(item, ident)
            return None
        reset = max(self._limiter.get_window_stats(item, ident).reset_time for item in full)
        return max(1, math.ceil(reset - time.time()))
