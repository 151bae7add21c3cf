"""S3 (burst), S4 (steady) and M1 (memory) on one service.

Jobs are put in the store with SQL well before they are due, then the scheduler is woken
(jobservice and Flask-APScheduler by adding a never-due job through the API, plain
APScheduler by SIGUSR1), so insertion is not measured. jobservice's jobs get its default
misfire_grace_time (300 s). The peers' get no limit (None) so that they fire every job:
with APScheduler's default of 1 s a burst drops the fires it cannot start within a
second, which caps its makespan; `s3_burst(..., grace_s=APSCHEDULER_GRACE_S)` measures
that apart, for its drops.

CPU per fire is the scheduling process's own (jobservice's leader, APScheduler's process,
the naive worker): with a thread executor every job runs in it too.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text

from . import procs, profile
from .costs import Costs
from .deploy import Deployment
from .plan import Context
from .stats import duplicates, first_fires, in_window, lateness_figures
from .store import (
    JOBSERVICE_GRACE_S,
    Fire,
    count_fires,
    date_trigger,
    insert_jobs,
    interval_trigger,
    job_row,
    read_fires,
)

SETTLE_S = 1.0
#: S3 is over when every job fired, or nothing new fired for this long after the due time.
QUIET_S = 2.0
S3_TIMEOUT_S = 60.0
#: S4 waits this long after its window, then until no fire came for S4_QUIET_S (late fires count)
#: and, with RQ workers, until their queues are empty (a run that finds its job gone records
#: no fire), for at most the plan's late_wait_s.
S4_DRAIN_S = 1.0
S4_QUIET_S = 1.0


def grace_for(d: Deployment) -> int | None:
    return JOBSERVICE_GRACE_S if d.kind == "ours" else None


def worker_pid(d: Deployment) -> int:
    """The process that runs jobs: jobservice's leader, else the first worker/process."""
    pid = d.leader_pid() if d.kind == "ours" else None
    return pid if pid is not None else d.processes()[0]


def memory(d: Deployment) -> float | None:
    time.sleep(SETTLE_S)
    return procs.rss_mib(worker_pid(d))


def s3_burst(ctx: Context, d: Deployment, grace_s: int | None | str = "default") -> dict[str, Any]:
    """N date jobs due at the same instant; makespan and lateness from their fires.

    `grace_s`: the jobs' misfire_grace_time, if not the deployment's (`grace_for`)."""
    grace = grace_for(d) if grace_s == "default" else grace_s
    n, tag = ctx.plan.s3_jobs, f"S3:{d.variant}:{grace}"
    due = math.ceil(time.time() + ctx.plan.s3_lead_s)
    rows = (job_row(f"s3-{i}", date_trigger(due), due, [tag, f"s3-{i}", due], grace) for i in range(n))
    insert_jobs(d.store_url, rows, versioned=d.kind == "ours")
    d.kick()
    spy = _profile(ctx, d, "S3", due - 0.5, 8)
    procs.sleep_until(due)
    costs = costs_of(ctx, d)
    _wait_burst(ctx, tag, n, due)
    cost = costs.done(n)
    if spy is not None:
        profile.finish(spy)
    fires = read_fires(ctx.fires, tag)
    first = first_fires(fires)
    return {
        "jobs": n,
        "misfire_grace_time": grace,
        "fired": len(first),
        "dropped": n - len(first),
        "duplicates": duplicates(fires),
        "makespan_s": max((f.started for f in first), default=due) - due if first else None,
        **lateness_figures(first),
        **cost,
        "jobservice_runs": recorded_runs(d, "s3-"),
        **_profile_summary(ctx, d, "S3"),
    }


def _wait_burst(ctx: Context, tag: str, n: int, due: float) -> None:
    seen, changed = -1, time.time()
    procs.sleep_until(due)
    while time.time() < due + S3_TIMEOUT_S:
        count = count_fires(ctx.fires, tag)
        if count >= n:
            return
        if count != seen:
            seen, changed = count, time.time()
        elif time.time() - changed > QUIET_S:
            return
        time.sleep(0.25)


def recorded_runs(d: Deployment, prefix: str) -> dict[str, int]:
    """jobservice's own account of these jobs' runs: how many ended in each status (and why)."""
    if d.kind != "ours":
        return {}
    query = text(
        "SELECT status, COALESCE(LEFT(error, 40), ''), COUNT(*) FROM jobservice_runs "
        "WHERE job_id LIKE :prefix GROUP BY 1, 2"
    )
    engine = create_engine(d.store_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(query, {"prefix": prefix + "%"}).all()
    finally:
        engine.dispose()
    return {f"{status} {why}".strip(): count for status, why, count in rows}


def _wait_quiet(ctx: Context, d: Deployment, tag: str, after: float) -> None:
    """Wait until `after`, then until no new fire was recorded for S4_QUIET_S and nothing is
    left in the RQ workers' queues."""
    procs.sleep_until(after)
    seen, changed = count_fires(ctx.fires, tag), time.time()
    while time.time() < after + ctx.plan.late_wait_s:
        if time.time() - changed >= S4_QUIET_S and not d.rq_backlog():
            return
        time.sleep(0.25)
        count = count_fires(ctx.fires, tag)
        if count != seen:
            seen, changed = count, time.time()


def s4_steady(ctx: Context, d: Deployment, n: int) -> dict[str, Any]:
    """N interval jobs every second for the S4 window; fires per second and lateness."""
    tag, seconds = f"S4-{n}:{d.variant}", ctx.plan.s4_s
    start = math.ceil(time.time() + ctx.plan.s4_lead_s)
    end = start + seconds
    trigger = interval_trigger(start, 1.0, end - 0.5)  # exactly `seconds` fires per job
    rows = (
        job_row(f"s4-{n}-{i}", trigger, start, [tag, f"s4-{n}-{i}", start, 1.0], grace_for(d))
        for i in range(n)
    )
    insert_jobs(d.store_url, rows, versioned=d.kind == "ours")
    d.kick()
    spy = _profile(ctx, d, f"S4-{n}", start - 0.5, seconds + 1)
    procs.sleep_until(start)
    costs = costs_of(ctx, d)
    _wait_quiet(ctx, d, tag, end + S4_DRAIN_S)
    cost = costs.done(n * seconds)
    if spy is not None:
        profile.finish(spy)
    return {
        "n": n,
        **window_figures(in_window(read_fires(ctx.fires, tag), start, end), seconds, n),
        **cost,
        "jobservice_runs": recorded_runs(d, f"s4-{n}-"),
        **_profile_summary(ctx, d, f"S4-{n}"),
    }


def costs_of(ctx: Context, d: Deployment, sched_pid: int | None = None) -> Costs:
    """Costs from now: every process of the deployment, and the one that runs jobs apart
    (jobservice's leader, unless `sched_pid` is given: it is asked over HTTP)."""
    return Costs(ctx.dbs, d.processes(), d.job_processes(), sched_pid or worker_pid(d))


def window_figures(fires: list[Fire], seconds: int, per_s: int) -> dict[str, Any]:
    """S4's figures of a window of `seconds` in which `per_s` fire times were due each
    second, from the fires scheduled in it: fires/s against ideal, duplicates, lateness."""
    first = first_fires(fires)
    return {
        "seconds": seconds,
        "fires": len(fires),
        "ideal_fires": per_s * seconds,
        "fires_per_s": len(first) / seconds,
        "ideal_per_s": per_s,
        "share_of_ideal": len(first) / (per_s * seconds),
        "duplicates": duplicates(fires),
        **lateness_figures(first),
    }


def _profile_path(ctx: Context, d: Deployment, name: str) -> Path | None:
    if ctx.profile_dir is None or d.kind != "ours":
        return None
    return ctx.profile_dir / f"{name}-{d.variant}.txt"


def _profile(ctx: Context, d: Deployment, name: str, at: float, duration_s: int) -> Any:
    path = _profile_path(ctx, d, name)
    if path is None:
        return None
    procs.sleep_until(at)
    return profile.record(worker_pid(d), duration_s, path)


def _profile_summary(ctx: Context, d: Deployment, name: str) -> dict[str, Any]:
    path = _profile_path(ctx, d, name)
    return {} if path is None else {"profile": profile.summarize(path)}
