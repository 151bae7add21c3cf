"""S7, scale of the store: the same steady load on a small store and on a large one.

Two jobservice deployments (1 master x 4 workers, thread executor, as S3/S4), one per
store, the small one first; each gets RUN_RETENTION_DAYS=30 and RUN_RETENTION_PER_JOB=10 000 000
(the age limit alone purges), and its maintenance job is paused through the API as soon as it
is up, so that it runs only when asked (run-now still runs a paused job).

* Run history, seeded with SQL before the deployment starts: `INSERT ... SELECT` from
  MariaDB's SEQUENCE engine, a million rows a statement, with the table's secondary
  indexes dropped first and added back after (one sort per index instead of random
  inserts into a 128 MiB buffer pool; the table's definition is checked to be exactly
  the migrations' again), then ANALYZE. Finished runs (`succeeded`, started and finished,
  a claim token shared by 100 runs as a pass would), one timeline in id order: the old
  ones 45 to 40 days ago, the rest from 29 days ago to 10 minutes ago; every 100th run is
  the "hot" job's (`s7-000000`), the others go round every job of the store.
* Jobs, inserted with SQL as S4's (pickled interval jobs, `bench/store.py`): the small store
  has `due_per_s` jobs every 1 s; the large one `s7_jobs` jobs every s7_jobs / due_per_s
  seconds, staggered by whole seconds, so the same `due_per_s` are due each second and
  the rest are not. They fire from then on until the deployment stops.
* Per store: a window of `s7_s` steady seconds (lateness of the fire times due in it, the
  leader's CPU per fire: jobservice has no pass-duration figure); the first pages of
  `GET /scheduler/runs` and of the hot job's runs, timed while the jobs keep firing; the
  EXPLAIN (ANALYZE for SELECTs, which only read) of the leader's, the API's and the
  maintenance job's statements, written here as the service sends them.
* Large store only, last: `POST /scheduler/jobs/jobservice-maintenance/run` on a whole
  second; the window is from then to the run's end (its row in the history), against the
  steady window of the same store; old runs counted before and after.
"""

from __future__ import annotations

import math
import re
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import create_engine
from sqlalchemy.engine import Connection, Engine

from . import procs
from .api import timed_get
from .deploy import Deployment
from .plan import Context
from .report import fmt
from .service import costs_of, window_figures, worker_pid
from .store import JOBSERVICE_GRACE_S, insert_jobs, interval_trigger, job_row, read_fires

RETENTION_DAYS = 30
SERVICE_ENV = {"RUN_RETENTION_DAYS": str(RETENTION_DAYS), "RUN_RETENTION_PER_JOB": "10000000"}
MAINTENANCE = "jobservice-maintenance"
#: Scheduled times of the old runs (before now) and of the others.
OLD_SPAN = (timedelta(days=45), timedelta(days=40))
RECENT_SPAN = (timedelta(days=29), timedelta(minutes=10))
#: Every HOT_EVERY-th run of the history is the hot job's.
HOT_EVERY = 100
HOT_JOB = "s7-000000"
SEED_CHUNK = 1_000_000
#: Runs sharing one claim token in the seeded history (a pass claims up to 100 at once).
CLAIM_EVERY = 100
PAGE = 100
#: The jobs are first due this long after they are put in the store (at about this many a
#: second), and the first window starts SETTLE_S after that.
LEAD_S = 3.0
JOB_INSERT_RATE = 10_000.0
SETTLE_S = 5.0
REQUEST_TIMEOUT_S = 30.0
#: Before each store's deployment starts, MariaDB must use under DB_IDLE_CPU of a core
#: for DB_IDLE_S (waited for at most DB_SETTLE_MAX_S).
DB_IDLE_CPU = 0.1
DB_IDLE_S = 2.0
DB_SETTLE_MAX_S = 300.0
POLL_S = 0.5
CLAIM_POLL_S = 2.0
#: During the purge, a snapshot of the leader's backlog this often.
SNAPSHOT_EVERY_S = 15.0
#: After the last fire time of a window started, for its fire to be recorded.
QUIET_S = 1.0
#: A plan row is a full scan when it reads the whole table or index this big.
FULL_SCAN_ROWS = 100_000
KEY_LINE = re.compile(r"\s*(UNIQUE )?KEY `")
AUTO_INCREMENT = re.compile(r" AUTO_INCREMENT=\d+")
ENDED = ("succeeded", "failed", "missed", "skipped")


@dataclass(frozen=True)
class Store:
    """One store size: its jobs (every `every_s` seconds) and its run history."""

    name: str
    jobs: int
    every_s: int
    history: int
    old_runs: int

    @property
    def tag(self) -> str:
        return f"S7:{self.name}"


def job_id(i: int) -> str:
    return f"s7-{i:06d}"


def log(message: str) -> None:
    print(f"[S7] {message}", file=sys.stderr, flush=True)


def s7_scale(ctx: Context) -> dict[str, dict[str, dict[str, Any]]]:
    """The small store, then the large one with its purge; results for the table."""
    plan = ctx.plan
    if plan.s7_jobs % plan.s7_due_per_s:
        raise ValueError("s7_jobs must be a multiple of s7_due_per_s")
    small = Store("small", plan.s7_due_per_s, 1, plan.s7_small_history, 0)
    large = Store("large", plan.s7_jobs, plan.s7_jobs // plan.s7_due_per_s, plan.s7_history, plan.s7_old_runs)
    with ctx.dbs.engine.connect() as conn:
        settings = dict(
            conn.exec_driver_sql(
                "SELECT 'innodb_buffer_pool_size', @@innodb_buffer_pool_size UNION ALL "
                "SELECT 'innodb_flush_method', @@innodb_flush_method"
            ).all()
        )
    small_figures = measure_store(ctx, small, purge=False)
    large_figures = measure_store(ctx, large, purge=True)
    purge = large_figures.pop("purge")
    large_figures["mariadb_settings"] = settings
    return {
        "S7": {"ours": large_figures, "small": small_figures},
        "S7-purge": {"ours": purge, "large_steady": large_figures},
    }


def measure_store(ctx: Context, store: Store, purge: bool) -> dict[str, Any]:
    """Seed, start, measure (steady window, first pages, EXPLAIN, and the purge if asked), stop."""
    workers = ctx.plan.service_workers
    d = ctx.deployment("ours", f"scale-{store.name}", 1, workers, env=SERVICE_ENV)
    d.start_tables()
    log(f"{store.name}: seeding {store.history:,} runs ({store.old_runs:,} old)")
    seeding = seed_history(d.store_url, store, datetime.now(UTC))
    log(f"{store.name}: seeded in {seeding['seed_s']:.1f} s ({seeding})")
    settled_s = settle_db(ctx)
    log(f"{store.name}: MariaDB idle after {settled_s:.0f} s")
    d.start()
    try:
        status, _ = procs.http("POST", d.masters[0].url(f"/scheduler/jobs/{MAINTENANCE}/pause"))
        if status != 200:
            raise RuntimeError(f"pausing {MAINTENANCE}: HTTP {status}")
        first_due, jobs_s = insert_store_jobs(d, store, ctx.plan.s7_due_per_s)
        log(
            f"{store.name}: {store.jobs:,} jobs inserted in {jobs_s:.1f} s, "
            f"first due in {first_due - time.time():.1f} s"
        )
        leader = worker_pid(d)
        start = math.ceil(max(first_due, time.time()) + SETTLE_S)
        out: dict[str, Any] = {
            "store": store.__dict__,
            "due_per_s": ctx.plan.s7_due_per_s,
            **seeding,
            "db_settle_s": settled_s,
            "jobs_insert_s": round(jobs_s, 1),
            **steady_window(ctx, d, store, start, ctx.plan.s7_s, leader),
        }
        log(
            f"{store.name}: steady p50 {fmt(out['p50_late_ms'], 'ms')}, p99 {fmt(out['p99_late_ms'], 'ms')}, "
            f"{fmt(out.get('sched_cpu_ms_per_fire'), 'ms')} leader CPU per fire"
        )
        out |= first_pages(ctx, d)
        log(
            f"{store.name}: /scheduler/runs p50 {fmt(out['runs_p50_ms'], 'ms')}, "
            f"a job's runs p50 {fmt(out['job_runs_p50_ms'], 'ms')}"
        )
        out["explain"] = explain_all(d.store_url, store, ctx.plan.s7_due_per_s)
        if purge:
            out["purge"] = purge_window(ctx, d, store, leader, out["p99_late_ms"])
        out["jobservice_runs"] = runs_since_seeding(d.store_url, store)
        return out
    finally:
        d.stop()


# Seeding -------------------------------------------------------------------------------------


def _db_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def _segments(store: Store, now: datetime) -> list[tuple[int, int, datetime, int]]:
    """(first seq, last seq, scheduled time of the first, microseconds between runs) for the
    old runs, then the others."""
    out = []
    recent = store.history - store.old_runs
    for first, count, (since, until) in (
        (1, store.old_runs, OLD_SPAN),
        (store.old_runs + 1, recent, RECENT_SPAN),
    ):
        if count > 0:
            step_us = max(int((since - until).total_seconds() * 1_000_000 / count), 1)
            out.append((first, first + count - 1, now - since, step_us))
    return out


def _insert_sql(lo: int, hi: int, first: int, base: datetime, step_us: int, jobs: int) -> str:
    """Runs seq lo..hi of a segment, as the service leaves a finished scheduled run."""
    sched = f"TIMESTAMP'{_db_time(base)}' + INTERVAL (seq - {first}) * {step_us} MICROSECOND"
    return f"""
INSERT INTO jobservice_runs (id, job_id, `trigger`, scheduled_at, attempt, status, claim, fence,
    worker, started_at, finished_at, error, prevented, created_at, updated_at)
SELECT id, job_id, 'scheduled', sched, 1, 'succeeded', claim, 1, worker,
    sched + INTERVAL lag_us MICROSECOND, sched + INTERVAL lag_us + took_us MICROSECOND, NULL, 0,
    sched, sched + INTERVAL lag_us + took_us MICROSECOND
FROM (
    SELECT seq AS id,
        IF(seq MOD {HOT_EVERY} = 0, '{HOT_JOB}', CONCAT('s7-', LPAD(seq MOD {jobs}, 6, '0'))) AS job_id,
        {sched} AS sched,
        LPAD(LOWER(HEX(seq DIV {CLAIM_EVERY})), 16, '0') AS claim,
        CONCAT('web-1:', 2000 + seq DIV 1000000) AS worker,
        2000 + (seq MOD 40) * 1000 AS lag_us,
        5000 + (seq MOD 200) * 1000 AS took_us
    FROM seq_{lo}_to_{hi}
) AS g"""


def _ddl(conn: Connection) -> str:
    return str(conn.exec_driver_sql("SHOW CREATE TABLE jobservice_runs").one()[1])


def seed_history(url: str, store: Store, now: datetime) -> dict[str, Any]:
    """Fill the (empty) run history; returns the timings and a check of what is there."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            ddl = _ddl(conn)
        keys = [line.strip().rstrip(",") for line in ddl.splitlines() if KEY_LINE.match(line)]
        names = [key.split("`")[1] for key in keys]
        began = time.monotonic()
        with engine.connect() as conn:
            conn.exec_driver_sql(
                "ALTER TABLE jobservice_runs " + ", ".join(f"DROP INDEX `{n}`" for n in names)
            )
            for first, last, base, step_us in _segments(store, now):
                for lo in range(first, last + 1, SEED_CHUNK):
                    hi = min(lo + SEED_CHUNK - 1, last)
                    conn.exec_driver_sql(_insert_sql(lo, hi, first, base, step_us, store.jobs))
                    conn.commit()  # a million rows a transaction
        inserted = time.monotonic()
        with engine.connect() as conn:
            conn.exec_driver_sql("ALTER TABLE jobservice_runs " + ", ".join(f"ADD {k}" for k in keys))
        indexed = time.monotonic()
        with engine.connect() as conn:
            if AUTO_INCREMENT.sub("", _ddl(conn)) != AUTO_INCREMENT.sub("", ddl):
                raise RuntimeError(
                    f"jobservice_runs after seeding differs from the migrations':\n{_ddl(conn)}"
                )
            conn.exec_driver_sql("ANALYZE TABLE jobservice_runs").all()
        done = time.monotonic()
        return {
            "seed_s": round(done - began, 1),
            "seed_insert_s": round(inserted - began, 1),
            "seed_indexes_s": round(indexed - inserted, 1),
            "seed_analyze_s": round(done - indexed, 1),
            "seeded": check_seeded(engine, store, now),
        }
    finally:
        engine.dispose()


def check_seeded(engine: Engine, store: Store, now: datetime) -> dict[str, Any]:
    """Counts, and a sample row of each segment, checked to look like real finished runs."""
    cutoff = _db_time(now - timedelta(days=RETENTION_DAYS))
    sample_ids = sorted({1, max(store.old_runs, 1), store.old_runs + 1, store.history})
    with engine.connect() as conn:
        total = conn.exec_driver_sql("SELECT COUNT(*) FROM jobservice_runs").scalar_one()
        old = conn.exec_driver_sql(
            f"SELECT COUNT(*) FROM jobservice_runs WHERE scheduled_at < '{cutoff}'"
        ).scalar_one()
        hot = conn.exec_driver_sql(
            f"SELECT COUNT(*) FROM jobservice_runs WHERE job_id = '{HOT_JOB}'"
        ).scalar_one()
        rows = conn.exec_driver_sql(
            "SELECT id, job_id, `trigger`, scheduled_at, status, claim, started_at, finished_at, worker "
            f"FROM jobservice_runs WHERE id IN ({', '.join(map(str, sample_ids))}) ORDER BY id"
        ).all()
    for row in rows:
        if not (row.status == "succeeded" and row.started_at and row.finished_at and len(row.claim) == 16):
            raise RuntimeError(f"a seeded run does not look finished: {row}")
        if not row.scheduled_at < row.started_at < row.finished_at < now.replace(tzinfo=None):
            raise RuntimeError(f"a seeded run's times are out of order: {row}")
    if total != store.history or old != store.old_runs:
        raise RuntimeError(f"seeded {total} runs, {old} old; wanted {store.history}, {store.old_runs}")
    return {
        "runs": total,
        "old_runs": old,
        "hot_job": HOT_JOB,
        "hot_job_runs": hot,
        "sample": [f"{r.id} {r.job_id} {r.scheduled_at} {r.status} claim={r.claim}" for r in rows],
    }


def settle_db(ctx: Context) -> float:
    """Wait until MariaDB is idle (under 10 % of a core for 2 s, at most 5 min): after a
    bulk load, or a database dropped before, it flushes and purges for a while, and a
    window must not measure that. Returns the seconds waited."""
    pid, began = ctx.dbs.server_pid(), time.monotonic()
    while pid is not None and time.monotonic() - began < DB_SETTLE_MAX_S:
        before = procs.cpu_seconds(pid) or 0.0
        time.sleep(DB_IDLE_S)
        if (procs.cpu_seconds(pid) or 0.0) - before < DB_IDLE_CPU * DB_IDLE_S:
            break
    return round(time.monotonic() - began, 1)


# Jobs and windows ----------------------------------------------------------------------------


def insert_store_jobs(d: Deployment, store: Store, due_per_s: int) -> tuple[int, float]:
    """The store's interval jobs, `due_per_s` of them first due on each whole second from
    the first due time (returned, with the insert's seconds)."""
    first_due = math.ceil(time.time() + LEAD_S + store.jobs / JOB_INSERT_RATE)

    def row(i: int) -> tuple:
        first = first_due + i // due_per_s
        trigger = interval_trigger(first, store.every_s)
        return job_row(
            job_id(i), trigger, first, [store.tag, job_id(i), first, store.every_s], JOBSERVICE_GRACE_S
        )

    began = time.monotonic()
    insert_jobs(d.store_url, (row(i) for i in range(store.jobs)), versioned=True)
    d.kick()
    return first_due, time.monotonic() - began


def _claimed(engine: Engine, start: float, end: float) -> tuple[dict[str, int], int]:
    """jobservice's own account of the fire times due in [start, end): its runs by status (a
    fire time it has not reached yet has no row; one started past its grace is `missed`),
    and how many of them are claimed but not started yet."""
    since, until = (_db_time(datetime.fromtimestamp(t, UTC)) for t in (start, end))
    with engine.connect() as conn:
        rows = conn.exec_driver_sql(
            "SELECT status, COUNT(*), SUM(started_at IS NULL) FROM jobservice_runs "
            f"WHERE `trigger` = 'scheduled' AND scheduled_at >= '{since}' AND scheduled_at < '{until}' "
            "GROUP BY status"
        ).all()
    unstarted = sum(int(n or 0) for status, _, n in rows if status == "running")
    return {str(status): int(count) for status, count, _ in rows}, unstarted


def wait_window(
    ctx: Context, d: Deployment, store: Store, start: int, end: int, cap_s: float
) -> dict[str, int]:
    """Wait until jobservice has claimed every fire time due in [start, end) and started
    (or missed, or skipped) each, at most `cap_s` past `end`, then QUIET_S for the last
    fires to be recorded; returns jobservice's runs of those fire times by status."""
    ideal = ctx.plan.s7_due_per_s * (end - start)
    engine = create_engine(d.store_url)
    try:
        procs.sleep_until(end)
        while True:
            runs, unstarted = _claimed(engine, start, end)
            if (sum(runs.values()) >= ideal and not unstarted) or time.time() > end + cap_s:
                break
            time.sleep(CLAIM_POLL_S)
        time.sleep(QUIET_S)  # a started run records its fire right away
        return _claimed(engine, start, end)[0]
    finally:
        engine.dispose()


INNODB = ("Innodb_buffer_pool_reads", "Innodb_data_writes", "Innodb_row_lock_waits", "Innodb_row_lock_time")


def innodb(ctx: Context) -> dict[str, float]:
    """MariaDB's InnoDB counters (server-wide): pages read from disk, writes, row lock waits."""
    names = ", ".join(f"'{n}'" for n in INNODB)
    with ctx.dbs.engine.connect() as conn:
        rows = conn.exec_driver_sql(f"SHOW GLOBAL STATUS WHERE Variable_name IN ({names})").all()
    return {str(name): float(value) for name, value in rows} | {"at": time.monotonic()}


def innodb_figures(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    seconds = max(after["at"] - before["at"], 1e-9)
    delta = {name: after.get(name, 0.0) - before.get(name, 0.0) for name in INNODB}
    return {
        "db_disk_reads_per_s": round(delta["Innodb_buffer_pool_reads"] / seconds, 1),
        "db_writes_per_s": round(delta["Innodb_data_writes"] / seconds, 1),
        "db_row_lock_waits": int(delta["Innodb_row_lock_waits"]),
        "db_row_lock_wait_ms": int(delta["Innodb_row_lock_time"]),
    }


def _window_result(
    ctx: Context, store: Store, start: int, end: int, cost: dict[str, Any], runs: dict[str, int]
) -> dict[str, Any]:
    fires = read_fires(ctx.fires, store.tag, start, end)
    return {
        **window_figures(fires, end - start, ctx.plan.s7_due_per_s),
        "missed": runs.get("missed", 0),
        "jobservice_window_runs": runs,
        **cost,
        "window": [start, end],
    }


def steady_window(
    ctx: Context, d: Deployment, store: Store, start: int, seconds: int, leader: int
) -> dict[str, Any]:
    """S4's figures for the fire times due in [start, start + seconds): the jobs fire all
    along, so the CPU over the window is that of its fires."""
    per_s, end = ctx.plan.s7_due_per_s, start + seconds
    procs.sleep_until(start)
    costs, counters = costs_of(ctx, d, leader), innodb(ctx)
    procs.sleep_until(end)
    cost = costs.done(per_s * seconds) | innodb_figures(counters, innodb(ctx))
    runs = wait_window(ctx, d, store, start, end, ctx.plan.late_wait_s)
    return _window_result(ctx, store, start, end, cost, runs)


def first_pages(ctx: Context, d: Deployment) -> dict[str, Any]:
    """First page (100) of the whole history and of the hot job's runs, p50/p99."""
    port, n = d.masters[0].port, ctx.plan.s7_requests
    runs = timed_get(port, f"/scheduler/runs?limit={PAGE}", n, REQUEST_TIMEOUT_S, expect=PAGE)
    job = timed_get(port, f"/scheduler/jobs/{HOT_JOB}/runs?limit={PAGE}", n, REQUEST_TIMEOUT_S, expect=PAGE)
    return {**{f"runs_{k}": v for k, v in runs.items()}, **{f"job_runs_{k}": v for k, v in job.items()}}


def runs_since_seeding(url: str, store: Store) -> dict[str, int]:
    """How the runs of this deployment ended (they follow the seeded ids): status and why."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.exec_driver_sql(
                "SELECT status, COALESCE(LEFT(error, 40), ''), COUNT(*) FROM jobservice_runs "
                f"WHERE id > {store.history} GROUP BY 1, 2"
            ).all()
    finally:
        engine.dispose()
    return {f"{status} {why}".strip(): count for status, why, count in rows}


# The purge ---------------------------------------------------------------------------------


def _maintenance_run(conn: Connection) -> Any:
    return conn.exec_driver_sql(
        "SELECT id, status, started_at, finished_at, error FROM jobservice_runs "
        f"WHERE job_id = '{MAINTENANCE}' ORDER BY id DESC LIMIT 1"
    ).first()


def _old_count(engine: Engine) -> int:
    cutoff = _db_time(datetime.now(UTC) - timedelta(days=RETENTION_DAYS))
    with engine.connect() as conn:
        return int(
            conn.exec_driver_sql(
                f"SELECT COUNT(*) FROM jobservice_runs WHERE scheduled_at < '{cutoff}'"
            ).scalar_one()
        )


def purge_window(
    ctx: Context, d: Deployment, store: Store, leader: int, steady_p99_ms: float | None
) -> dict[str, Any]:
    """Run the maintenance job now, on a whole second; S4's figures from then to its end."""
    per_s = ctx.plan.s7_due_per_s
    engine = create_engine(d.store_url)
    try:
        old_before = _old_count(engine)
        start = math.ceil(time.time()) + 1
        procs.sleep_until(start)
        costs, counters = costs_of(ctx, d, leader), innodb(ctx)
        status, _ = procs.http("POST", d.masters[0].url(f"/scheduler/jobs/{MAINTENANCE}/run"))
        if status != 200:
            raise RuntimeError(f"run-now of {MAINTENANCE}: HTTP {status}")
        log(f"{store.name}: purge of {old_before:,} old runs requested")
        run, snapshots = None, []
        while time.time() < start + ctx.plan.s7_purge_timeout_s:
            time.sleep(POLL_S)
            with engine.connect() as conn:
                run = _maintenance_run(conn)
            if run is not None and run.status in ENDED:
                break
            if time.time() - start >= SNAPSHOT_EVERY_S * len(snapshots) + SNAPSHOT_EVERY_S / 2:
                snapshots.append(snapshot(engine, d, start))
                log(f"{store.name}: during the purge: {snapshots[-1]}")
        observed = time.time()
        cost = costs.done(max(round(per_s * (observed - start)), 1)) | innodb_figures(counters, innodb(ctx))
        if run is None or run.status not in ENDED:
            raise RuntimeError(f"{MAINTENANCE} did not end within {ctx.plan.s7_purge_timeout_s:.0f} s: {run}")
        finished = run.finished_at.replace(tzinfo=UTC).timestamp()
        end = max(math.floor(finished), start + 1)
        # A fire time the leader reaches more than its grace (300 s) late is missed, not run.
        runs = wait_window(ctx, d, store, start, end, JOBSERVICE_GRACE_S + ctx.plan.late_wait_s)
        result = _window_result(ctx, store, start, end, cost, runs)
        head_end = start + min(ctx.plan.s7_s, end - start)
        fires = read_fires(ctx.fires, store.tag, start, head_end)
        head = window_figures(fires, head_end - start, per_s)
        recovered = recovered_after(ctx, store, end, 2 * (steady_p99_ms or 0.0))
        old_after = _old_count(engine)
        after = snapshot(engine, d, start)
    finally:
        engine.dispose()
    started = run.started_at.replace(tzinfo=UTC).timestamp() if run.started_at else None
    out = {
        **result,
        "maintenance_status": run.status,
        "maintenance_error": (run.error or "")[:500] or None,
        "request_to_start_s": None if started is None else round(started - start, 3),
        "purge_s": None if started is None else round(finished - started, 3),
        "old_runs_before": old_before,
        "old_runs_after": old_after,
        "deleted": old_before - old_after,
        "first_s": head_end - start,
        "first_p50_late_ms": head["p50_late_ms"],
        "first_p99_late_ms": head["p99_late_ms"],
        "recovered_after_s": recovered,
        "leader_before": leader,
        "leaders_seen": sorted({x["leader"] for x in [*snapshots, after] if x["leader"]}),
        "during": snapshots,
        "after": after,
        "max_unstarted_claims": max((x["unstarted_claims"] for x in snapshots), default=0),
        "pending_full_scan_seen": any(x["pending_full_scan"] for x in snapshots),
    }
    log(
        f"{store.name}: purge {run.status}, {out['deleted']:,} deleted in {out['purge_s']} s, "
        f"p99 lateness {fmt(out['p99_late_ms'], 'ms')}, {out['missed']} missed"
    )
    return out


# EXPLAIN -------------------------------------------------------------------------------------


RUN_COLUMNS = (
    "id, job_id, `trigger`, scheduled_at, attempt, not_before, status, claim, fence, worker, "
    "started_at, finished_at, error, prevented, created_at, updated_at, job_state"
)
ACTIVE_SQL = "'running', 'overrunning'"


def recovered_after(ctx: Context, store: Store, end: int, limit_ms: float) -> float | None:
    """Seconds from the purge's end to the first whole second after it whose fire times all
    fired within `limit_ms` (at least 1 s); None if none has yet."""
    per_s, limit_s = ctx.plan.s7_due_per_s, max(limit_ms, 1000.0) / 1000
    now = int(time.time())
    by_second: dict[int, list[float]] = {}
    for fire in read_fires(ctx.fires, store.tag, end, now - 1):
        if fire.sched is not None:
            by_second.setdefault(math.floor(fire.sched + 1e-6), []).append(fire.started - fire.sched)
    for second in range(end, now - 1):
        late = by_second.get(second, [])
        if len(late) >= per_s and max(late) <= limit_s:
            return float(second - end)
    return None


def pending_sql(now: datetime, fence: int) -> str:
    """ledger.pending: runs nobody started (requested, another leader's, or left behind
    LEFT_BEHIND_S = 2 s ago), oldest first; the leader runs it every pass."""
    left_behind = _db_time(now - timedelta(seconds=2))
    return (
        "SELECT job_id, `trigger`, scheduled_at, attempt, claim FROM jobservice_runs "
        "FORCE INDEX (ix_jobservice_runs_status_started_at) "  # as jobservice sends it
        "WHERE status = 'running' AND started_at IS NULL "
        f"AND (fence IS NULL OR fence != {fence} OR updated_at < '{left_behind}') "
        f"AND (not_before IS NULL OR not_before <= '{_db_time(now)}') ORDER BY id LIMIT 1000"
    )


def snapshot(engine: Engine, d: Deployment, start: float) -> dict[str, Any]:
    """During the purge: who leads, the claimed runs not started yet, and the plan (EXPLAIN
    only: ANALYZE would run it) of the leader's query for them, which grows with them."""
    with engine.connect() as conn:
        unstarted = conn.exec_driver_sql(
            "SELECT COUNT(*) FROM jobservice_runs WHERE status = 'running' AND started_at IS NULL"
        ).scalar_one()
        fence = conn.exec_driver_sql("SELECT fence FROM jobservice_runs ORDER BY id DESC LIMIT 1").scalar()
        sql = "EXPLAIN " + pending_sql(datetime.now(UTC), fence or 1)
        plan = [dict(r._mapping) for r in conn.exec_driver_sql(sql)]
    return {
        "at_s": round(time.time() - start, 1),
        "leader": d.leader_pid(),
        "unstarted_claims": int(unstarted),
        "pending_plan": summarize(plan, None),
        "pending_full_scan": any(_full_scan(r) for r in plan),
    }


def statements(engine: Engine, store: Store, due_per_s: int) -> list[tuple[str, str, bool]]:
    """(name, SQL, read-only) of the statements that matter at scale, as the service sends
    them (SQLAlchemy's MariaDB rendering, columns unqualified, values for the parameters)."""
    now = datetime.now(UTC)
    ts, second = now.timestamp(), int(now.timestamp())
    now_s, cutoff = _db_time(now), _db_time(now - timedelta(days=RETENTION_DAYS))
    with engine.connect() as conn:
        newest = conn.exec_driver_sql(
            "SELECT id, claim, fence FROM jobservice_runs ORDER BY id DESC LIMIT 100"
        ).all()
    fence = max((row.fence or 0 for row in newest), default=1)
    ids = ", ".join(str(row.id) for row in newest)
    pairs = ", ".join(f"({row.id}, '{row.claim}')" for row in newest)
    token = next((row.claim for row in newest if row.claim), "0" * 16)
    offset = second % store.every_s
    due = [job_id(offset * due_per_s + i) for i in range(min(100, due_per_s))]
    jobs_in = ", ".join(f"'{j}'" for j in due)
    versions = ", ".join(f"('{j}', 1)" for j in due)
    outcome = " UNION ALL ".join(
        [f"SELECT {newest[0].id} AS id, 'succeeded' AS status, '{now_s}' AS finished_at, NULL AS error"]
        + [f"SELECT {row.id}, 'succeeded', '{now_s}', NULL" for row in newest[1:]]
    )
    jobs = "SELECT id, next_run_time, job_state, version FROM apscheduler_jobs"
    return [
        (
            "leader: due jobs, first chunk (jobstore.due_chunks)",
            f"{jobs} WHERE next_run_time <= {ts} ORDER BY next_run_time, id LIMIT 0, 100",
            True,
        ),
        (
            "leader: due jobs, next chunk (jobstore.due_chunks)",
            f"{jobs} WHERE next_run_time <= {ts} AND (next_run_time > {second} OR "
            f"next_run_time = {second} AND id > '{due[-1]}') ORDER BY next_run_time, id LIMIT 0, 100",
            True,
        ),
        (
            "leader: next run time (jobstore.get_next_run_time)",
            "SELECT next_run_time FROM apscheduler_jobs WHERE next_run_time IS NOT NULL "
            "ORDER BY next_run_time LIMIT 1",
            True,
        ),
        (
            "leader: claims won (ledger.claimed_by)",
            "SELECT job_id, `trigger`, scheduled_at, attempt, id FROM jobservice_runs "
            f"WHERE claim = '{token}'",
            True,
        ),
        (
            "leader: runs nobody started (ledger.pending, every pass)",
            pending_sql(now, fence),
            True,
        ),
        (
            "leader: next retry (ledger.next_retry_at, every pass)",
            "SELECT min(not_before) AS min_1 FROM jobservice_runs "
            f"WHERE status = 'running' AND started_at IS NULL AND not_before > '{now_s}'",
            True,
        ),
        (
            "leader: dead runs (liveness.Sweeper.sweep)",
            "SELECT id, job_id, `trigger`, worker, updated_at, attempt FROM jobservice_runs "
            f"WHERE status IN ({ACTIVE_SQL}) AND started_at IS NOT NULL AND updated_at < '{now_s}' LIMIT 500",
            True,
        ),
        (
            "leader: runs going per job (ledger._ACTIVE_RUNS, each start batch)",
            "SELECT job_id, count(*) AS count_1 FROM jobservice_runs "
            f"WHERE status IN ({ACTIVE_SQL}) AND started_at IS NOT NULL AND job_id IN ({jobs_in}) "
            "GROUP BY job_id",
            True,
        ),
        (
            "leader: start compare-and-set (ledger._START)",
            f"UPDATE jobservice_runs SET worker='web-1:1', started_at='{now_s}', updated_at='{now_s}' "
            f"WHERE id IN ({ids}) AND (id, claim) IN ({pairs}) AND started_at IS NULL "
            "AND (`trigger` = 'manual' OR NOT (EXISTS (SELECT apscheduler_jobs.id FROM apscheduler_jobs "
            "WHERE apscheduler_jobs.id = jobservice_runs.job_id "
            "AND apscheduler_jobs.next_run_time IS NULL)))",
            False,
        ),
        (
            "leader: advance jobs (jobstore.advance)",
            f"UPDATE apscheduler_jobs SET next_run_time={ts} WHERE id IN ({jobs_in}) "
            f"AND (id, version) IN ({versions})",
            False,
        ),
        (
            "leader: outcomes (recorder._update_join)",
            f"UPDATE jobservice_runs AS r JOIN ({outcome}) AS v ON r.id = v.id SET r.status = v.status, "
            "r.finished_at = v.finished_at, r.error = v.error, r.updated_at = v.finished_at "
            f"WHERE r.status IN ({ACTIVE_SQL})",
            False,
        ),
        (
            "API: GET /scheduler/runs, first page (runs.list_runs)",
            f"SELECT {RUN_COLUMNS} FROM jobservice_runs ORDER BY id DESC LIMIT 100",
            True,
        ),
        (
            "API: GET /scheduler/jobs/<id>/runs, first page (runs.list_runs)",
            f"SELECT {RUN_COLUMNS} FROM jobservice_runs FORCE INDEX (ix_jobservice_runs_job_id_id) "
            f"WHERE job_id = '{HOT_JOB}' ORDER BY id DESC LIMIT 100",
            True,
        ),
        (
            "API: the same for a job with about 100 runs (runs.list_runs)",
            f"SELECT {RUN_COLUMNS} FROM jobservice_runs FORCE INDEX (ix_jobservice_runs_job_id_id) "
            f"WHERE job_id = '{job_id(store.jobs - 1)}' ORDER BY id DESC LIMIT 100",
            True,
        ),
        (
            "maintenance: a purge batch (runs.purge_runs)",
            f"SELECT id FROM jobservice_runs WHERE scheduled_at < '{cutoff}' "
            f"AND (status NOT IN ({ACTIVE_SQL})) LIMIT 5000",
            True,
        ),
        (
            "maintenance: jobs over the per-job limit (runs.trim_runs)",
            "SELECT job_id FROM jobservice_runs GROUP BY job_id "
            f"HAVING count(*) > {SERVICE_ENV['RUN_RETENTION_PER_JOB']}",
            True,
        ),
    ]


def explain_all(url: str, store: Store, due_per_s: int) -> list[dict[str, Any]]:
    """EXPLAIN each statement (ANALYZE, which runs it, for the read-only ones: actual rows
    and time); every plan row kept, and a one-line summary."""
    engine = create_engine(url)
    out = []
    try:
        for name, sql, read_only in statements(engine, store, due_per_s):
            with engine.connect() as conn:
                began = time.perf_counter()
                result = conn.exec_driver_sql(("ANALYZE " if read_only else "EXPLAIN ") + sql)
                ms = (time.perf_counter() - began) * 1000
                rows = [dict(row._mapping) for row in result]
                conn.rollback()
            out.append({
                "name": name,
                "sql": sql[:2000],
                "analyzed": read_only,
                "ms": round(ms, 2) if read_only else None,
                "plan": [{k: v for k, v in r.items() if v is not None} for r in rows],
                "summary": summarize(rows, ms if read_only else None),
                "full_scan": any(_full_scan(r) for r in rows),
            })  # fmt: skip
    finally:
        engine.dispose()
    return out


def _full_scan(row: dict[str, Any]) -> bool:
    """A whole table or index read (ANALYZE's actual rows where there are, else the estimate)."""
    rows = row.get("r_rows") if row.get("r_rows") is not None else row.get("rows")
    return row.get("type") in ("ALL", "index") and _number(rows) >= FULL_SCAN_ROWS


def _number(value: Any) -> float:
    """A row count of ANALYZE's tabular output: a number, or text such as '0.00 (0%)'."""
    if value is None:
        return 0.0
    try:
        return float(value)
    except (TypeError, ValueError):
        head = str(value).split()[0] if str(value).split() else "0"
        try:
            return float(head)
        except ValueError:
            return 0.0


def summarize(rows: list[dict[str, Any]], ms: float | None) -> str:
    """One line: each table's access (type, key, estimated and read rows, Extra)."""
    parts = []
    constants = sum(1 for r in rows if r.get("table") is None)
    for r in rows:
        if r.get("table") is None:  # the rows of a derived table of constants (UNION ALL)
            continue
        read = f", read {_number(r['r_rows']):.0f}" if r.get("r_rows") is not None else ""
        part = f"{r.get('table')}: {r.get('type')} {r.get('key') or '-'} (est {r.get('rows')}{read})"
        if r.get("Extra"):
            part += f" [{r['Extra']}]"
        parts.append(part + (" FULL SCAN" if _full_scan(r) else ""))
    if constants:
        parts.append(f"{constants} SELECTs of constants")
    return "; ".join(parts) + ("" if ms is None else f"; {ms:.1f} ms")
