"""Run history: queries over `jobservice_runs` for the API, the CLI and maintenance."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from flask import current_app
from sqlalchemy import Row, bindparam, delete, func, select
from sqlalchemy.engine import Engine

from .models import ACTIVE, OVERRUNNING, SKIPPED, force_index, runs_table, utcnow

runs = runs_table
PURGE_BATCH = 2000
#: A purge rests this many times as long as each batch took (at most PURGE_MAX_PAUSE_S).
PURGE_PAUSE_RATIO = 1.0
PURGE_MAX_PAUSE_S = 1.0
#: Where the app keeps its jobservice Runtime (runtime.EXTENSION; this module is below it).
EXTENSION = "jobservice"


@dataclass(frozen=True)
class RunFilter:
    """Which runs to list; `before_id` is the cursor (runs older than that one)."""

    job_id: str | None = None
    status: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    before_id: int | None = None


def list_runs(engine: Engine, where: RunFilter, limit: int) -> list[dict[str, Any]]:
    """Newest first. Paging by id keeps pages stable while new runs are added."""
    query = select(runs).order_by(runs.c.id.desc()).limit(limit)
    if where.job_id is not None:
        # Its newest runs, backwards along (job_id, id): MariaDB would walk the whole table
        # backwards by id instead for a job with many old runs (S7: 18 801 rows for 100).
        query = force_index(query.where(runs.c.job_id == where.job_id), runs, "ix_jobservice_runs_job_id_id")
    if where.status is not None:
        query = query.where(runs.c.status == where.status)
    if where.since is not None:
        query = query.where(runs.c.scheduled_at >= where.since)
    if where.until is not None:
        query = query.where(runs.c.scheduled_at < where.until)
    if where.before_id is not None:
        query = query.where(runs.c.id < where.before_id)
    with engine.connect() as conn:
        return [as_dict(row) for row in conn.execute(query)]


_LAST_COLUMNS = (runs.c.job_id, runs.c.status, runs.c.scheduled_at, runs.c.started_at, runs.c.finished_at)
# Built once: the statements' compiled forms are cached, and one job (every write of the
# API answers with one) takes the (job_id, id) index straight to its newest run.
_LAST_OF_ONE = (
    select(*_LAST_COLUMNS).where(runs.c.job_id == bindparam("job_id")).order_by(runs.c.id.desc()).limit(1)
)
_LAST_OF_MANY = select(*_LAST_COLUMNS).where(
    runs.c.id.in_(
        select(func.max(runs.c.id))
        .where(runs.c.job_id.in_(bindparam("job_ids", expanding=True)))
        .group_by(runs.c.job_id)
        .scalar_subquery()
    )
)


def last_runs(engine: Engine, job_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """The newest run of each of these jobs, in one query."""
    if not job_ids:
        return {}
    with engine.connect() as conn:
        if len(job_ids) == 1:
            rows = conn.execute(_LAST_OF_ONE, {"job_id": job_ids[0]}).all()
        else:
            rows = conn.execute(_LAST_OF_MANY, {"job_ids": list(job_ids)}).all()
    return {
        row.job_id: {
            "status": row.status,
            "scheduled_at": row.scheduled_at,
            "started_at": row.started_at,
            "finished_at": row.finished_at,
        }
        for row in rows
    }


def as_dict(row: Row[Any]) -> dict[str, Any]:
    duration = row.finished_at - row.started_at if row.started_at and row.finished_at else None
    return {
        "id": row.id,
        "job_id": row.job_id,
        "trigger": row.trigger,
        "attempt": row.attempt,
        "status": row.status,
        "scheduled_at": row.scheduled_at,
        "not_before": row.not_before,
        "started_at": row.started_at,
        "finished_at": row.finished_at,
        "duration_ms": None if duration is None else round(duration.total_seconds() * 1000, 3),
        "error": row.error,
        "worker": row.worker,
        "fence": row.fence,
        "prevented": row.prevented,
    }


#: Listed by /health as reasons for `degraded`, at most this many of each kind.
MAX_REASONS = 20


def overrunning_runs(engine: Engine, limit: int = MAX_REASONS) -> list[dict[str, Any]]:
    """Runs going on past their job's interval (or RUN_OVERRUN_SECONDS), oldest first."""
    query = (
        select(runs.c.id, runs.c.job_id, runs.c.started_at, runs.c.worker)
        .where(runs.c.status == OVERRUNNING)
        .order_by(runs.c.started_at)
        .limit(limit)
    )
    with engine.connect() as conn:
        return [dict(row._mapping) for row in conn.execute(query)]


def recently_skipped(engine: Engine, since: datetime, limit: int = MAX_REASONS) -> dict[str, int]:
    """Jobs with fires skipped since then (max_instances runs still going), and how many."""
    query = (
        select(runs.c.job_id, func.count())
        .where(runs.c.status == SKIPPED, runs.c.finished_at >= since)
        .group_by(runs.c.job_id)
        .order_by(func.count().desc())
        .limit(limit)
    )
    with engine.connect() as conn:
        return {job_id: count for job_id, count in conn.execute(query)}


def run_counts(since: datetime, until: datetime | None = None) -> dict[str, int]:
    """How many runs scheduled in [since, until) ended in each status. Call inside an app context."""
    engine = current_app.extensions[EXTENSION].engine
    query = select(runs.c.status, func.count()).where(runs.c.scheduled_at >= since).group_by(runs.c.status)
    if until is not None:
        query = query.where(runs.c.scheduled_at < until)
    with engine.connect() as conn:
        return {status: count for status, count in conn.execute(query)}


def purge_runs(older_than_days: int | None = None) -> int:
    """Delete finished runs older than this many days (default JOBSERVICE_RUN_RETENTION_DAYS).

    Deletes in batches so a large purge never holds long locks. Call inside an app context.
    """
    days = (
        older_than_days
        if older_than_days is not None
        else current_app.extensions[EXTENSION].settings.retention_days
    )
    cutoff = utcnow() - timedelta(days=days)
    return _delete_in_batches(runs.c.scheduled_at < cutoff)


def trim_runs(keep_per_job: int | None = None) -> int:
    """Keep only the newest `keep_per_job` runs of each job (default JOBSERVICE_RUN_RETENTION_PER_JOB)."""
    runtime = current_app.extensions[EXTENSION]
    keep = keep_per_job if keep_per_job is not None else runtime.settings.retention_per_job
    engine = runtime.engine
    crowded = select(runs.c.job_id).group_by(runs.c.job_id).having(func.count() > keep)
    with engine.connect() as conn:
        job_ids = list(conn.execute(crowded).scalars())
    total = 0
    for job_id in job_ids:
        oldest_kept = (
            select(runs.c.id)
            .where(runs.c.job_id == job_id)
            .order_by(runs.c.id.desc())
            .offset(keep - 1)
            .limit(1)
        )
        with engine.connect() as conn:
            threshold = conn.execute(oldest_kept).scalar()
        if threshold is not None:
            total += _delete_in_batches(runs.c.job_id == job_id, runs.c.id < threshold)
    return total


def _delete_in_batches(*conditions: Any) -> int:
    """Delete finished runs matching the conditions, a batch per transaction."""
    engine = current_app.extensions[EXTENSION].engine
    total = 0
    while True:
        began = time.monotonic()
        ids = select(runs.c.id).where(*conditions, runs.c.status.not_in(ACTIVE)).limit(PURGE_BATCH)
        with engine.begin() as conn:
            batch = [row[0] for row in conn.execute(ids)]
            if not batch:
                return total
            conn.execute(delete(runs).where(runs.c.id.in_(batch)))
        total += len(batch)
        # As long again before the next batch: deleting a million old runs reads their
        # index pages from disk, and back to back that starved the leader's passes (S7).
        _rest(min((time.monotonic() - began) * PURGE_PAUSE_RATIO, PURGE_MAX_PAUSE_S))


def _rest(seconds: float) -> None:
    """The purge's pause between batches (its own name: the tests count them)."""
    time.sleep(seconds)
