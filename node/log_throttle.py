"""A log line that a client can make the node repeat — a refused connection, a malformed request, a
listener out of descriptors — is written at most once per interval, with how often it happened since.

Without it, whoever can open connections decides how fast the node's log grows: a flood of half-sent
requests once wrote 146,000 lines (65 MB) in a minute and a half.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

DEFAULT_INTERVAL_S = 10.0


class LogThrottle:
    """``log(...)`` writes its line when ``interval_s`` has passed since the last one it wrote, adding
    ``(N more since)`` for the calls it dropped meanwhile; otherwise it only counts. One throttle per kind
    of event (the text may vary between calls; the first line of an interval is the one written)."""

    def __init__(self, logger: logging.Logger, level: int = logging.WARNING, *,
                 interval_s: float = DEFAULT_INTERVAL_S, clock: Callable[[], float] = time.monotonic) -> None:
        self._logger = logger
        self._level = level
        self.interval_s = interval_s
        self._clock = clock
        self._last = -float("inf")
        self.dropped = 0
        """Calls not written since the last line written."""
        self.written = 0

    def log(self, message: str, *args: object) -> bool:
        """Log ``message % args`` unless one was written less than ``interval_s`` ago; whether it was."""
        now = self._clock()
        if now - self._last < self.interval_s:
            self.dropped += 1
            return False
        if self.dropped:
            message += " (%d more since the last report; reported at most every %g s)"
            args = (*args, self.dropped, self.interval_s)
        self._logger.log(self._level, message, *args)
        self._last = now
        self.dropped = 0
        self.written += 1
        return True
