"""Job functions used by the tests; scheduled as "tests.jobfuncs:<name>".

Each writes what it saw into `test_fires`, a table of the tests' own, so
assertions are made on data the jobs wrote, not on logs.
"""

from __future__ import annotations

import os
import threading
import time

from flask import current_app, g
from sqlalchemy import Column, DateTime, Integer, MetaData, String, Table, create_engine, insert
from sqlalchemy.engine import Engine
from sqlalchemy.sql import Insert

from jobservice.models import UTCDateTime, utcnow

metadata = MetaData()
fires = Table(
    "test_fires",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("job_id", String(191)),
    Column("scheduled_at", UTCDateTime),
    Column("started_at", UTCDateTime),
    Column("finished_at", UTCDateTime),
    Column("trigger", String(16)),
    Column("fence", Integer),
    Column("pid", Integer),
    Column("note", String(255)),
    Column("created", DateTime),
)


def this_fire(note: str) -> Insert:
    """The row of `test_fires` that says this run started: its job, fire time, fence, pid."""
    run = g.jobservice_run
    return insert(fires).values(
        job_id=run.job_id,
        scheduled_at=run.scheduled_at,
        started_at=utcnow(),
        trigger=run.trigger,
        fence=run.fence,
        pid=os.getpid(),
        note=note,
    )


def record(note: str = "") -> None:
    """Write this run's identity into the app's database, found through current_app."""
    with _engine(current_app.config["JOBSERVICE_DATABASE_URL"]).begin() as conn:
        conn.execute(this_fire(note))


_engines: dict[str, Engine] = {}
_engines_lock = threading.Lock()


def _engine(url: str) -> Engine:
    with _engines_lock:
        engine = _engines.get(url)
        if engine is None:
            engine = _engines[url] = create_engine(url, pool_size=30, max_overflow=10)
        return engine


def dispose(url: str) -> None:
    """Close the connections `record` and `probe` opened to this database (a test is done with it)."""
    with _engines_lock:
        engine = _engines.pop(url, None)
    if engine is not None:
        engine.dispose()


def probe(note: str = "") -> None:
    """Write this run into `test_fires` of PROBE_DATABASE_URL: a database of the fault tests'
    own, which stays up while they break the service's database, so every start is counted."""
    with _engine(os.environ["PROBE_DATABASE_URL"]).begin() as conn:
        conn.execute(this_fire(note))


def slow_probe(seconds: float) -> None:
    """`slow`, written to the probe database."""
    probe("start")
    time.sleep(seconds)
    probe("end")


def record_config(key: str) -> None:
    """Read a setting through current_app and store it: proves the app context is pushed."""
    record(str(current_app.config[key]))


def slow(seconds: float) -> None:
    """Record the start, sleep, then record the finish time."""
    record("start")
    time.sleep(seconds)
    record("end")


#: Released by the test that started `hang(tag)` (a job that does not return until then).
RELEASE: dict[str, threading.Event] = {}


def hang(tag: str) -> None:
    """Record the start, then hang until the test releases `tag` (at most a minute)."""
    record("start")
    RELEASE.setdefault(tag, threading.Event()).wait(60)


def fail(message: str = "boom") -> None:
    raise RuntimeError(message)


def noop() -> None:
    """Does nothing; for API tests that never run jobs."""


def needs_two(a: int, b: int) -> int:
    return a + b


async def coroutine() -> None:
    """Async functions cannot be scheduled (jobs run in threads)."""


def _private() -> None:
    """Private functions cannot be scheduled."""


#: Calls of `count`, by tag, for tests that also run plain APScheduler (no app context there).
COUNTS: dict[str, list[float]] = {}


def count(tag: str) -> None:
    COUNTS.setdefault(tag, []).append(time.time())


def sleep_then_count(tag: str, seconds: float) -> None:
    count(tag + "-start")
    time.sleep(seconds)
    count(tag)


def fork_and_record() -> None:
    """Fork from this job's thread, as multiprocessing would; both sides record."""
    pid = os.fork()
    if pid == 0:
        try:
            record("child")
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    record("parent")


def flaky(failures: int) -> None:
    """Record this attempt, then fail while this run's fire has been tried `failures` times or
    fewer (counted from what earlier attempts recorded): fails `failures` times, then succeeds."""
    run = g.jobservice_run
    record(f"attempt {run.attempt}")
    if run.attempt <= failures:
        raise RuntimeError(f"failing attempt {run.attempt} of {failures}")


def sleepy(seconds: float) -> None:
    """`slow`, but records only the start: for a run that is stopped or killed midway."""
    record("start")
    time.sleep(seconds)
    record("end")
