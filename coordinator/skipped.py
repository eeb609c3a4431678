"""The keys a node's replica does not use because their records are bad, and the log that says so.

A bad record is skipped, not fatal (``record_checks``). While any is skipped the replica may be
missing something a reader expects, so readers are told the view is stale; the log names each key and
why, once, and again at most every ``REPEAT_S`` while it stays bad, with at most ``BURST`` lines a
minute in all: a prefix full of junk must not flood the log.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from types import MappingProxyType

logger = logging.getLogger(__name__)

REPEAT_S = 600.0
BURST = 20


class SkippedRecords:
    def __init__(self) -> None:
        self._why: dict[str, str] = {}
        self._logged: dict[str, tuple[str, float]] = {}  # key -> (reason, when) of its last log line
        self._window_start = -REPEAT_S
        self._window_lines = 0
        self._suppressed = 0

    @property
    def keys(self) -> Mapping[str, str]:
        """Skipped key -> why (a copy)."""
        return MappingProxyType(dict(self._why))

    def __bool__(self) -> bool:
        return bool(self._why)

    def skip(self, key: str, reason: str) -> None:
        """``key`` holds a record that is not used, for ``reason``; logged (rate limited) with the key."""
        self._why[key] = reason
        now = time.monotonic()
        last = self._logged.get(key)
        if last is not None and last[0] == reason and now - last[1] < REPEAT_S:
            return
        if now - self._window_start >= 60.0:
            self._window_start, self._window_lines = now, 0
        if self._window_lines >= BURST:
            self._suppressed += 1
            return
        self._window_lines += 1
        self._logged[key] = (reason, now)
        more = f" ({self._suppressed} more bad record(s) not logged)" if self._suppressed else ""
        self._suppressed = 0
        # ascii(): a key that was not UTF-8 holds lone surrogates, which a UTF-8 log cannot write
        logger.error("skipping bad cluster record %s: %s; this node's replica reads as stale until the key is "
                     "fixed or deleted%s", ascii(key), reason, more)

    def clear(self, key: str) -> None:
        """``key`` was deleted or now holds a good record."""
        self._logged.pop(key, None)
        if self._why.pop(key, None) is not None:
            logger.info("cluster record %s is no longer skipped", ascii(key))

    def relisting(self) -> None:
        """A full listing follows: what is still bad is found again (and not logged again before ``REPEAT_S``)."""
        self._why.clear()

    def relisted(self) -> None:
        """The full listing is applied: forget the log times of keys that are gone."""
        for key in [k for k in self._logged if k not in self._why]:
            del self._logged[key]
