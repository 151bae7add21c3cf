"""The add and edit forms, turned into the JSON the API takes (and back), so a job made
in the dashboard passes exactly the rules of `POST /scheduler/jobs` and `PATCH`."""

from __future__ import annotations

import json
from typing import Any

from werkzeug.datastructures import MultiDict

from ..errors import InvalidJob
from ..triggers import INTERVAL_UNITS

TRIGGERS = ("cron", "interval", "date")
#: The cron fields the form shows, in crontab's order (then seconds).
FORM_CRON = ("minute", "hour", "day", "month", "day_of_week", "second", "year", "week")
OPTIONS = ("misfire_grace_time", "max_instances", "timeout_s", "retries", "retry_delay_s", "queue")
NUMERIC = ("misfire_grace_time", "max_instances", "timeout_s", "retries", "retry_delay_s", *INTERVAL_UNITS)


def definition(form: MultiDict[str, str], new: bool) -> dict[str, Any]:
    """The job JSON this form says; InvalidJob names the field that is not JSON or a number."""
    trigger = form.get("trigger", "")
    data: dict[str, Any] = {"trigger": trigger}
    names = ("id", "func") if new else ()
    for name in (*names, "name"):
        if form.get(name, "").strip():
            data[name] = form[name].strip()
    fields = {"cron": FORM_CRON, "interval": INTERVAL_UNITS, "date": ("run_date",)}.get(trigger, ())
    for name in (*fields, "timezone", *OPTIONS):
        raw = form.get(name, "").strip()
        if raw:
            data[name] = _number(name, raw) if name in NUMERIC else raw
    for name, empty in (("args", "[]"), ("kwargs", "{}")):
        raw = form.get(name, "").strip() or empty
        try:
            data[name] = json.loads(raw)
        except ValueError as exc:
            raise InvalidJob(name, f"{name} must be JSON: {exc}") from None
    return data


def _number(name: str, raw: str) -> int | float | str:
    try:
        number = float(raw)
    except ValueError:
        return raw  # the rules say what the field must be, as they do for the API
    return int(number) if number.is_integer() else number


def values_of(job: dict[str, Any]) -> dict[str, str]:
    """A stored job's JSON as the form's fields, to edit it."""
    values = {"trigger": job.get("trigger", "")}
    for name, value in job.items():
        if name in ("args", "kwargs"):
            values[name] = json.dumps(value, ensure_ascii=False)
        elif value is not None and not isinstance(value, (dict, list)):
            values[name] = str(value)
    return values
