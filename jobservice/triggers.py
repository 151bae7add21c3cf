"""Trigger fields from JSON (or config.py) to APScheduler triggers, with errors naming the field.

APScheduler accepts some bad values silently (an interval of zero becomes one
second, `mon-sun-fri` becomes `mon-sun`, Feb 30 never fires); these checks refuse
them before a trigger is built, and refuse what could not be stored and read back:
dates outside MIN_DATE..MAX_DATE (the job table keeps float timestamps, and a date
near year 10000 rounds or shifts past what Python's datetime holds), intervals and
jitters that overflow, and triggers that would never fire.
"""

from __future__ import annotations

import math
import re
import zoneinfo
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger

from .errors import InvalidJob

INTERVAL_UNITS = ("weeks", "days", "hours", "minutes", "seconds")
CRON_FIELDS = ("year", "month", "day", "week", "day_of_week", "hour", "minute", "second")
TRIGGER_FIELDS: dict[str, tuple[str, ...]] = {
    "date": ("run_date", "timezone"),
    "interval": (*INTERVAL_UNITS, "start_date", "end_date", "timezone", "jitter"),
    "cron": (*CRON_FIELDS, "start_date", "end_date", "timezone", "jitter"),
}
ALL_TRIGGER_FIELDS = frozenset(f for fields in TRIGGER_FIELDS.values() for f in fields)
ISO_EXAMPLE = "2026-11-24T09:30:00+00:00"
#: The dates a job may name, in UTC: a day short of year 10000 leaves room for every offset.
MIN_DATE = datetime(1970, 1, 1, tzinfo=UTC)
MAX_DATE = datetime(9999, 12, 30, tzinfo=UTC)
DATE_RANGE = f"between {MIN_DATE:%Y-%m-%d} and {MAX_DATE:%Y-%m-%d} (UTC)"
MAX_INTERVAL = timedelta(days=36500)
MAX_JITTER_S = 7 * 86400
#: How APScheduler splits a cron field into expressions.
CRON_SEPARATOR = re.compile(r" *, *")


def build_trigger(name: object, fields: Mapping[str, Any], default_tz: tzinfo) -> BaseTrigger:
    """Build the named trigger from its fields; InvalidJob names the first bad one. Python
    callers (Flask-APScheduler code) may also give a trigger object itself."""
    if isinstance(name, (DateTrigger, IntervalTrigger, CronTrigger)):
        if fields:
            field = next(iter(fields))
            raise InvalidJob(field, f"{field} goes into the trigger object, not beside it")
        if not isinstance(name, DateTrigger):
            _check_fires(name, {"end_date": name.end_date} if name.end_date else {})
        return name
    if not isinstance(name, str) or name not in TRIGGER_FIELDS:
        raise InvalidJob("trigger", "trigger must be one of: cron, interval, date")
    for field in fields:
        if field not in TRIGGER_FIELDS[name]:
            raise InvalidJob(
                field,
                f"{field} is not a field of the {name} trigger; "
                f"its fields are: {', '.join(TRIGGER_FIELDS[name])}",
            )
    tz = _timezone(fields["timezone"]) if "timezone" in fields else default_tz
    dates = {
        f: parse_datetime(f, fields[f], tz) for f in ("run_date", "start_date", "end_date") if f in fields
    }
    if "start_date" in dates and "end_date" in dates and dates["end_date"] < dates["start_date"]:
        raise InvalidJob("end_date", "end_date must not be before start_date")
    if name == "date":
        return DateTrigger(run_date=dates.get("run_date"), timezone=tz)
    jitter = _jitter(fields.get("jitter"))
    trigger = _interval(fields, dates, tz, jitter) if name == "interval" else _cron(fields, dates, tz, jitter)
    _check_fires(trigger, dates)
    return trigger


def _check_fires(trigger: BaseTrigger, dates: Mapping[str, datetime]) -> None:
    """Refuse a recurring trigger with no fire time left (APScheduler would store it with
    next_run_time null, which looks paused, and never run it)."""
    now = datetime.now(UTC)
    try:
        first = trigger.get_next_fire_time(None, now)
    except (OverflowError, ValueError):
        first = MAX_DATE
    if first is None:
        end = dates.get("end_date")
        if end is not None and end <= now:
            raise InvalidJob("end_date", f"end_date {end.isoformat()} has passed: the trigger would not fire")
        raise InvalidJob(
            "trigger",
            "no date from now on matches these fields (such as month 2 with day 30, or a year "
            "that has passed): the trigger would never fire",
        )
    if first >= MAX_DATE:
        raise InvalidJob("trigger", f"the trigger's first fire time must be {DATE_RANGE}")


def parse_datetime(field: str, value: object, tz: tzinfo) -> datetime:
    """An ISO 8601 string (or a datetime from config.py); naive values are in `tz`."""
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.strip())
        except ValueError:
            raise InvalidJob(field, f"{field} must be an ISO 8601 date-time such as {ISO_EXAMPLE}") from None
    else:
        raise InvalidJob(field, f"{field} must be an ISO 8601 date-time string such as {ISO_EXAMPLE}")
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=tz)
    try:
        in_range = MIN_DATE <= parsed.astimezone(UTC) < MAX_DATE
    except (OverflowError, ValueError):
        in_range = False
    if not in_range:
        raise InvalidJob(field, f"{field} must be {DATE_RANGE}")
    return parsed


def _timezone(value: object) -> tzinfo:
    if isinstance(value, str):
        try:
            return zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            pass
    raise InvalidJob("timezone", "timezone must be an IANA time zone name such as UTC or Europe/Paris")


def _number(field: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidJob(field, f"{field} must be a number")
    if value < 0:
        raise InvalidJob(field, f"{field} must not be negative")
    return value


def _jitter(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_JITTER_S:
        raise InvalidJob("jitter", f"jitter must be a whole number of seconds from 0 to {MAX_JITTER_S}")
    return value


def _interval(
    fields: Mapping[str, Any], dates: dict[str, datetime], tz: tzinfo, jitter: int | None
) -> IntervalTrigger:
    amounts = {unit: _number(unit, fields[unit]) for unit in INTERVAL_UNITS if unit in fields}
    field = next(iter(amounts), "seconds")
    try:
        length = timedelta(**amounts)
    except OverflowError:
        raise InvalidJob(field, "the interval is too long") from None
    if length <= timedelta(0):
        # APScheduler would silently turn this into one second.
        raise InvalidJob(
            field, "the interval must be longer than zero: give weeks, days, hours, minutes or seconds"
        )
    if length > MAX_INTERVAL:
        raise InvalidJob(field, f"the interval must be at most {MAX_INTERVAL.days} days")
    try:
        return IntervalTrigger(
            **amounts,
            start_date=dates.get("start_date"),
            end_date=dates.get("end_date"),
            timezone=tz,
            jitter=jitter,
        )
    except OverflowError:  # the first fire time (start + interval) is beyond what a date holds
        raise InvalidJob(field, f"the first fire time must be {DATE_RANGE}") from None


def _cron(
    fields: Mapping[str, Any], dates: dict[str, datetime], tz: tzinfo, jitter: int | None
) -> CronTrigger:
    values: dict[str, int | str] = {}
    for field in CRON_FIELDS:
        if field not in fields:
            continue
        value = fields[field]
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise InvalidJob(field, f"{field} must be a cron expression (a string) or a whole number")
        try:  # one field at a time, so the error can name it
            CronTrigger(**{field: value}, timezone=tz)
        except ValueError as exc:
            raise InvalidJob(field, f"{field}: {exc}") from None
        _whole_expressions(field, value)
        values[field] = value
    try:
        return CronTrigger(
            **values,
            start_date=dates.get("start_date"),
            end_date=dates.get("end_date"),
            timezone=tz,
            jitter=jitter,
        )
    except ValueError as exc:
        raise InvalidJob("trigger", f"cron trigger: {exc}") from None


def _whole_expressions(field: str, value: int | str) -> None:
    """APScheduler reads a cron expression by its start and ignores the rest ("mon-sun-fri"
    is stored as "mon-sun"); refuse any expression it would not read whole."""
    compilers = CronTrigger.FIELDS_MAP[field].COMPILERS
    for part in CRON_SEPARATOR.split(str(value).strip()):
        if not any(compiler.value_re.fullmatch(part) for compiler in compilers):
            raise InvalidJob(field, f"{field}: {part!r} is not a whole cron expression")
