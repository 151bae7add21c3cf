"""Databases of one benchmark run: creating and dropping them, the fires table, bulk job inserts.

Every deployment gets a database of its own (`bench_<run>_<n>`); fires from all of them go to
`bench_<run>`. Jobs are put in a store with pickled APScheduler 3 job states, exactly what
`Job.__getstate__` produces, so every peer reads them as if they had been added through it.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import SQLAlchemyError

JOB_FUNC = "bench.benchjobs:fire"
UTC_ZONE = ZoneInfo("UTC")
INSERT_CHUNK = 2000
#: APScheduler's default for a job without its own setting; jobservice's default is 300.
APSCHEDULER_GRACE_S = 1
JOBSERVICE_GRACE_S = 300

FIRES_DDL = """
CREATE TABLE bench_fires (
    id BIGINT AUTO_INCREMENT PRIMARY KEY,
    tag VARCHAR(64) NOT NULL,
    job_id VARCHAR(191) NOT NULL,
    sched DOUBLE NULL,
    sched_src CHAR(1) NOT NULL,
    started DOUBLE NOT NULL,
    finished DOUBLE NULL,
    pid INT NOT NULL,
    KEY ix_bench_fires_tag (tag)
) ENGINE=InnoDB
"""


@dataclass(frozen=True)
class Fire:
    """One recorded fire; times are epoch seconds (`finished` only for jobs that record it)."""

    job_id: str
    sched: float | None
    started: float
    pid: int
    finished: float | None = None


class Databases:
    """Creates databases on one MariaDB server and drops them all at the end."""

    def __init__(self, server_url: str, run_id: str) -> None:
        self.server: URL = make_url(server_url)
        self.run_id = run_id
        self.engine = create_engine(self.server.set(database=""), pool_size=2)
        self.created: list[str] = []

    def url(self, name: str) -> str:
        return self.server.set(database=name).render_as_string(hide_password=False)

    def create(self, suffix: str = "") -> str:
        """A new empty database; returns its URL."""
        name = f"bench_{self.run_id}{suffix}"
        with self.engine.begin() as conn:
            conn.execute(text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"))
        self.created.append(name)
        return self.url(name)

    def drop_all(self) -> None:
        with self.engine.begin() as conn:
            for name in reversed(self.created):
                conn.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))
        self.created.clear()
        self.engine.dispose()

    def status(self) -> dict[str, int]:
        """MariaDB's global counters (all clients) of connections, statements, pings, commits."""
        names = ("Connections", "Questions", "Com_admin_commands", "Com_commit", "Com_rollback")
        query = text(f"SHOW GLOBAL STATUS WHERE Variable_name IN ({', '.join(repr(n) for n in names)})")
        with self.engine.connect() as conn:
            return {str(name): int(value) for name, value in conn.execute(query)}

    def server_pid(self) -> int | None:
        """The MariaDB server's pid, from its pid file (read only, to account its CPU time)."""
        try:
            with self.engine.connect() as conn:
                path = conn.execute(text("SELECT @@pid_file")).scalar_one()
            with open(path) as pid_file:
                return int(pid_file.read().strip())
        except (OSError, ValueError, SQLAlchemyError):
            return None

    def version(self) -> str:
        with self.engine.connect() as conn:
            return str(conn.execute(text("SELECT VERSION()")).scalar_one())


def create_fires_table(url: str) -> None:
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text(FIRES_DDL))
    engine.dispose()


def create_apscheduler_table(url: str) -> None:
    """The plain SQLAlchemyJobStore table, made once up front so workers starting together do not race."""
    engine = create_engine(url)
    SQLAlchemyJobStore(engine=engine).jobs_t.create(engine, checkfirst=True)
    engine.dispose()


def _sched_range(since: float | None, until: float | None) -> tuple[str, dict[str, float]]:
    """SQL and parameters for fires scheduled in [since, until), as `stats.in_window` counts them."""
    sql, params = "", {}
    if since is not None:
        sql, params["since"] = sql + " AND sched >= :since", since - 1e-6
    if until is not None:
        sql, params["until"] = sql + " AND sched < :until", until - 1e-6
    return sql, params


def read_fires(
    engine: Engine, tag: str, since: float | None = None, until: float | None = None
) -> list[Fire]:
    """A tag's fires (those scheduled in [since, until) when given), in start order."""
    where, params = _sched_range(since, until)
    query = text(
        "SELECT job_id, sched, started, pid, finished FROM bench_fires "
        f"WHERE tag = :tag{where} ORDER BY started"
    )
    with engine.connect() as conn:
        return [Fire(*row) for row in conn.execute(query, {"tag": tag, **params})]


def count_fires(engine: Engine, tag: str, since: float | None = None, until: float | None = None) -> int:
    where, params = _sched_range(since, until)
    query = text(f"SELECT COUNT(*) FROM bench_fires WHERE tag = :t{where}")
    with engine.connect() as conn:
        return int(conn.execute(query, {"t": tag, **params}).scalar_one())


def count_progress(engine: Engine, tag: str) -> tuple[int, int]:
    """(fires started, fires finished) of a tag, for jobs that record their finish."""
    query = text("SELECT COUNT(*), COUNT(finished) FROM bench_fires WHERE tag = :t")
    with engine.connect() as conn:
        started, finished = conn.execute(query, {"t": tag}).one()
    return int(started), int(finished)


def date_trigger(at: float) -> DateTrigger:
    return DateTrigger(run_date=datetime.fromtimestamp(at, UTC), timezone=UTC_ZONE)


def interval_trigger(start: float, every_s: float, end: float | None = None) -> IntervalTrigger:
    return IntervalTrigger(
        seconds=every_s,
        start_date=datetime.fromtimestamp(start, UTC),
        end_date=None if end is None else datetime.fromtimestamp(end, UTC),
        timezone=UTC_ZONE,
    )


def job_row(
    job_id: str,
    trigger: BaseTrigger,
    first: float,
    args: Sequence[Any],
    grace_s: int | None,
    func: str = JOB_FUNC,
) -> tuple:
    """(id, next_run_time, job_state) for a job of `func` first due at `first`
    (grace None: no misfire limit)."""
    next_run = datetime.fromtimestamp(first, UTC).astimezone(UTC_ZONE)
    state = {
        "version": 1,
        "id": job_id,
        "func": func,
        "trigger": trigger,
        "executor": "default",
        "args": tuple(args),
        "kwargs": {},
        "name": job_id,
        "misfire_grace_time": grace_s,
        "coalesce": True,
        "max_instances": 1,
        "next_run_time": next_run,
    }
    return job_id, first, pickle.dumps(state, pickle.HIGHEST_PROTOCOL)


def insert_jobs(url: str, rows: Iterable[tuple], versioned: bool) -> int:
    """Bulk-insert job rows; jobservice's table also has a `version` column (1 for a new job)."""
    columns = "id, next_run_time, job_state" + (", version" if versioned else "")
    # Only placeholders in VALUES: PyMySQL then sends a batch as one multi-row INSERT.
    values = "%s, %s, %s" + (", %s" if versioned else "")
    sql = f"INSERT INTO apscheduler_jobs ({columns}) VALUES ({values})"
    if versioned:
        rows = (row + (1,) for row in rows)
    engine = create_engine(url)
    raw = engine.raw_connection()
    count = 0
    try:
        cursor = raw.cursor()
        batch: list[tuple] = []
        for row in rows:
            batch.append(row)
            if len(batch) == INSERT_CHUNK:
                count += cursor.executemany(sql, batch) or 0
                batch = []
        if batch:
            count += cursor.executemany(sql, batch) or 0
        raw.commit()
    finally:
        raw.close()
        engine.dispose()
    return count


def execute(url: str, sql: str) -> None:
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text(sql))
    engine.dispose()


def scalar(url: str, sql: str) -> Any:
    engine = create_engine(url)
    with engine.connect() as conn:
        value = conn.execute(text(sql)).scalar()
    engine.dispose()
    return value
