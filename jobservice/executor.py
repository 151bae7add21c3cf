"""The executor: every run starts only once its claim holds, inside the app context.

The app context is pushed here, around the call, rather than by wrapping job
functions: the SQL store keeps a job's function as a text reference, which a
wrapper would break. Job code can use `current_app`, its config, `db.session`,
and `g.jobservice_run` (job id, scheduled time, trigger, fence).

A run is started only while this process leads under the claim's fence, and only by the
fenced compare-and-set of the start gate; from its start to its outcome the heartbeat keeps
it visibly alive (see `liveness`).
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from apscheduler.events import (
    EVENT_JOB_ERROR,
    EVENT_JOB_EXECUTED,
    EVENT_JOB_MISSED,
    JobEvent,
    JobExecutionEvent,
)
from apscheduler.executors.base import MaxInstancesReachedError
from apscheduler.executors.pool import BasePoolExecutor
from apscheduler.job import Job
from apscheduler.util import ref_to_obj
from flask import Flask, g
from sqlalchemy.exc import SQLAlchemyError

from . import metrics
from .fencing import FencedOut
from .ledger import Claim, RunKey, RunLedger
from .liveness import Heartbeat, overrun_limit
from .models import FAILED, MISSED, SCHEDULED, SUCCEEDED, utcnow
from .recorder import Recorder
from .startgate import StartGate

logger = logging.getLogger(__name__)


class JobRefused(Exception):
    """A stored job's function is outside the job packages: it is never called."""


@dataclass(frozen=True)
class RunInfo:
    """What a job can know about the run it is part of (`flask.g.jobservice_run`)."""

    job_id: str
    scheduled_at: datetime
    trigger: str
    fence: int


class AppContextExecutor(BasePoolExecutor):
    """A thread pool whose runs are claimed, fenced, recorded and given the app context."""

    def __init__(
        self,
        app: Flask,
        ledger: RunLedger,
        recorder: Recorder,
        heartbeat: Heartbeat,
        fence: Callable[[], int | None],
        refused: Callable[[str], str | None] = lambda func_ref: None,
        on_fenced_out: Callable[[FencedOut], None] = lambda exc: None,
        max_workers: int = 20,
        overrun_s: float | None = None,
    ) -> None:
        super().__init__(
            concurrent.futures.ThreadPoolExecutor(max_workers, thread_name_prefix="jobservice-job")
        )
        self.max_workers = max_workers
        self._refused = refused
        self.app = app
        self.ledger = ledger
        self.gate = StartGate(ledger)
        self.recorder = recorder
        self.heartbeat = heartbeat
        self.overrun_s = overrun_s
        self._fence = fence
        self._on_fenced_out = on_fenced_out
        self._inflight: set[RunKey] = set()
        self._inflight_lock = threading.Lock()

    def after_fork(self) -> None:
        """In a forked child: the parent's pool threads and locks are not ours."""
        self._lock = threading.RLock()
        self._inflight_lock = threading.Lock()
        self._pool = concurrent.futures.ThreadPoolExecutor(
            self.max_workers, thread_name_prefix="jobservice-job"
        )

    def inflight(self) -> frozenset[RunKey]:
        """Runs handed to the pool that have not yet started or been dropped."""
        with self._inflight_lock:
            return frozenset(self._inflight)

    def submit_run(self, job: Job, claim: Claim) -> None:
        """Queue one claimed run; raises MaxInstancesReachedError like APScheduler's executors."""
        with self._lock:
            if self._instances[job.id] >= job.max_instances:
                raise MaxInstancesReachedError(job)
            self._instances[job.id] += 1
        with self._inflight_lock:
            self._inflight.add(claim.key)
        try:
            future = self._pool.submit(self._run, job, claim)
        except BaseException:
            self._forget(claim.key)
            self._run_job_success(job.id, [])  # only gives the instance slot back
            raise
        future.add_done_callback(lambda f: self._done(job.id, f))

    def _do_submit_job(self, job: Job, run_times: list[datetime]) -> None:
        raise NotImplementedError("runs are submitted with submit_run(job, claim)")

    def _done(self, job_id: str, future: concurrent.futures.Future[list[JobEvent]]) -> None:
        exc = future.exception()
        if exc is not None:
            self._run_job_error(job_id, exc, exc.__traceback__)
        else:
            self._run_job_success(job_id, future.result())

    def _run(self, job: Job, claim: Claim) -> list[JobEvent]:
        key = claim.key
        try:
            started = self._start(job, claim)
        except FencedOut as exc:
            logger.warning("Run of %s at %s left for the next leader: %s", key.job_id, key.scheduled_at, exc)
            self._on_fenced_out(exc)
            return []
        except SQLAlchemyError as exc:  # the claim stays: this leader or the next adopts it
            logger.warning(
                "Run of %s at %s could not start (%s); it will be adopted",
                key.job_id,
                key.scheduled_at,
                exc.__class__.__name__,
            )
            return []
        finally:
            self._forget(key)
        if isinstance(started, datetime):
            return [self._call(job, claim, started)]
        return started

    def _start(self, job: Job, claim: Claim) -> datetime | list[JobEvent]:
        """Start the run (its start time) or say why not (the events to report)."""
        key = claim.key
        if self._fence() != claim.fence:
            # Leadership ended or changed since the claim: the next leader adopts it.
            logger.info("Run of %s at %s left for the next leader", key.job_id, key.scheduled_at)
            return []
        late = utcnow() - key.scheduled_at
        grace = job.misfire_grace_time
        if key.trigger == SCHEDULED and grace is not None and late > timedelta(seconds=grace):
            self.ledger.miss(claim, f"Run time was missed by {late}")
            logger.warning("Run of %s at %s missed by %s", key.job_id, key.scheduled_at, late)
            metrics.run_ended(key.job_id, MISSED, key.trigger, None, None)
            return [JobExecutionEvent(EVENT_JOB_MISSED, job.id, "default", key.scheduled_at)]
        started_at = self.gate.start(claim)
        if started_at is None:
            # Taken over by another leader (then this changes nothing), or paused.
            self.ledger.miss(claim, "The job was paused before this run could start")
            logger.info("Run of %s at %s not started: paused or taken over", key.job_id, key.scheduled_at)
            return []
        return started_at

    def _call(self, job: Job, claim: Claim, started_at: datetime) -> JobExecutionEvent:
        key = claim.key
        error: BaseException | None = None
        formatted: str | None = None
        retval: Any = None
        # A run-now request has no fire time of its own to outlast: only the setting applies.
        trigger = job.trigger if key.trigger == SCHEDULED else None
        self.heartbeat.started(claim, started_at, overrun_limit(trigger, key.scheduled_at, self.overrun_s))
        try:
            with self.app.app_context():
                g.jobservice_run = RunInfo(key.job_id, key.scheduled_at, key.trigger, claim.fence)
                try:
                    refused = self._refused(job.func_ref)
                    if refused is not None:  # a row the API would not have written
                        raise JobRefused(f"not run: {refused}")
                    retval = ref_to_obj(job.func_ref)(*job.args, **job.kwargs)
                except BaseException as exc:
                    error, formatted = exc, traceback.format_exc()
            finished_at = utcnow()
            status = SUCCEEDED if error is None else FAILED
            self.recorder.finished(claim, status, finished_at, formatted)
        finally:
            self.heartbeat.ended(claim)
        self._log_run(claim, status, started_at, finished_at, formatted)
        if error is not None:
            return JobExecutionEvent(
                EVENT_JOB_ERROR, job.id, "default", key.scheduled_at, exception=error, traceback=formatted
            )
        return JobExecutionEvent(EVENT_JOB_EXECUTED, job.id, "default", key.scheduled_at, retval=retval)

    @staticmethod
    def _log_run(
        claim: Claim, status: str, started_at: datetime, finished_at: datetime, formatted: str | None
    ) -> None:
        """One line per run: job, scheduled time, lateness, duration, status."""
        key = claim.key
        lateness_s = (started_at - key.scheduled_at).total_seconds()
        duration_s = (finished_at - started_at).total_seconds()
        metrics.run_ended(key.job_id, status, key.trigger, lateness_s, duration_s)
        fields = {
            "job_id": key.job_id,
            "scheduled_at": key.scheduled_at,
            "trigger": key.trigger,
            "lateness_s": round(lateness_s, 6),
            "duration_s": round(duration_s, 6),
            "status": status,
            "fence": claim.fence,
        }
        message = "Run of %s at %s %s: %.3fs late, took %.3fs"
        args = (key.job_id, key.scheduled_at, status, lateness_s, duration_s)
        if status == FAILED:
            logger.error(message + "\n%s", *args, formatted, extra=fields)
        else:
            logger.info(message, *args, extra=fields)

    def _forget(self, key: RunKey) -> None:
        with self._inflight_lock:
            self._inflight.discard(key)
