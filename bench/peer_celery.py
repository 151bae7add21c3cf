"""The Celery 5 peer: `celery -A bench.peer_celery beat` and `celery -A bench.peer_celery worker`.

Beat uses celery-redbeat on the same Redis with `redbeat_lock_timeout=5` and
`beat_max_loop_interval=1` (the settings that give it a failover of a few seconds); one
worker, prefork, concurrency 2 (BENCH_CELERY_CONCURRENCY). No result backend: the job body
records its own fire. Every key this app makes in Redis starts with BENCH_REDIS_PREFIX
(kombu's `global_keyprefix`, RedBeat's `redbeat_key_prefix`), so the harness can delete
exactly those. S6's one-off jobs are sent with `apply_async(eta=...)`, which is what Celery
offers for "run this once at that time" (beat only has periodic schedules).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from celery import Celery
from celery.signals import beat_init, worker_ready

from . import benchjobs

HEAVY_TASK = "bench.heavy"


def make_app(redis_url: str, prefix: str, concurrency: int = 2) -> Celery:
    """The Celery app of the peer's processes, and of the harness when it sends tasks."""
    app = Celery("bench", broker=redis_url, set_as_current=False)
    app.conf.update(
        broker_transport_options={"global_keyprefix": prefix},
        broker_connection_retry_on_startup=True,
        task_ignore_result=True,
        timezone="UTC",
        enable_utc=True,
        worker_pool="prefork",
        worker_concurrency=concurrency,
        beat_scheduler="redbeat.RedBeatScheduler",
        beat_max_loop_interval=1,
        redbeat_redis_url=redis_url,
        redbeat_redis_options={},
        redbeat_key_prefix=f"{prefix}redbeat:",
        redbeat_lock_timeout=5,
    )
    app.task(name=HEAVY_TASK)(_heavy)
    return app


def _heavy(tag: str, job: str, due: float, burn_ms: float) -> None:
    benchjobs.heavy(tag, job, due, burn_ms)


def _mark_ready(**_: Any) -> None:
    ready_dir = os.environ.get("BENCH_READY_DIR")
    if ready_dir:
        Path(ready_dir, str(os.getpid())).touch()


worker_ready.connect(_mark_ready, weak=False)
beat_init.connect(_mark_ready, weak=False)

if "BENCH_REDIS_PREFIX" in os.environ:
    app = make_app(
        os.environ["BENCH_REDIS_URL"],
        os.environ["BENCH_REDIS_PREFIX"],
        int(os.environ.get("BENCH_CELERY_CONCURRENCY", "2")),
    )
