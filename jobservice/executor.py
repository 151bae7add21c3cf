"""The thread executor (SCHEDULER_EXECUTOR=threads): the leader's pool runs every run.

The app context is pushed around the call (see `runner`), rather than by wrapping job
functions: the SQL store keeps a job's function as a text reference, which a
wrapper would break. Job code can use `current_app`, its config, `db.session`,
and `g.jobservice_run` (job id, scheduled time, trigger, fence, attempt).

A run is started only while this process leads under the claim's fence, and only by the
fenced compare-and-set of the start gate. A thread cannot be stopped: a run past its
`timeout_s` is flagged overrunning, not stopped (hard timeouts need the RQ executor).
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any

from apscheduler.events import JobEvent
from apscheduler.executors.base import MaxInstancesReachedError
from apscheduler.executors.pool import BasePoolExecutor
from apscheduler.job import Job
from sqlalchemy.exc import SQLAlchemyError

from .fencing import FencedOut
from .ledger import Claim, RunKey
from .runner import Runner
from .startgate import StartGate

logger = logging.getLogger(__name__)


class AppContextExecutor(BasePoolExecutor):
    """A thread pool whose runs are claimed, fenced, recorded and given the app context."""

    def __init__(
        self,
        runner: Runner,
        fence: Callable[[], int | None],
        on_fenced_out: Callable[[FencedOut], None] = lambda exc: None,
        max_workers: int = 20,
        lock: bool = False,
    ) -> None:
        super().__init__(
            concurrent.futures.ThreadPoolExecutor(max_workers, thread_name_prefix="jobservice-job")
        )
        self.max_workers = max_workers
        self.runner = runner
        self.gate = StartGate(runner.ledger, lock)
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

    def flush(self) -> None:
        """Runs are handed to the pool as they are submitted: nothing waits."""

    def run_in_pool(self, fn: Callable[[Any], None], arg: Any) -> concurrent.futures.Future[None]:
        """Run a call on a job thread of this process (RuntimeError once shut down)."""
        return self._pool.submit(fn, arg)

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
            started = self.runner.start(job, claim, self.gate.start)
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
            return [self.runner.call(job, claim, started)]
        return started

    def _forget(self, key: RunKey) -> None:
        with self._inflight_lock:
            self._inflight.discard(key)
