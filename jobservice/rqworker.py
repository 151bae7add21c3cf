"""RQ workers for SCHEDULER_EXECUTOR=rq: `flask --app <your app> jobservice worker`.

A worker loads the user's app (so runs get *its* context and config) and never joins the
leader election. Each RQ job names one claimed run; its work-horse:

* dies with its worker (a killed worker must not leave a run going that nobody beats for);
* runs the job as the leader fired it (its definition travels in the RQ job: the store
  deletes a job once its last fire is claimed, maybe before a worker takes the earlier ones);
* starts the run only through the start compare-and-set on its claim token, within the
  job's max_instances across the cluster (counted under a lock on the job's row, since
  several workers start runs at once): a message delivered twice, or one whose claim a
  new leader re-issued, starts nothing;
* runs it with the shared `runner` (app context, heartbeat, outcome, retries), stopping
  it at its timeout_s with RQ's death penalty (SIGALRM in the horse);
* counts what it did in Redis, where /metrics of any process reads it (a horse is a
  process per run: prometheus_client's per-process files would pile up).
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import redis
from flask import Flask
from rq import Queue, Worker
from rq.timeouts import UnixSignalDeathPenalty
from sqlalchemy import select

from .identity import host_name
from .ledger import Claim, RunKey, runs
from .liveness import Heartbeat
from .models import RUNNING
from .recorder import Recorder
from .runner import Runner, TimedOut
from .runtime import BEATS_PER_LEASE, EXTENSION, Runtime

logger = logging.getLogger(__name__)

#: Linux prctl(2): deliver this signal to the calling process when its parent dies.
PR_SET_PDEATHSIG = 1
TALLY_KEY = "jobservice:{cluster_id}:rq:tally"
#: Tries at writing a run's outcome before the work-horse gives up (a second apart).
FLUSH_ATTEMPTS = 30

_app: Flask | None = None


def serve(app: Flask, queues: Sequence[str], burst: bool = False) -> bool:
    """Work the given queues (names without the prefix) until stopped; True if any job ran."""
    global _app
    _app = app
    runtime: Runtime = app.extensions[EXTENSION]
    if runtime.redis is None:
        raise RuntimeError("an RQ worker needs Redis: set JOBSERVICE_REDIS_URL (REDIS_URL)")
    prefix = runtime.settings.rq_queue_prefix
    connection = runtime.redis
    worker = HorseDiesWithWorker(
        [Queue(prefix + name, connection=connection) for name in queues],
        connection=connection,
        name=f"jobservice-{host_name()}-{os.getpid()}",
    )
    return bool(worker.work(burst=burst, with_scheduler=False))


class HorseDiesWithWorker(Worker):
    """RQ's forking worker, whose work-horse is killed when the worker dies (kill -9)."""

    def main_work_horse(self, job: Any, queue: Queue) -> None:
        parent = os.getppid()
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        except (OSError, AttributeError):  # not Linux: the run is still closed by the sweep
            pass
        if os.getppid() != parent:  # the worker died before prctl took hold
            os._exit(1)
        super().main_work_horse(job, queue)


def perform(run_id: int, token: str, definition: bytes | None = None) -> str:
    """The RQ job: start and run one claimed run, in the app's context; `definition` is the
    job as the leader fired it (pickled). Returns what it did."""
    if _app is None:
        raise RuntimeError("jobservice's RQ jobs run under `flask jobservice worker`, which loads the app")
    return HorseRun(_app.extensions[EXTENSION]).perform(run_id, token, definition)


class HorseRun:
    """What a work-horse does with one run: the parent's connections are not its own."""

    def __init__(self, runtime: Runtime) -> None:
        runtime.after_fork()  # the worker's connections, locks and threads are not the horse's
        self.runtime = runtime
        url = runtime.settings.redis_url
        self.tally = RedisTally(redis.Redis.from_url(url, socket_timeout=2) if url else None, runtime)
        beat_s = runtime.lease_s / BEATS_PER_LEASE
        self.recorder = Recorder(runtime.engine, runtime.notify)
        self.runner = Runner(
            runtime.app,
            runtime.ledger,
            self.recorder,
            Heartbeat(runtime.engine, beat_s, self.tally.overrun),
            self.tally,
            runtime.refused_func,
            runtime.settings.overrun_s,
            runtime.settings.retry_max_delay_s,
        )

    def perform(self, run_id: int, token: str, definition: bytes | None) -> str:
        claim = _claim(self.runtime, run_id, token)
        if claim is None:
            return "not started: the claim was taken over, or the run already started"
        store = self.runtime.store
        job = None if definition is None else store.restore_saved(claim.key.job_id, definition)
        if job is None:
            job = store.lookup_job(claim.key.job_id)
        if job is None:
            saved = self.runtime.ledger.saved_jobs([run_id]).get(run_id)
            job = None if saved is None else self.runtime.store.restore_saved(claim.key.job_id, saved)
        if job is None:
            self.runtime.ledger.miss(claim, "The job was removed before this run could start")
            return "not started: the job was removed"
        started = self.runner.start(job, claim, self._start)
        if not isinstance(started, datetime):
            return "not started"
        event = self.runner.call(job, claim, started, guard=_death_penalty)
        if isinstance(event.exception, TimedOut):  # only a work-horse stops a run at its timeout
            self.tally.timed_out()
        for _ in range(FLUSH_ATTEMPTS):  # the horse exits next: the outcome must be written
            if self.recorder.flush():
                break
            time.sleep(1)  # the database is away; if it stays away, the sweep closes the run
        return "failed" if event.exception is not None else "succeeded"

    def _start(self, claim: Claim, limit: int) -> datetime | str | None:
        result = self.runtime.ledger.start_many([claim], {claim.key.job_id: limit}, fenced=False, lock=True)
        return result.answer(claim)


def _death_penalty(timeout_s: float) -> UnixSignalDeathPenalty:
    """RQ's own timeout mechanism (SIGALRM in the work-horse), raising TimedOut in the job."""
    return UnixSignalDeathPenalty(max(1, round(timeout_s)), TimedOut)


def _claim(runtime: Runtime, run_id: int, token: str) -> Claim | None:
    """The claim an RQ job names, if it still holds and its run has not started."""
    query = select(runs.c.job_id, runs.c.trigger, runs.c.scheduled_at, runs.c.attempt, runs.c.fence).where(
        runs.c.id == run_id, runs.c.claim == token, runs.c.started_at.is_(None), runs.c.status == RUNNING
    )
    with runtime.engine.connect() as conn:
        row = conn.execute(query).first()
    if row is None:
        return None
    return Claim(
        RunKey(row.job_id, row.trigger, row.scheduled_at, row.attempt), token, row.fence or 0, run_id
    )


class RedisTally:
    """Counts of what RQ work-horses did, in one Redis hash per cluster."""

    def __init__(self, connection: redis.Redis | None, runtime: Runtime) -> None:
        self.connection = connection
        self.runtime = runtime

    def _add(self, field: str) -> None:
        if self.connection is None:
            return
        try:
            key = TALLY_KEY.format(cluster_id=self.runtime.cluster.cluster_id)
            self.connection.hincrby(key, field, 1)
        except (redis.RedisError, OSError) as exc:  # a count is not worth failing a run for
            logger.debug("Could not count %s in Redis: %s", field, exc.__class__.__name__)

    def run_ended(
        self, job_id: str, status: str, trigger: str, lateness_s: float | None, duration_s: float | None
    ) -> None:
        self._add(f"runs:{status}")

    def retry_scheduled(self, job_id: str) -> None:
        self._add("retries")

    def timed_out(self) -> None:
        self._add("timeouts")

    def overrun(self, job_id: str) -> None:
        self._add("overruns")


def read_tally(connection: redis.Redis, cluster_id: str) -> dict[str, int]:
    """What every RQ work-horse of the cluster counted."""
    values = connection.hgetall(TALLY_KEY.format(cluster_id=cluster_id))
    return {key.decode(): int(value) for key, value in values.items()}
