"""A job's run options beyond APScheduler's: `timeout_s`, `retries`, `retry_delay_s`, `queue`.

They live on the job itself (`ServiceJob`), pickled with the rest of its state under a key
of their own, so APScheduler and Flask-APScheduler still read the row (they ignore the key),
and a row written before these options existed reads back with the built-in defaults.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from apscheduler.job import Job

from .errors import InvalidJob

OPTION_FIELDS = ("timeout_s", "retries", "retry_delay_s", "queue")
#: What a job gets when neither it nor SCHEDULER_JOB_DEFAULTS says otherwise.
BUILTIN: dict[str, Any] = {"timeout_s": None, "retries": 0, "retry_delay_s": 10, "queue": "default"}
STATE_KEY = "jobservice_options"
MAX_TIMEOUT_S = 366 * 86400
MAX_RETRIES = 100
MAX_RETRY_DELAY_S = 86400
QUEUE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def check(field: str, value: object) -> Any:
    """The option's value if it is valid; InvalidJob naming the field if not."""
    if field == "timeout_s":
        if value is None or (_number(value) and 0 < value <= MAX_TIMEOUT_S):  # type: ignore[operator]
            return value
        raise InvalidJob(
            field, f"timeout_s must be a number of seconds above 0 and up to {MAX_TIMEOUT_S}, or null"
        )
    if field == "retries":
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_RETRIES:
            return value
        raise InvalidJob(field, f"retries must be a whole number from 0 to {MAX_RETRIES}")
    if field == "retry_delay_s":
        if _number(value) and 0 <= value <= MAX_RETRY_DELAY_S:  # type: ignore[operator]
            return value
        raise InvalidJob(field, f"retry_delay_s must be a number of seconds from 0 to {MAX_RETRY_DELAY_S}")
    if field == "queue":
        if isinstance(value, str) and QUEUE_NAME.fullmatch(value):
            return value
        raise InvalidJob(field, "queue must be 1 to 64 letters, digits, '_', '-' or '.'")
    raise KeyError(field)


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value


class ServiceJob(Job):
    """An APScheduler job that also carries the run options."""

    __slots__ = OPTION_FIELDS

    def _modify(self, **changes: Any) -> None:
        for field in OPTION_FIELDS:
            if field in changes:
                setattr(self, field, check(field, changes.pop(field)))
        super()._modify(**changes)

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state[STATE_KEY] = options_of(self)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        restore(self, state)


def options_of(job: Job) -> dict[str, Any]:
    """The job's options; the built-in defaults for a job that has none (a plain Job)."""
    return {field: getattr(job, field, BUILTIN[field]) for field in OPTION_FIELDS}


def restore(job: ServiceJob, state: Mapping[str, Any]) -> None:
    """Set the options from a pickled state (the built-in defaults where it has none)."""
    saved = state.get(STATE_KEY) or {}
    for field in OPTION_FIELDS:
        setattr(job, field, saved.get(field, BUILTIN[field]))


@dataclass(frozen=True)
class RetryPolicy:
    """When a failed attempt is tried again: `retries` more times, the delay doubling from
    `delay_s` after each failure, never more than `cap_s`."""

    retries: int
    delay_s: float
    cap_s: float

    @classmethod
    def of(cls, job: Job, cap_s: float) -> RetryPolicy:
        options = options_of(job)
        return cls(options["retries"], options["retry_delay_s"], cap_s)

    def delay(self, attempt: int) -> float | None:
        """Seconds from the failure of `attempt` to the next one; None when it was the last."""
        if attempt > self.retries:
            return None
        return min(self.delay_s * 2 ** (attempt - 1), self.cap_s)

    def next_at(self, attempt: int, failed_at: datetime) -> datetime | None:
        delay = self.delay(attempt)
        return None if delay is None else failed_at + timedelta(seconds=delay)
