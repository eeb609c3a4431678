"""Per-address limit on failed authentications, shared by every surface of a process.

Without it a client could try tokens as fast as the network carries them (RESP even let one connection
pipeline thousands of ``AUTH`` guesses in one write). After ``limit`` failures from one address within
``window_s`` seconds, every further attempt from that address is refused *without checking the token*
until the window ends: a guess made while blocked tells the guesser nothing, right or wrong. Other
addresses are not affected.

The unit is the IP address, not the connection (a new connection per guess must not reset the count),
so callers sharing an address share its budget; the README says so. A fixed window per address, kept
only for addresses that failed, bounded in number: the bookkeeping is a dict lookup per attempt.

A call that presents no token at all is not a guess (a probe, a client not configured yet) and does not
count: blocking it would protect nothing and would block a whole host's callers for one misconfigured
client. It is still refused, and audited at most ``limit`` times per window per address (``missing``), so
a flood of such calls cannot flood the audit log either.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

DEFAULT_LIMIT = 10
DEFAULT_WINDOW_S = 60.0
MAX_TRACKED = 65_536
"""Addresses remembered at once; past it, expired windows are dropped first, then the oldest."""


@dataclass(slots=True)
class _Window:
    start: float
    failures: int
    missing: int = 0


class FailedAuthLimiter:
    """``blocked(peer)`` before checking a token, ``failed(peer)`` after a failure. ``limit`` 0 disables."""

    def __init__(self, limit: int = DEFAULT_LIMIT, window_s: float = DEFAULT_WINDOW_S, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.window_s = window_s
        self._clock = clock
        self._windows: dict[str, _Window] = {}

    def blocked(self, peer: str) -> int:
        """Whole seconds until ``peer`` may try again (at least 1), or 0 when it may try now."""
        w = self._windows.get(peer)
        if w is None or w.failures < self.limit or self.limit <= 0:
            return 0
        left = w.start + self.window_s - self._clock()
        if left <= 0:
            del self._windows[peer]
            return 0
        return max(1, math.ceil(left))

    def failed(self, peer: str) -> bool:
        """Count a wrong token; True when this one reaches the limit (the address is blocked from now on)."""
        if self.limit <= 0:
            return False
        w = self._window(peer)
        w.failures += 1
        return w.failures == self.limit

    def missing(self, peer: str) -> bool:
        """Note a call without a token (not counted against the limit); True while it should be audited."""
        if self.limit <= 0:
            return True
        w = self._window(peer)
        w.missing += 1
        return w.missing <= self.limit

    def _window(self, peer: str) -> _Window:
        now = self._clock()
        w = self._windows.get(peer)
        if w is None or now - w.start >= self.window_s:
            if w is None and len(self._windows) >= MAX_TRACKED:
                self._forget(now)
            w = self._windows[peer] = _Window(now, 0)
        return w

    def _forget(self, now: float) -> None:
        expired = [p for p, w in self._windows.items() if now - w.start >= self.window_s]
        for p in expired:
            del self._windows[p]
        if len(self._windows) >= MAX_TRACKED:  # all live: drop the oldest windows (dicts keep insertion order)
            for p in list(self._windows)[: len(self._windows) // 8]:
                del self._windows[p]
