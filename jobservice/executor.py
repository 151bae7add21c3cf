"""The executor: every run starts only once its claim holds, inside the app context.

The app context is pushed here, around the call, rather than by wrapping job
functions: the SQL store keeps a job's function as a text reference, which a
wrapper would break. Job code can use `current_app`, its config, `db.session`,
and `g.jobservice_run` (job id, scheduled time, trigger, fence).
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

from .ledger import Claim, RunKey, RunLedger
from .models import FAILED, SCHEDULED, SUCCEEDED, utcnow
from .recorder import Recorder

logger = logging.getLogger(__name__)


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
        fence: Callable[[], int | None],
        max_workers: int = 20,
    ) -> None:
        super().__init__(
            concurrent.futures.ThreadPoolExecutor(max_workers, thread_name_prefix="jobservice-job")
        )
        self.app = app
        self.ledger = ledger
        self.recorder = recorder
        self._fence = fence
        self._inflight: set[RunKey] = set()
        self._inflight_lock = threading.Lock()

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
            if self._fence() != claim.fence:
                # Leadership ended or changed since the claim: the next leader adopts it.
                logger.info("Run of %s at %s left for the next leader", key.job_id, key.scheduled_at)
                return []
            late = utcnow() - key.scheduled_at
            grace = job.misfire_grace_time
            if key.trigger == SCHEDULED and grace is not None and late > timedelta(seconds=grace):
                self.ledger.miss(claim, f"Run time was missed by {late}")
                logger.warning("Run of %s at %s missed by %s", key.job_id, key.scheduled_at, late)
                return [JobExecutionEvent(EVENT_JOB_MISSED, job.id, "default", key.scheduled_at)]
            if self.ledger.start(claim) is None:
                # Taken over by another leader (then this changes nothing), or paused.
                self.ledger.miss(claim, "The job was paused before this run could start")
                logger.info("Run of %s at %s not started: paused or taken over", key.job_id, key.scheduled_at)
                return []
        finally:
            self._forget(key)
        return [self._call(job, claim)]

    def _call(self, job: Job, claim: Claim) -> JobExecutionEvent:
        key = claim.key
        with self.app.app_context():
            g.jobservice_run = RunInfo(key.job_id, key.scheduled_at, key.trigger, claim.fence)
            try:
                retval: Any = ref_to_obj(job.func_ref)(*job.args, **job.kwargs)
            except BaseException as exc:
                formatted = traceback.format_exc()
                self.recorder.finished(key, FAILED, utcnow(), formatted)
                logger.exception("Job %s (scheduled at %s) failed", key.job_id, key.scheduled_at)
                return JobExecutionEvent(
                    EVENT_JOB_ERROR, job.id, "default", key.scheduled_at, exception=exc, traceback=formatted
                )
        self.recorder.finished(key, SUCCEEDED, utcnow())
        return JobExecutionEvent(EVENT_JOB_EXECUTED, job.id, "default", key.scheduled_at, retval=retval)

    def _forget(self, key: RunKey) -> None:
        with self._inflight_lock:
            self._inflight.discard(key)
