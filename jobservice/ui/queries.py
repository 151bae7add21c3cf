"""What the dashboard reads, each page in a few statements whatever the store holds:
a page of jobs with their last runs, a job's runs and counts, the cluster's state.

Filters run in the database (a job's function is a column; "failing" and "never run" are
subqueries on the (job_id, id) index), so 10 000 jobs cost the same as 10.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import exists, func, or_, select
from sqlalchemy.engine import Engine

from ..jobstore import ClusterJobStore, Entry
from ..models import jobs_table
from ..runs import last_runs, runs

PAGE_SIZE = 50
FILTERS = ("all", "paused", "failing", "never")
SORTS = ("next", "-next", "id")
#: Runs drawn in a job's chart.
CHART_RUNS = 50


@dataclass(frozen=True)
class JobQuery:
    """What the jobs view asks for: a search, a filter, an order and a page (from 1)."""

    search: str = ""
    show: str = "all"
    sort: str = "next"
    page: int = 1


@dataclass(frozen=True)
class JobPage:
    jobs: list[Entry]
    last_runs: dict[str, dict[str, Any]]
    total: int
    first: int


def job_page(store: ClusterJobStore, engine: Engine, query: JobQuery) -> JobPage:
    """One page of jobs, their newest runs and how many match: three statements."""
    t = jobs_table
    conditions = _conditions(query)
    with engine.connect() as conn:
        total = conn.execute(select(func.count()).select_from(t).where(*conditions)).scalar_one()
    paused_last = t.c.next_run_time.is_(None)
    order = {
        "next": (paused_last, t.c.next_run_time, t.c.id),
        "-next": (paused_last, t.c.next_run_time.desc(), t.c.id),
        "id": (t.c.id,),
    }[query.sort]
    offset = (query.page - 1) * PAGE_SIZE
    jobs = store.entries_where(*conditions, order=order, limit=PAGE_SIZE, offset=offset)
    return JobPage(jobs, last_runs(engine, [job.id for job in jobs]), total, offset + 1)


def _conditions(query: JobQuery) -> list[Any]:
    t = jobs_table
    conditions: list[Any] = []
    if query.search:
        conditions.append(
            or_(
                t.c.id.contains(query.search, autoescape=True),
                t.c.func_ref.contains(query.search, autoescape=True),
            )
        )
    if query.show == "paused":
        conditions.append(t.c.next_run_time.is_(None))
    elif query.show == "never":
        conditions.append(~exists().where(runs.c.job_id == t.c.id))
    elif query.show == "failing":
        # Every job's newest run in one uncorrelated subquery (a loose index scan of
        # (job_id, id)), not ORDER BY id DESC LIMIT 1 per job: MariaDB may run that one on the
        # claim index with a filesort per job (39 s at a million runs, bench/dashboard.py).
        newest = select(func.max(runs.c.id)).group_by(runs.c.job_id)
        failed = select(runs.c.job_id).where(runs.c.id.in_(newest), runs.c.status == "failed")
        conditions.append(t.c.id.in_(failed))
    return conditions


def prevented(engine: Engine, job_id: str) -> int:
    """Second claims of this job's fire times refused (a stale leader, a failover)."""
    # On (job_id, prevented): only the rows that prevented something are read.
    query = select(func.coalesce(func.sum(runs.c.prevented), 0)).where(
        runs.c.job_id == job_id, runs.c.prevented > 0
    )
    with engine.connect() as conn:
        return int(conn.execute(query).scalar_one())


def chart_points(items: list[dict[str, Any]]) -> list[dict[str, float]]:
    """Duration and lateness (ms) of the finished runs among these, oldest first."""
    points = []
    for run in reversed(items[:CHART_RUNS]):
        started, finished = run["started_at"], run["finished_at"]
        if started is None or finished is None:
            continue
        points.append(
            {
                "duration_ms": (finished - started).total_seconds() * 1000,
                "lateness_ms": max(0.0, (started - run["scheduled_at"]).total_seconds() * 1000),
            }
        )
    return points


def next_fire_times(job: Any, count: int = 10) -> list[datetime]:
    """The next `count` fire times of a scheduled job (none while it is paused)."""
    times: list[datetime] = []
    fire = job.next_run_time
    while fire is not None and len(times) < count:
        times.append(fire)
        fire = job.trigger.get_next_fire_time(fire, fire)
        if fire is not None and times and fire <= times[-1]:
            break
    return times
