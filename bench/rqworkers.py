"""jobservice's RQ workers in a deployment: starting, waiting for, stopping, cleaning up.

Used by every deployment with `rq_workers` (S1-S5's RQ rows, S6's RQ executor). Each
worker is `flask --app run jobservice worker`, run from the repository root with the
service's environment, in a session of its own (one process, forking a work-horse per
run). Every key of the deployment's RQ queues contains its prefix (jobservice's
`RQ_QUEUE_PREFIX`); RQ's job, result and worker keys do not, so those are found through
the queues and noted while the workers run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from redis import Redis
from rq import Queue
from rq.job import Job
from rq.results import get_key as results_key
from rq.worker_registration import WORKERS_BY_QUEUE_KEY

from . import procs

#: jobservice's RQ worker, run from the repository root with the service's environment.
RQ_WORKER = ("--app", "run", "jobservice", "worker")
#: An RQ worker told to stop (SIGTERM) leaves RQ's registries itself; then it is killed.
RQ_STOP_S = 5.0
#: A row for a jobservice without the RQ executor (`flask jobservice worker` fails).
NO_RQ = "n/a (no RQ executor)"


def spawn(flask: Path, env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """One RQ worker (`flask` is the venv's), in its own session."""
    return procs.spawn([str(flask), *RQ_WORKER], env, log_path)


def available(flask: Path, env: dict[str, str]) -> bool:
    """Whether this jobservice has the `flask jobservice worker` command (its RQ executor)."""
    result = subprocess.run(
        [str(flask), *RQ_WORKER, "--help"], cwd=procs.ROOT, env=env, capture_output=True, timeout=60
    )
    return result.returncode == 0


def registered(redis_url: str, prefix: str) -> set[str]:
    """RQ's keys of the live workers registered on one of the queues named `prefix*` (an RQ
    worker registers when it starts). Read only: RQ's own `Worker.all()` would also prune
    other users' stale entries."""
    connection = Redis.from_url(redis_url)
    try:
        match = WORKERS_BY_QUEUE_KEY % f"{prefix}*"
        keys = {k.decode() for q in connection.scan_iter(match=match) for k in connection.smembers(q)}
        return {key for key in keys if connection.exists(key)}
    finally:
        connection.close()


def backlog(redis_url: str, prefix: str) -> int:
    """RQ jobs queued or started in the queues named `prefix*` (runs RQ has not finished)."""
    connection = Redis.from_url(redis_url)
    try:
        queues = [q for q in Queue.all(connection=connection) if q.name.startswith(prefix)]
        return sum(q.count + q.started_job_registry.count for q in queues)
    finally:
        connection.close()


def stop(workers: Sequence[subprocess.Popen[bytes]]) -> None:
    """SIGTERM every live worker (it finishes its run and leaves RQ's registries), wait up to
    RQ_STOP_S, then kill each one's process group (its work-horse with it)."""
    live = [p for p in workers if p.poll() is None]
    for proc in live:
        os.kill(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + RQ_STOP_S
    for proc in live:
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    for proc in workers:
        procs.kill_group(proc)


def forget_redis_keys(client: Redis, prefix: str, worker_keys: Iterable[str] = ()) -> int:
    """Delete what RQ or Celery made for one deployment; returns how many keys.

    Every key of its RQ queues and of Celery contains `prefix`; RQ's job, result and worker
    keys do not: jobs are found through the queues and their registries, and the workers'
    keys were noted while they ran (a worker that stopped left the registries already).
    """
    worker_keys = list(worker_keys)
    deleted = 0
    for queue in Queue.all(connection=client):
        if queue.name.startswith(prefix):
            deleted += _forget_queue(client, queue)
    keys = [*client.scan_iter(match=f"*{prefix}*"), *worker_keys]
    if keys:
        deleted += int(client.delete(*keys))
    for key in worker_keys:
        client.srem("rq:workers", key)
    return deleted


def _forget_queue(client: Redis, queue: Queue) -> int:
    """The jobs of one RQ queue (queued or in any registry) and the queue itself."""
    registries = (
        queue.started_job_registry,
        queue.finished_job_registry,
        queue.failed_job_registry,
        queue.deferred_job_registry,
        queue.scheduled_job_registry,
        queue.canceled_job_registry,
    )
    ids = set(queue.get_job_ids()).union(*(r.get_job_ids() for r in registries))
    deleted = sum(int(client.delete(Job.key_for(i), results_key(i))) for i in ids)
    queue.delete(delete_jobs=False)
    return deleted
