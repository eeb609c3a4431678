"""The scheduler's clock: the system's, or, for tests, an accelerated one that every node agrees on.

An accelerated clock runs ``speed`` times faster than the wall clock from a shared ``epoch``, so nodes
started at different moments still read the same time (``epoch + (wall - epoch) * speed``), and a
``* * * * *`` schedule fires every ``60 / speed`` real seconds. It is a test-only setting
(``--cron-test-clock EPOCH:SPEED``); expressions stay five-field cron either way.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol

from taskward.errors import ConfigError


class Clock(Protocol):
    def now(self) -> float:
        """The scheduler's time, Unix seconds."""
        ...

    def real_seconds(self, span: float) -> float:
        """How many real seconds pass while this clock advances ``span`` seconds."""
        ...


class SystemClock:
    def now(self) -> float:
        return time.time()

    def real_seconds(self, span: float) -> float:
        return span


@dataclass(frozen=True, slots=True)
class AcceleratedClock:
    epoch: float
    speed: float

    def now(self) -> float:
        return self.epoch + (time.time() - self.epoch) * self.speed

    def real_seconds(self, span: float) -> float:
        return span / self.speed


def clock_from(setting: str) -> Clock:
    """``""``: the system clock; ``EPOCH:SPEED``: an accelerated one (tests)."""
    if not setting:
        return SystemClock()
    try:
        epoch, speed = (float(part) for part in setting.split(":"))
    except ValueError:
        raise ConfigError(f"invalid cron test clock {setting!r}: expected EPOCH:SPEED") from None
    if not (epoch > 0 and 0 < speed <= 3600):
        raise ConfigError(f"invalid cron test clock {setting!r}: EPOCH > 0 and 0 < SPEED <= 3600")
    return AcceleratedClock(epoch, speed)
