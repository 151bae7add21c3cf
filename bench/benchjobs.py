"""The benchmark's job bodies, the same for every peer: record each fire in `bench_fires`.

A fire writes its tag (scenario and peer), job id, scheduled time, start time and pid with
one single-row INSERT through a per-process pool. Under jobservice the scheduled time
comes from `flask.g.jobservice_run`; the peers cannot tell it, so it is computed from the
job's own arguments (`due` for a date job, `due` + k * `every` for an interval job).
`heavy` (S6) records its fire the same way, burns CPU, then records when it finished.
"""

from __future__ import annotations

import math
import os
import threading
import time
from typing import Any

from flask import g, has_app_context
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine

#: Where fires are written; set by the harness for every process it starts.
FIRES_URL_ENV = "BENCH_FIRES_URL"
INSERT = text(
    "INSERT INTO bench_fires (tag, job_id, sched, sched_src, started, pid) "
    "VALUES (:tag, :job_id, :sched, :src, :started, :pid)"
)
FINISH = text("UPDATE bench_fires SET finished = :finished WHERE id = :id")
#: Pure-Python work between two looks at the thread's CPU clock (about 40 us here).
BURN_STEP = 500

_engine: tuple[int, Engine] | None = None
_engine_lock = threading.Lock()


def fire(tag: str, job: str, due: float | None = None, every: float | None = None) -> None:
    """Record this fire; `due` is the (first) scheduled time as epoch seconds."""
    _record(tag, job, due, every)


def heavy(tag: str, job: str, due: float | None = None, burn_ms: float = 50.0) -> None:
    """Record this fire like `fire`, burn `burn_ms` of CPU in pure Python, record the finish."""
    row_id = _record(tag, job, due, None)
    burn(burn_ms / 1000)
    with _fires_engine().begin() as conn:
        conn.execute(FINISH, {"finished": time.time(), "id": row_id})


def burn(seconds: float) -> None:
    """Busy-loop until this thread has used `seconds` of CPU.

    The thread's own clock: process_time would count every job thread of the process, and
    wall time would count the time spent waiting for the GIL or a core.
    """
    end = time.thread_time() + seconds
    total = 0
    while time.thread_time() < end:
        for i in range(BURN_STEP):
            total += i * i


def _record(tag: str, job: str, due: float | None, every: float | None) -> int:
    """INSERT this fire's row (one statement); returns its id."""
    started = time.time()
    job_id, sched, src = _scheduled(job, started, due, every)
    with _fires_engine().begin() as conn:
        result = conn.execute(
            INSERT,
            {
                "tag": tag,
                "job_id": job_id,
                "sched": sched,
                "src": src,
                "started": started,
                "pid": os.getpid(),
            },
        )
    return int(result.lastrowid)


def _scheduled(job: str, started: float, due: float | None, every: float | None) -> tuple[str, Any, str]:
    """(job id, scheduled epoch, source): g = jobservice's own, a = argument, c = computed."""
    run = getattr(g, "jobservice_run", None) if has_app_context() else None
    if run is not None:
        return run.job_id, run.scheduled_at.timestamp(), "g"
    if due is None:
        return job, None, "-"
    if every:
        # An interval job fires at due + k * every; the latest such time not after the start.
        return job, due + math.floor((started - due) / every) * every, "c"
    return job, due, "a"


def _fires_engine() -> Engine:
    global _engine
    pid = os.getpid()
    if _engine is None or _engine[0] != pid:
        with _engine_lock:
            if _engine is None or _engine[0] != pid:
                url = os.environ[FIRES_URL_ENV]
                # Connections are kept (a pool as large as the job threads) and made without
                # PyMySQL's TLS attempt, so recording a fire costs the same on every peer and
                # never the ~30 ms of CPU a new PyMySQL connection costs by default.
                engine = create_engine(
                    url, pool_size=20, max_overflow=10, pool_recycle=600, connect_args={"ssl_disabled": True}
                )
                _engine = (pid, engine)
    return _engine[1]
