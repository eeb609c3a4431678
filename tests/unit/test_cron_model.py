"""Cron expressions, zones and slots (pure functions; the time is passed in)."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from taskward.cron import (
    ALIASES,
    CronSchedule,
    ScheduleInput,
    check_expression,
    check_fields,
    next_slot,
    slots_between,
)
from taskward.errors import InvalidArgument

BERLIN = ZoneInfo("Europe/Berlin")


def ts(*args: int, tz: ZoneInfo | None = None) -> float:
    return datetime(*args, tzinfo=tz or UTC).timestamp()  # type: ignore[misc]  # datetime(*ints) is fine


def local(t: float, tz: ZoneInfo = BERLIN) -> str:
    return datetime.fromtimestamp(t, tz).strftime("%Y-%m-%d %H:%M %Z")


@pytest.mark.parametrize(("expr", "message"), [
    ("61 * * * *", "schedule '61 * * * *' is not a valid cron expression"),
    ("* * * * * *", "schedule '* * * * * *' has 6 fields: expected five (minute hour day-of-month month day-of-week)"),
    ("* * * *", "schedule '* * * *' has 4 fields: expected five (minute hour day-of-month month day-of-week)"),
    ("", "empty schedule: expected five cron fields (minute hour day month weekday)"),
    ("   ", "empty schedule: expected five cron fields (minute hour day month weekday)"),
    ("@reboot", "unknown schedule alias '@reboot': expected one of @annually, @daily, @hourly, @midnight, "
                "@monthly, @weekly, @yearly"),
    ("H * * * *", "schedule 'H * * * *': hashed fields (H) are not supported"),
    ("0 24 * * *", "schedule '0 24 * * *' is not a valid cron expression"),
])
def test_bad_expressions_say_why(expr: str, message: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        check_expression(expr)
    assert err.value.message == message


def test_aliases_and_spacing() -> None:
    assert check_expression("@Hourly") == "0 * * * *"
    assert set(ALIASES) == {"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"}
    assert check_expression("  */15   *  * * 1-5 ") == "*/15 * * * 1-5"


def test_next_slot_in_utc_and_in_a_zone() -> None:
    assert next_slot("0 3 * * *", "UTC", ts(2026, 6, 1, 12, 0)) == ts(2026, 6, 2, 3, 0)
    assert next_slot("0 3 * * *", "UTC", ts(2026, 6, 2, 3, 0)) == ts(2026, 6, 3, 3, 0)  # strictly after
    assert local(next_slot("0 3 * * *", "Europe/Berlin", ts(2026, 6, 1, 12, 0)) or 0) == "2026-06-02 03:00 CEST"


def daily_slots(expr: str, day_start: float, day_end: float) -> list[str]:
    s = CronSchedule(id="x", module="m", task_type="t", schedule=expr, timezone="Europe/Berlin")
    return [local(t) for t in slots_between(s, day_start, day_end, 100)]


def test_spring_forward_fires_once_after_the_gap() -> None:
    # 2026-03-29: clocks jump from 02:00 to 03:00 in Berlin; 02:30 does not exist that day.
    got = daily_slots("30 2 * * *", ts(2026, 3, 28, 12, tz=BERLIN), ts(2026, 3, 30, 12, tz=BERLIN))
    assert got == ["2026-03-29 03:00 CEST", "2026-03-30 02:30 CEST"]


def test_fall_back_fires_a_fixed_time_once() -> None:
    # 2026-10-25: clocks go back from 03:00 CEST to 02:00 CET; 02:30 happens twice.
    got = daily_slots("30 2 * * *", ts(2026, 10, 24, 12, tz=BERLIN), ts(2026, 10, 26, 12, tz=BERLIN))
    assert got == ["2026-10-25 02:30 CEST", "2026-10-26 02:30 CET"]


def test_fall_back_keeps_an_interval_through_the_repeated_hour() -> None:
    start, end = ts(2026, 10, 25, 0, 59, tz=BERLIN), ts(2026, 10, 25, 4, 1, tz=BERLIN)
    got = daily_slots("0 * * * *", start, end)
    assert got == ["2026-10-25 01:00 CEST", "2026-10-25 02:00 CEST", "2026-10-25 02:00 CET",
                   "2026-10-25 03:00 CET", "2026-10-25 04:00 CET"]  # every real hour, the repeated one too


def test_since_and_limits() -> None:
    s = CronSchedule(id="x", module="m", task_type="t", schedule="* * * * *", since=ts(2026, 1, 1, 0, 10))
    assert slots_between(s, ts(2026, 1, 1, 0, 0), ts(2026, 1, 1, 0, 13), 100) == [
        ts(2026, 1, 1, 0, 11), ts(2026, 1, 1, 0, 12), ts(2026, 1, 1, 0, 13)]
    assert len(slots_between(s, 0, ts(2026, 1, 2), 5)) == 5


@pytest.mark.parametrize(("entry", "message"), [
    (ScheduleInput(id="bad id!", task_type="t", schedule="* * * * *"),
     "invalid id 'bad id!': expected [A-Za-z0-9][A-Za-z0-9._:-]{0,127}"),
    (ScheduleInput(id="a", schedule="* * * * *"), "task_type is required"),
    (ScheduleInput(id="a", task_type="t", schedule="* * * * *", timezone="Mars/Olympus"),
     "unknown time zone 'Mars/Olympus': expected an IANA name such as Europe/Berlin"),
    (ScheduleInput(id="a", task_type="t", schedule="* * * * *", timezone="../../etc/passwd"),
     "unknown time zone '../../etc/passwd': expected an IANA name such as Europe/Berlin"),
    (ScheduleInput(id="a", task_type="t", schedule="* * * * *", concurrency="sometimes"),
     "concurrency 'sometimes': expected forbid, allow or replace"),
    (ScheduleInput(id="a", task_type="t", schedule="* * * * *", misfire_grace_s=-1),
     "misfire_grace_s -1: expected 0 to 604800 seconds"),
    (ScheduleInput(id="a", task_type="t", schedule="* * * * *", args_json="[1]"), "args must be a JSON object"),
    (ScheduleInput(id="a", task_type="t", schedule="* * * * *", args_json="{"),
     "args are not valid JSON: Expecting property name enclosed in double quotes: line 1 column 2 (char 1)"),
    (ScheduleInput(id="a", task_type="t", schedule="* * * * *", args_json='{"x": NaN}'),
     "args are not valid JSON: NaN is not a JSON number (only finite numbers are accepted)"),
    (ScheduleInput(id="a", task_type="t", schedule="* * * * *", args_json='{"x": ' + "[" * 65 + "]" * 65 + "}"),
     "args nested 66 levels deep: the limit is 64 levels of arrays and objects"),
    (ScheduleInput(id="a", task_type="t", schedule="* * * * *", args_json='{"x": "' + "y" * 70_000 + '"}'),
     "args too large: 70009 bytes > 65536"),
    (ScheduleInput(id="a", task_type="t", schedule="0 0 30 2 *"), "schedule '0 0 30 2 *' never fires"),
])
def test_entries_are_checked_field_by_field(entry: ScheduleInput, message: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        check_fields(entry)
    assert err.value.message == message
