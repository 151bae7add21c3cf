"""Running one claimed run, wherever it runs: a thread of the leader, or an RQ work-horse.

One place for what every run goes through, whichever executor hands it out:

1. it may start only through the start compare-and-set (`start`), within its job's
   `max_instances` across the cluster, and a scheduled first attempt only within its
   misfire grace time;
2. it runs inside the app's context, with `g.jobservice_run`, and its function is checked
   against the job packages again at that moment;
3. from its start to its outcome the heartbeat keeps it visibly alive; a failure with
   retries left gets its next attempt; a hard timeout (RQ) is recorded as such.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import sys
import traceback
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from apscheduler.events import (
    EVENT_JOB_ERROR,
    EVENT_JOB_EXECUTED,
    EVENT_JOB_MISSED,
    JobEvent,
    JobExecutionEvent,
)
from apscheduler.job import Job
from flask import Flask, g

from .ledger import BUSY, UNSURE, Claim, RunLedger
from .liveness import Heartbeat, overrun_limit
from .models import FAILED, MISSED, SCHEDULED, SKIPPED, SUCCEEDED, utcnow
from .options import RetryPolicy, options_of
from .recorder import Recorder

logger = logging.getLogger(__name__)


class JobRefused(Exception):
    """A stored job's function is outside the job packages: it is never called."""


class TimedOut(Exception):
    """A run went past its job's timeout_s and was stopped."""


@dataclass(frozen=True)
class RunInfo:
    """What a job can know about the run it is part of (`flask.g.jobservice_run`)."""

    job_id: str
    scheduled_at: datetime
    trigger: str
    fence: int
    attempt: int = 1


class Tally(Protocol):
    """Where a process counts what its runs did (/metrics)."""

    def run_ended(
        self, job_id: str, status: str, trigger: str, lateness_s: float | None, duration_s: float | None
    ) -> None: ...

    def retry_scheduled(self, job_id: str) -> None: ...


#: Starts a claimed run: its start time, None (refused: taken over or paused), BUSY or UNSURE.
Start = Callable[[Claim, int], "datetime | str | None"]
#: Stops a call that runs past `timeout_s` by raising TimedOut inside it (RQ's death penalty).
Guard = Callable[[float], AbstractContextManager[Any]]


def resolve(func_ref: str) -> Callable[..., Any]:
    """The function a stored reference names ('module:name' or 'module:Class.attr'), as
    APScheduler's ref_to_obj finds it, without calling the import machinery for a module
    already imported (it is, after the first run: a few microseconds per run less)."""
    module_name, _, rest = func_ref.partition(":")
    obj: Any = sys.modules.get(module_name)
    try:
        if obj is None or getattr(getattr(obj, "__spec__", None), "_initializing", False):
            # Not imported yet, or being imported by another thread right now: importlib
            # waits for that import to finish (a half-run module lacks its functions).
            obj = importlib.import_module(module_name)
    except ImportError as exc:
        raise LookupError(f"Error resolving reference {func_ref}: could not import module") from exc
    try:
        for name in rest.split("."):
            obj = getattr(obj, name)
    except Exception as exc:
        raise LookupError(f"Error resolving reference {func_ref}: error looking up object") from exc
    return obj


class Runner:
    """Starts, calls and records claimed runs of one app."""

    def __init__(
        self,
        app: Flask,
        ledger: RunLedger,
        recorder: Recorder,
        heartbeat: Heartbeat,
        tally: Tally,
        refused: Callable[[str], str | None],
        overrun_s: float | None,
        retry_cap_s: float,
    ) -> None:
        self.app = app
        self.ledger = ledger
        self.recorder = recorder
        self.heartbeat = heartbeat
        self.tally = tally
        self._refused = refused
        self.overrun_s = overrun_s
        self.retry_cap_s = retry_cap_s

    def start(self, job: Job, claim: Claim, start: Start) -> datetime | list[JobEvent]:
        """Start the run (its start time) or close it, saying why not (the events to report)."""
        missed = self.missed(job, claim)
        if missed is not None:
            return missed
        return self.started(job, claim, start(claim, job.max_instances))

    def missed(self, job: Job, claim: Claim) -> list[JobEvent] | None:
        """Close the run as missed if it is past its misfire grace time (the events to report)."""
        key = claim.key
        late = utcnow() - key.scheduled_at
        grace = job.misfire_grace_time
        # A retry is late by design (its delay): only a first scheduled attempt can miss.
        if (
            key.trigger == SCHEDULED
            and key.attempt == 1
            and grace is not None
            and late > timedelta(seconds=grace)
        ):
            self.ledger.miss(claim, f"Run time was missed by {late}")
            logger.warning("Run of %s at %s missed by %s", key.job_id, key.scheduled_at, late)
            self.tally.run_ended(key.job_id, MISSED, key.trigger, None, None)
            return [JobExecutionEvent(EVENT_JOB_MISSED, job.id, "default", key.scheduled_at)]
        return None

    def started(self, job: Job, claim: Claim, started_at: datetime | str | None) -> datetime | list[JobEvent]:
        """What the start compare-and-set answered: the start time, or the run closed (BUSY:
        skipped for max_instances; None: taken over, or paused) or left to its claim
        (UNSURE: a start in doubt, found not started: the leader adopts it)."""
        key = claim.key
        if started_at == UNSURE:
            logger.warning(
                "Run of %s at %s not started (its start was in doubt); it will be adopted",
                key.job_id,
                key.scheduled_at,
            )
            return []
        if started_at == BUSY:
            message = f"Skipped: {job.max_instances} instance(s) of this job already running in the cluster"
            self.ledger.miss(claim, message, SKIPPED)
            logger.warning(
                "Run of %s at %s skipped: %d instance(s) already running in the cluster",
                key.job_id,
                key.scheduled_at,
                job.max_instances,
                extra={"job_id": key.job_id, "scheduled_at": key.scheduled_at, "status": SKIPPED},
            )
            self.tally.run_ended(key.job_id, SKIPPED, key.trigger, None, None)
            return []
        if not isinstance(started_at, datetime):
            # Taken over by another leader (then this changes nothing), or paused.
            self.ledger.miss(claim, "The job was paused before this run could start")
            logger.info("Run of %s at %s not started: paused or taken over", key.job_id, key.scheduled_at)
            return []
        return started_at

    def call(
        self, job: Job, claim: Claim, started_at: datetime, guard: Guard | None = None
    ) -> JobExecutionEvent:
        """Run the job's function in the app context and record the outcome."""
        key = claim.key
        timeout_s = options_of(job)["timeout_s"]
        error: BaseException | None = None
        formatted: str | None = None
        retval: Any = None
        # A run-now request has no fire time of its own to outlast: only the settings apply.
        trigger = job.trigger if key.trigger == SCHEDULED else None
        limit = overrun_limit(trigger, key.scheduled_at, self.overrun_s, timeout_s)
        self.heartbeat.started(claim, started_at, limit)
        try:
            with self.app.app_context():
                g.jobservice_run = RunInfo(
                    key.job_id, key.scheduled_at, key.trigger, claim.fence, key.attempt
                )
                try:
                    refused = self._refused(job.func_ref)
                    if refused is not None:  # a row the API would not have written
                        raise JobRefused(f"not run: {refused}")
                    func = resolve(job.func_ref)
                    stop = guard(timeout_s) if guard is not None and timeout_s else contextlib.nullcontext()
                    with stop:
                        retval = func(*job.args, **job.kwargs)
                except TimedOut:
                    error = TimedOut(f"timed out after {timeout_s:g} s")
                    formatted = (
                        f"TimedOut: timed out after {timeout_s:g} s (timeout_s)\n" + traceback.format_exc()
                    )
                except BaseException as exc:
                    error, formatted = exc, traceback.format_exc()
            finished_at = utcnow()
            status = SUCCEEDED if error is None else FAILED
            retry_at = None
            if error is not None:
                retry_at = RetryPolicy.of(job, self.retry_cap_s).next_at(key.attempt, finished_at)
            self.recorder.finished(claim, status, finished_at, formatted, retry_at)
        finally:
            self.heartbeat.ended(claim)
        self._log_run(claim, status, started_at, finished_at, formatted, retry_at)
        if error is not None:
            return JobExecutionEvent(
                EVENT_JOB_ERROR, job.id, "default", key.scheduled_at, exception=error, traceback=formatted
            )
        return JobExecutionEvent(EVENT_JOB_EXECUTED, job.id, "default", key.scheduled_at, retval=retval)

    def _log_run(
        self,
        claim: Claim,
        status: str,
        started_at: datetime,
        finished_at: datetime,
        formatted: str | None,
        retry_at: datetime | None,
    ) -> None:
        """One line per run: job, scheduled time, attempt, lateness, duration, status."""
        key = claim.key
        lateness_s = (started_at - key.scheduled_at).total_seconds()
        duration_s = (finished_at - started_at).total_seconds()
        self.tally.run_ended(
            key.job_id, status, key.trigger, lateness_s if key.attempt == 1 else None, duration_s
        )
        fields = {
            "job_id": key.job_id,
            "scheduled_at": key.scheduled_at,
            "trigger": key.trigger,
            "attempt": key.attempt,
            "lateness_s": round(lateness_s, 6),
            "duration_s": round(duration_s, 6),
            "status": status,
            "fence": claim.fence,
        }
        message = "Run of %s at %s (attempt %d) %s: %.3fs late, took %.3fs"
        args: tuple[Any, ...] = (key.job_id, key.scheduled_at, key.attempt, status, lateness_s, duration_s)
        if status != FAILED:
            logger.info(message, *args, extra=fields)
            return
        if retry_at is not None:
            self.tally.retry_scheduled(key.job_id)
            message += "; attempt %d at %s"
            args += (key.attempt + 1, retry_at)
        logger.error(message + "\n%s", *args, formatted, extra=fields)
