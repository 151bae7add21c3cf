"""The RQ executor (SCHEDULER_EXECUTOR=rq): the leader claims, RQ workers on any host run.

The leader decides and claims every fire time exactly as with threads, then enqueues the
claimed run to RQ instead of starting it. The RQ job names the run (its row and claim
token) and carries the job's definition as fired, under a job id derived from the run,
so a message delivered twice, or re-enqueued after a failover (the new leader's adoption
gives the run a new token), starts at most once: the work-horse starts it through the
same compare-and-set (see `rqworker`).

rq is imported only by deployments that use it.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Any

import redis
from apscheduler.executors.base import BaseExecutor
from apscheduler.job import Job
from rq import Queue
from rq.job import Job as RQJob
from rq.job import JobStatus
from rq.worker_registration import WORKERS_BY_QUEUE_KEY

from .fencing import FencedOut
from .jobstore import definition
from .ledger import LEFT_BEHIND_S, Claim, RunKey
from .options import options_of

logger = logging.getLogger(__name__)

PERFORM = "jobservice.rqworker.perform"
#: RQ's own limit on a run, past its timeout_s (which the work-horse enforces itself): time
#: to record the outcome. RQ's worker kills a horse 60 s past this limit, whatever it does.
RQ_TIMEOUT_MARGIN_S = 30
#: How long RQ keeps a finished RQ job (the run history is the record), and a failed one.
RESULT_TTL_S = 300
FAILURE_TTL_S = 7 * 86400
QUEUES_KEY = Queue.redis_queues_keys
QUEUE_KEY = Queue.redis_queue_namespace_prefix
#: RQ holds the run (queued, about to start, started): it is not left behind.
HELD = (JobStatus.QUEUED, JobStatus.STARTED, JobStatus.DEFERRED, JobStatus.SCHEDULED)


def rq_job_id(claim: Claim) -> str:
    """The RQ job of a claim: its run's row and claim token, so a re-enqueue of the same
    claim is the same RQ job, and another leader's adoption a different one."""
    return f"jobservice-run-{claim.run_id}-{claim.token}"


class RQExecutor(BaseExecutor):
    """Hands claimed runs to RQ queues (`<RQ_QUEUE_PREFIX><queue>`)."""

    def __init__(
        self,
        connection: Callable[[], redis.Redis],
        prefix: str,
        fence: Callable[[], int | None],
        on_fenced_out: Callable[[FencedOut], None] = lambda exc: None,
    ) -> None:
        super().__init__()
        self._connection = connection
        self.prefix = prefix
        self._fence = fence
        self._on_fenced_out = on_fenced_out
        self._enqueued: dict[RunKey, tuple[str, float]] = {}
        self._enqueued_lock = threading.Lock()

    def after_fork(self) -> None:
        with self._enqueued_lock:
            self._enqueued = {}
        self._enqueued_lock = threading.Lock()

    def queue(self, name: str) -> Queue:
        return Queue(self.prefix + name, connection=self._connection())

    def submit_run(self, job: Job, claim: Claim) -> None:
        """Enqueue one claimed run; if Redis refuses, the claim stays and is adopted again."""
        if self._fence() != claim.fence:
            logger.info("Run of %s at %s left for the next leader", job.id, claim.key.scheduled_at)
            return
        options = options_of(job)
        timeout = options["timeout_s"]
        key = claim.key
        try:
            self.queue(options["queue"]).enqueue_call(
                PERFORM,
                # The definition fired, as the thread pool would run it: the store may have
                # deleted the job by the time a worker takes the run (its last fire was claimed).
                args=(claim.run_id, claim.token, definition(job)),
                job_id=rq_job_id(claim),
                timeout=-1 if timeout is None else math.ceil(timeout) + RQ_TIMEOUT_MARGIN_S,
                result_ttl=RESULT_TTL_S,
                failure_ttl=FAILURE_TTL_S,
                description=f"{key.job_id} at {key.scheduled_at.isoformat()} (attempt {key.attempt})",
            )
        except (redis.RedisError, OSError) as exc:
            logger.warning(
                "Could not enqueue the run of %s at %s (%s); it will be adopted again",
                key.job_id,
                key.scheduled_at,
                exc.__class__.__name__,
            )
            return
        with self._enqueued_lock:
            self._enqueued[key] = (rq_job_id(claim), time.monotonic())

    def flush(self) -> None:
        """Each run is enqueued as it is submitted."""

    def _do_submit_job(self, job: Job, run_times: list[Any]) -> None:
        raise NotImplementedError("runs are submitted with submit_run(job, claim)")

    def inflight(self) -> frozenset[RunKey]:
        """Runs this leader enqueued that RQ still holds; a run RQ lost or failed before it
        started (its claim is still unstarted) is not, so the leader adopts it again."""
        now = time.monotonic()
        with self._enqueued_lock:
            entries = dict(self._enqueued)
        old = {key: job_id for key, (job_id, at) in entries.items() if now - at >= LEFT_BEHIND_S}
        if old:
            try:
                statuses = _statuses(self._connection(), list(old.values()))
            except (redis.RedisError, OSError):
                return frozenset(entries)  # cannot tell: nothing is re-enqueued meanwhile
            gone = [key for key, job_id in old.items() if statuses.get(job_id) not in HELD]
            with self._enqueued_lock:
                for key in gone:
                    self._enqueued.pop(key, None)
            entries = {key: value for key, value in entries.items() if key not in gone}
        return frozenset(entries)


def _statuses(connection: redis.Redis, job_ids: list[str]) -> dict[str, str | None]:
    """Each RQ job's status, in one round trip (None: RQ no longer has it)."""
    pipe = connection.pipeline(transaction=False)
    for job_id in job_ids:
        pipe.hget(RQJob.key_for(job_id), "status")
    values = pipe.execute()
    return {job_id: value.decode() if value else None for job_id, value in zip(job_ids, values, strict=True)}


def workers_and_queues(connection: redis.Redis, prefix: str) -> dict[str, Any]:
    """How many live RQ workers serve this service's queues, and how deep each queue is.

    Read-only, and only this service's queues: RQ's own `Worker.all()` walks (and tidies)
    the registry of every worker on the Redis, which other apps may share."""
    names = {prefix + "default"} | {
        key.decode().removeprefix(QUEUE_KEY) for key in connection.smembers(QUEUES_KEY)
    }
    names = {name for name in names if name.startswith(prefix)}
    ordered = sorted(names)
    pipe = connection.pipeline(transaction=False)
    for name in ordered:
        pipe.smembers(WORKERS_BY_QUEUE_KEY % name)
    registered = sorted({key for members in pipe.execute() for key in members})
    pipe = connection.pipeline(transaction=False)
    for key in registered:
        pipe.hget(key, "queues")  # a dead worker's hash has expired: None
    served = [value.decode().split(",") for value in pipe.execute() if value is not None]
    names |= {name for queues in served for name in queues if name.startswith(prefix)}
    pipe = connection.pipeline(transaction=False)
    for name in sorted(names):
        pipe.llen(QUEUE_KEY + name)
    depths = pipe.execute()
    return {
        "workers": len(served),
        "queues": {n[len(prefix) :]: d for n, d in zip(sorted(names), depths, strict=True)},
    }
