"""S1, S5 and S2 on one deployment of two gunicorn masters x 3 workers (or two plain processes).

One 1-second interval job runs throughout: S1 watches it, S2 strikes the process that runs
it, and S5 (after the struck master is started again) posts date jobs beside it. Peers get
the job in their store before they start, so every scheduler knows it (as with jobs declared
in config); jobservice gets it by POST.
"""

from __future__ import annotations

import math
import os
import signal
import time
from datetime import UTC, datetime
from typing import Any

from . import procs
from .costs import Costs
from .deploy import OURS_RQ, OURS_SPREAD, SPREAD_ENV, Deployment
from .plan import Context
from .rqworkers import NO_RQ
from .stats import duplicates, first_fires, in_window, largest_gap_s, lateness_figures
from .store import (
    APSCHEDULER_GRACE_S,
    JOB_FUNC,
    Fire,
    insert_jobs,
    interval_trigger,
    job_row,
    read_fires,
)

TICK_JOB = "tick"
#: Strike this long before a fire is due, so that fire falls inside the failover.
STRIKE_LEAD_S = 0.1
#: Before S5: let restarted workers settle, as they would have in a service that has been up.
WARM_UP_S = 1.0
#: S5 counts what fired this long after the last job was due (with RQ workers, also what they
#: ran from their queues until these were empty, at most the plan's late_wait_s more).
S5_DRAIN_S = 1.5
THREAD_DIED = "Exception in thread APScheduler"
#: How long S2 waits for /health to name a leader before striking nobody.
LEADER_WAIT_S = 3.0


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat()


def run_cluster(
    ctx: Context, kind: str, rq_workers: int = 0, spread: bool = False
) -> dict[str, dict[str, Any]]:
    """Start the deployment, run the selected scenarios of S1, S5, S2, stop it.

    With `rq_workers` (jobservice only) it runs its RQ executor, with that many RQ workers
    beside the two masters; S2 strikes the same processes (the RQ workers keep running).
    With `spread` (jobservice only) its thread executor spreads runs over every worker.
    """
    plain = kind == "plain"
    workers = 1 if plain else ctx.plan.cluster_workers
    variant = OURS_RQ if kind == "ours" and rq_workers else (OURS_SPREAD if spread else kind)
    env = SPREAD_ENV if spread else None
    d = ctx.deployment(kind, f"cluster-{variant}", masters=2, workers=workers, rq_workers=rq_workers, env=env)
    if rq_workers:
        d.start_tables()
        if not ctx.has_rq(d):
            return {s: {"not_applicable": NO_RQ} for s in ("S1", "S2", "S5") if ctx.wants(s)}
    tick_tag = f"tick:{variant}"
    start = math.ceil(time.time()) + 1
    if kind != "ours":
        d.start_tables()
        row = job_row(
            TICK_JOB,
            interval_trigger(start, 1.0),
            start,
            [tick_tag, TICK_JOB, start, 1.0],
            APSCHEDULER_GRACE_S,
        )
        insert_jobs(d.store_url, [row], versioned=False)
    results: dict[str, dict[str, Any]] = {}
    try:
        d.start()
        if kind == "ours":
            start = math.ceil(time.time()) + 1
            body = {"id": TICK_JOB, "func": JOB_FUNC, "args": [tick_tag, TICK_JOB, start, 1.0]}
            body |= {"trigger": "interval", "seconds": 1, "start_date": iso(start)}
            if d.post_job(body) != 200:
                raise RuntimeError(f"{d.name}: could not add the tick job\n{d.log_tail()}")
        ready = math.ceil(max(time.time(), start)) + 1
        if ctx.wants("S1"):
            results["S1"] = s1_duplicates(ctx, tick_tag, ready) | _deaths(d)
        if ctx.wants("S2"):
            procs.sleep_until(max(ready + 2, time.time()))
            results["S2"] = s2_failover(ctx, d, tick_tag) | _deaths(d)
        if ctx.wants("S5") and not plain:
            d.restart_stopped()  # S2 stopped a master: S5 posts across both again
            time.sleep(WARM_UP_S)
            results["S5"] = s5_propagation(ctx, d, f"S5:{variant}") | _deaths(d)
    finally:
        d.stop()
    return results


def _deaths(d: Deployment) -> dict[str, int]:
    """Scheduler threads of the peers that died so far (APScheduler lets an exception end them)."""
    return {} if d.kind == "ours" else {"scheduler_threads_died": d.count_in_logs(THREAD_DIED)}


def s1_duplicates(ctx: Context, tag: str, window_start: float) -> dict[str, Any]:
    """Fires, duplicates and the largest gap of the tick job over the S1 window."""
    window_end = window_start + ctx.plan.s1_s
    procs.sleep_until(window_end + 0.5)
    fires = in_window(read_fires(ctx.fires, tag), window_start, window_end)
    distinct = len(first_fires(fires))
    return {
        "fires": len(fires),
        "ideal": ctx.plan.s1_s,
        "duplicates": duplicates(fires),
        "missed": ctx.plan.s1_s - distinct,
        "largest_gap_s": largest_gap_s(fires),
        "pids": len({f.pid for f in fires}),
    }


def s5_propagation(ctx: Context, d: Deployment, tag: str) -> dict[str, Any]:
    """Post date jobs to random masters, each due 1 s after its POST; count what fired."""
    n, statuses = ctx.plan.s5_jobs, []
    last_due = time.time()
    costs = Costs(ctx.dbs, d.processes(), d.job_processes())
    for i in range(n):
        job_id = f"s5-{i}"
        due = time.time() + 1.0
        body = {
            "id": job_id,
            "func": JOB_FUNC,
            "args": [tag, job_id, due],
            "trigger": "date",
            "run_date": iso(due),
        }
        try:
            statuses.append(d.post_job(body))
        except OSError:
            statuses.append(0)
        last_due = due
    procs.sleep_until(last_due + S5_DRAIN_S)
    rq_waited = d.drain_rq(ctx.plan.late_wait_s) if d.rq else None
    cost = costs.done(n, "job")
    fires = read_fires(ctx.fires, tag)
    first = first_fires(fires)
    return {
        "posted": n,
        "accepted": sum(s == 200 for s in statuses),
        "fired": len(first),
        "duplicates": duplicates(fires),
        "never_fired": n - len(first),
        **lateness_figures(first),
        **cost,
        **({} if rq_waited is None else {"rq_waited_after_drain_s": rq_waited}),
    }


def s2_failover(ctx: Context, d: Deployment, tag: str) -> dict[str, Any]:
    """kill -9 the process that runs the tick job, later SIGTERM the master of the one that
    runs it then; each strike comes just before a fire is due."""
    observe_s = ctx.plan.s2_observe_s
    out: dict[str, Any] = {}
    victim = _runner(ctx, d, tag)
    t1 = _strike(victim, signal.SIGKILL)
    out["kill9_pid"] = victim
    procs.sleep_until(t1 + observe_s)
    out["kill9_next_fire_s"] = _next_fire_after(ctx, tag, t1) if victim is not None else None
    if victim is None:
        out["kill9_note"] = "not struck: no process runs the job"
    t_end = t1 + observe_s
    runner = _runner(ctx, d, tag)
    master = d.master_of(runner) if runner is not None else None
    if master is not None:
        t2 = _strike(master.pid, signal.SIGTERM)
        out["sigterm_master_pid"] = master.pid
        procs.sleep_until(t2 + observe_s)
        out["sigterm_next_fire_s"] = _next_fire_after(ctx, tag, t2)
        t_end = t2 + observe_s
    else:
        out["sigterm_next_fire_s"] = None
        out["sigterm_note"] = "n/a: no gunicorn master"
    fires = [f for f in read_fires(ctx.fires, tag) if f.sched is not None and t1 < f.sched <= t_end - 1]
    slots = range(math.ceil(t1), math.floor(t_end - 1) + 1)
    fired_slots = {round(f.sched) for f in fires if f.sched is not None}
    out.update(
        fires=len(fires),
        duplicates=duplicates(fires),
        missed_slots=sum(1 for s in slots if s not in fired_slots),
        slots=len(slots),
        observe_s=observe_s,
    )
    return out


def _runner(ctx: Context, d: Deployment, tag: str) -> int | None:
    """jobservice's leader from /health; for a peer, the process of the latest fire."""
    if d.kind == "ours":
        deadline = time.time() + LEADER_WAIT_S
        while (leader := d.leader_pid()) is None and time.time() < deadline:
            time.sleep(0.1)
        return leader
    fires = read_fires(ctx.fires, tag)
    alive = set(d.processes())
    latest = [f for f in fires if f.pid in alive]
    return latest[-1].pid if latest else None


def _strike(pid: int | None, signum: int) -> float:
    """Send the signal STRIKE_LEAD_S before the next whole second (when the tick is due)."""
    due = math.ceil(time.time() + 0.3)
    procs.sleep_until(due - STRIKE_LEAD_S)
    if pid is not None:
        os.kill(pid, signum)
    return time.time()


def _next_fire_after(ctx: Context, tag: str, t: float) -> float | None:
    later: list[Fire] = [f for f in read_fires(ctx.fires, tag) if f.started > t]
    return min(f.started for f in later) - t if later else None
