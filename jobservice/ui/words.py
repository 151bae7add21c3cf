"""Triggers said in words ("every day at 02:30 UTC", "every 10 s", "once at ..."), in the
dashboard's languages; what has no short form is shown as its cron fields."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
UNITS = (("weeks", 604800), ("days", 86400), ("hours", 3600), ("minutes", 60), ("seconds", 1))

Say = Callable[..., str]


def describe(trigger: BaseTrigger, say: Say, when: Callable[[datetime], str]) -> str:
    """The trigger in words; `say(key, **values)` translates, `when` shows a date."""
    if isinstance(trigger, IntervalTrigger):
        return say("trigger.every", what=interval(trigger.interval.total_seconds(), say))
    if isinstance(trigger, DateTrigger):
        return say("trigger.once", when=when(trigger.run_date))
    if isinstance(trigger, CronTrigger):
        return _cron(trigger, say)
    return str(trigger)


def interval(total_s: float, say: Say) -> str:
    """10 s, 5 min, 1 d 2 h: the largest units, whole."""
    if total_s < 1:
        return say("interval.seconds", n=f"{total_s:g}")
    parts = []
    rest = int(total_s)
    for unit, size in UNITS:
        count, rest = divmod(rest, size)
        if count:
            parts.append(say(f"interval.{unit}", n=count))
    return " ".join(parts)


def _cron(trigger: CronTrigger, say: Say) -> str:
    fields = {field.name: str(field) for field in trigger.fields}
    tz = str(trigger.timezone)
    plain = all(fields[name] == "*" for name in ("year", "month", "week"))
    second, minute, hour = fields["second"], fields["minute"], fields["hour"]
    day, day_of_week = fields["day"], fields["day_of_week"]
    if plain and second == "0" and minute.isdigit():
        if hour == "*" and day == "*" and day_of_week == "*":
            return say("trigger.hourly", minute=f"{int(minute):02d}", tz=tz)
        if hour.isdigit():
            time = f"{int(hour):02d}:{int(minute):02d}"
            if day == "*" and day_of_week == "*":
                return say("trigger.daily", time=time, tz=tz)
            if day == "*" and all(part in DAYS for part in day_of_week.split(",")):
                days = say("day.list").join(say(f"day.{part}") for part in day_of_week.split(","))
                return say("trigger.weekly", days=days, time=time, tz=tz)
            if day.isdigit() and day_of_week == "*":
                return say("trigger.monthly", day=day, time=time, tz=tz)
    shown = " ".join(f"{name}={value}" for name, value in fields.items() if value != "*")
    return say("trigger.cron", fields=shown or "*", tz=tz)
