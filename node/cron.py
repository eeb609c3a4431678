"""Cron schedules as domain values: validation, and when their slots fall (pure; callers pass the time).

The coordinator stores and fires them (``taskward.coordinator.cron``); the surfaces show them.

A slot is a point in time (Unix seconds) at which a schedule is due. Expressions are the five Unix cron
fields, read by croniter, or one of croniter's aliases (``ALIASES``); times are wall-clock times in the
schedule's IANA time zone (zoneinfo). Across daylight-saving changes:

- spring forward: a time that does not exist that day fires once, at the first minute after the gap
  (croniter's rule: ``30 2 * * *`` fires at 03:00);
- fall back: a schedule with fixed hours fires once, at the first of the two occurrences of its
  time; a schedule whose hour field is ``*`` or ``*/N`` keeps its interval through the repeated hour
  (Vixie cron's rule).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from croniter.croniter import CroniterBadDateError

from taskward import limits
from taskward.errors import InvalidArgument

ALIASES = {"@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *", "@weekly": "0 0 * * 0",
           "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *"}
SCHEDULE_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
MAX_SCHEDULES = 10_000
MAX_ARGS_BYTES = 64 * 1024
HISTORY = 20
DEFAULT_GRACE_S = 60.0
MAX_GRACE_S = 86400.0 * 7
LOOKAHEAD = timedelta(days=366 * 5)  # an expression with no slot within five years never fires


class Concurrency(StrEnum):
    FORBID = "forbid"
    ALLOW = "allow"
    REPLACE = "replace"


class Outcome(StrEnum):
    FIRED = "fired"
    SKIPPED = "skipped"
    MISSED = "missed"
    FAILED = "failed"


@dataclass(frozen=True, slots=True, kw_only=True)
class CronSchedule:
    """A validated schedule. ``module`` is resolved, ``args_json`` canonical, ``since`` the time (Unix
    seconds) at or before which no slot fires: when it was created, enabled or re-timed."""

    id: str
    module: str
    task_type: str
    schedule: str
    args_json: str = "{}"
    enabled: bool = True
    timezone: str = "UTC"
    cluster: bool = False
    concurrency: Concurrency = Concurrency.FORBID
    misfire_grace_s: float = DEFAULT_GRACE_S
    since: float = 0.0

    @property
    def timing(self) -> tuple[str, str]:
        return self.schedule, self.timezone

    def next_slot(self, after: float) -> float | None:
        """The first slot strictly after ``after`` (and after ``since``); None when it never fires."""
        return _next_slot(self.schedule, self.timezone, max(after, self.since))  # the expression is checked


@dataclass(frozen=True, slots=True, kw_only=True)
class HistoryEntry:
    slot: int
    outcome: Outcome
    reason: str = ""
    task_id: str = ""
    node: str = ""
    at: float = 0.0
    count: int = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class CronState:
    """What the leader has done for a schedule (``cron/state/<id>``). ``last_slot`` is the newest slot
    decided (fired, skipped or missed): a slot at or before it is never decided again."""

    last_slot: int = 0
    last_task_id: str = ""
    last_node: str = ""
    last_cluster: bool = False
    start_pending: bool = False
    pending_args_json: str = ""
    history: tuple[HistoryEntry, ...] = ()

    def with_entry(self, entry: HistoryEntry) -> tuple[HistoryEntry, ...]:
        """History with ``entry`` in front, at most ``HISTORY`` long (newest first)."""
        return (entry, *self.history)[:HISTORY]


# ---------------------------------------------------------------------- expressions and zones


def check_expression(expr: str) -> str:
    """The expression in five fields (aliases expanded); ``InvalidArgument`` saying why it is refused."""
    text = " ".join(expr.split())
    if not text:
        raise InvalidArgument("empty schedule: expected five cron fields (minute hour day month weekday)")
    if text.startswith("@"):
        if text.lower() not in ALIASES:
            raise InvalidArgument(f"unknown schedule alias {text!r}: expected one of {', '.join(sorted(ALIASES))}")
        return ALIASES[text.lower()]
    fields = text.split(" ")
    if len(fields) != 5:
        raise InvalidArgument(f"schedule {text!r} has {len(fields)} fields: expected five "
                              "(minute hour day-of-month month day-of-week)")
    if any(f.upper().startswith("H") for f in fields):
        raise InvalidArgument(f"schedule {text!r}: hashed fields (H) are not supported")
    if not croniter.is_valid(text):
        raise InvalidArgument(f"schedule {text!r} is not a valid cron expression")
    return text


@lru_cache(maxsize=1024)
def zone(name: str) -> ZoneInfo:
    try:
        if not name or name.startswith(("/", ".")) or ".." in name:
            raise ValueError(name)
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: "Europe" is a directory, a long name too long
        raise InvalidArgument(f"unknown time zone {name!r}: expected an IANA name such as Europe/Berlin") from None


def _fixed_hours(expr: str) -> bool:
    return not expr.split(" ")[1].startswith("*")


def _second_occurrence(local: datetime, tz: ZoneInfo) -> bool:
    """``local`` is the later of two occurrences of its wall-clock time (the day clocks fall back)."""
    naive = local.replace(tzinfo=None)
    first, second = naive.replace(tzinfo=tz, fold=0), naive.replace(tzinfo=tz, fold=1)
    return first.utcoffset() != second.utcoffset() and local.utcoffset() == second.utcoffset()


def next_slot(expr: str, timezone: str, after: float) -> float | None:
    """The first slot of ``expr`` in ``timezone`` strictly after ``after`` (Unix seconds), DST rules as in
    the module docstring; None when there is none within five years."""
    return _next_slot(check_expression(expr), timezone, after)


@lru_cache(maxsize=16384)
def _iterator(expr: str, timezone: str) -> croniter:
    """One parsed expression per (expression, zone), moved to each start: parsing costs far more than
    stepping, and a node may hold thousands of schedules. Used on the event loop only."""
    return croniter(expr, datetime.fromtimestamp(0, zone(timezone)))


@lru_cache(maxsize=65536)
def _next_slot(expr: str, timezone: str, after: float) -> float | None:
    tz = zone(timezone)
    it = _iterator(expr, timezone)
    fixed = _fixed_hours(expr)
    try:
        start = datetime.fromtimestamp(after, tz)
        horizon = start + LOOKAHEAD
        it.set_current(start, force=True)
        while True:
            candidate: datetime = it.get_next(datetime)
            if candidate > horizon:
                return None
            if fixed and _second_occurrence(candidate, tz):
                continue
            ts = candidate.timestamp()
            if ts > after:
                return ts
    except (CroniterBadDateError, OverflowError):  # OverflowError: past year 9999, where no date (or slot) is
        return None


def slots_between(schedule: CronSchedule, after: float, until: float, limit: int) -> list[float]:
    """The slots in ``(after, until]`` (and after ``since``), oldest first, at most ``limit``."""
    out: list[float] = []
    t = after
    while len(out) < limit and (nxt := schedule.next_slot(t)) is not None and nxt <= until:
        out.append(nxt)
        t = nxt
    return out


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# ---------------------------------------------------------------------- a document as a user writes it


@dataclass(frozen=True, slots=True, kw_only=True)
class ScheduleView:
    """A schedule as the surfaces show it: with its state, next fire time (None while disabled or when
    it never fires again) and its last task's state (``unknown`` when its node cannot say)."""

    schedule: CronSchedule
    state: CronState
    next_fire_time: float | None
    last_task_state: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class ScheduleInput:
    """One schedule as a user sent it, before validation (``None``: not given)."""

    id: str
    module: str = ""
    task_type: str = ""
    schedule: str = ""
    args_json: str = ""
    enabled: bool | None = None
    timezone: str = ""
    cluster: bool = False
    concurrency: str = ""
    misfire_grace_s: float | None = None


def entry_error(index: int, sid: str, message: str) -> InvalidArgument:
    name = f"schedule {sid!r}" if sid else f"schedule #{index + 1}"
    return InvalidArgument(f"{name}: {message}")


def check_fields(s: ScheduleInput) -> tuple[str, str, Concurrency, float, str]:
    """The parts of one entry that need no task registry: (expression, zone, concurrency, grace, args
    json). Raises ``InvalidArgument`` saying what is wrong (the caller names the entry)."""
    if not SCHEDULE_ID_RE.fullmatch(s.id):
        raise InvalidArgument(f"invalid id {s.id!r}: expected [A-Za-z0-9][A-Za-z0-9._:-]{{0,127}}")
    if not s.task_type:
        raise InvalidArgument("task_type is required")
    expr = check_expression(s.schedule)
    timezone = s.timezone or "UTC"
    zone(timezone)
    try:
        concurrency = Concurrency(s.concurrency or Concurrency.FORBID)
    except ValueError:
        raise InvalidArgument(f"concurrency {s.concurrency!r}: expected forbid, allow or replace") from None
    grace = DEFAULT_GRACE_S if s.misfire_grace_s is None else s.misfire_grace_s
    if not 0 <= grace <= MAX_GRACE_S:
        raise InvalidArgument(f"misfire_grace_s {grace:g}: expected 0 to 604800 seconds")
    raw = s.args_json or "{}"
    if len(raw.encode()) > MAX_ARGS_BYTES:
        raise InvalidArgument(f"args too large: {len(raw.encode())} bytes > {MAX_ARGS_BYTES}")
    args = limits.loads(raw, "args")
    if not isinstance(args, dict):
        raise InvalidArgument("args must be a JSON object")
    if _next_slot(expr, timezone, datetime.now(UTC).timestamp()) is None:
        raise InvalidArgument(f"schedule {s.schedule!r} never fires")
    return expr, timezone, concurrency, grace, raw
