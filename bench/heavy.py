"""S6 (heavy jobs): N jobs of 50 ms of pure-Python CPU each, all due at the same instant.

jobservice (thread executor, or RQ executor with its workers) and plain APScheduler get
date jobs put in the store with SQL before the window, as in S3 (plain APScheduler with
misfire_grace_time None, so that it runs them all); Celery gets one `apply_async(eta=due)`
per job, sent as long before. Every job (`bench.benchjobs:heavy`) records its start and
its finish. During the burst, one client GETs jobservice's /health on the leader's worker
(`LeaderProbe`: the other workers are kept busy with idle connections).
"""

from __future__ import annotations

import http.client
import json
import math
import socket
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from . import procs
from .costs import Costs, cpu_with_reaped
from .deploy import Deployment
from .peer_celery import HEAVY_TASK, make_app
from .plan import Context
from .service import recorded_runs
from .stats import duplicates, first_fires, lateness_figures, percentile
from .store import JOBSERVICE_GRACE_S, count_progress, date_trigger, insert_jobs, job_row, read_fires

HEAVY_FUNC = "bench.benchjobs:heavy"
NO_API = "n/a (no API)"
PROBE_PAUSE_S = 0.02
PROBE_TIMEOUT_S = 10.0
#: The probe parks the followers this long before the jobs are due, and at most PARK_MAX_S.
PARK_LEAD_S = 1.5
PARK_SETTLE_S = 0.1
PARK_MAX_S = 25.0
#: S6 is over when every job finished, or nothing started or finished for this long.
QUIET_S = 3.0
S6_TIMEOUT_S = 120.0
#: After the last finish, before the CPU is read: an RQ work-horse's is counted once it is reaped.
REAP_S = 0.5


def s6_heavy(ctx: Context, d: Deployment, row: str) -> dict[str, Any]:
    """N heavy jobs due at one instant; makespan, lateness, the API during the burst, CPU."""
    n, burn_ms, tag = ctx.plan.s6_jobs, ctx.plan.s6_burn_ms, f"S6-{row}:{d.variant}"
    due = math.ceil(time.time() + ctx.plan.s6_lead_s)
    jobs = [(f"s6-{i}", [tag, f"s6-{i}", due, burn_ms]) for i in range(n)]
    if d.kind == "celery":
        _send_celery(d, jobs, due)
    else:
        grace = JOBSERVICE_GRACE_S if d.kind == "ours" else None
        rows = (job_row(job_id, date_trigger(due), due, args, grace, HEAVY_FUNC) for job_id, args in jobs)
        insert_jobs(d.store_url, rows, versioned=d.kind == "ours")
        d.kick()
    procs.sleep_until(due - PARK_LEAD_S)
    probe = LeaderProbe(d.masters[0].port, d.n_workers) if d.kind == "ours" else None
    procs.sleep_until(due)
    schedulers, job_workers = d.processes(), d.job_processes()
    costs, workers_cpu = Costs(ctx.dbs, schedulers), cpu_with_reaped(job_workers)
    _wait_heavy(ctx, tag, n, due)
    if probe is not None:
        probe.stop()
    time.sleep(REAP_S)
    cost = costs.done()
    sched_cpu = cost.pop("cpu_s")
    job_cpu = round(cpu_with_reaped(job_workers) - workers_cpu, 2) if job_workers else None
    fires = read_fires(ctx.fires, tag)
    first = first_fires(fires)
    finishes = [f.finished for f in first if f.finished is not None]
    end = max(finishes, default=time.time())
    api = probe.figures(due, end) if probe else {"api_p99_leader_ms": NO_API}
    return {
        "jobs": n,
        "burn_ms": burn_ms,
        "fired": len(first),
        "finished": len(finishes),
        "dropped": n - len(first),
        "duplicates": duplicates(fires),
        "makespan_s": max(f.started for f in first) - due if first else None,
        "makespan_finish_s": max(finishes) - due if finishes else None,
        **lateness_figures(first),
        **api,
        "cpu_s": round(sched_cpu + (job_cpu or 0.0), 2),
        "sched_cpu_s": sched_cpu,
        "job_workers_cpu_s": job_cpu,
        "scheduler_pids": schedulers,
        "job_worker_pids": job_workers,
        "job_pids_seen": len({f.pid for f in first}),
        **cost,
        "jobservice_runs": recorded_runs(d, "s6-"),
    }


def _send_celery(d: Deployment, jobs: Sequence[tuple[str, list[Any]]], due: float) -> None:
    """One `apply_async(eta=due)` per job, as a Celery user runs a task once at a given time."""
    app = make_app(d.redis_url, d.redis_prefix)
    eta = datetime.fromtimestamp(due, UTC)
    try:
        for _, args in jobs:
            app.send_task(HEAVY_TASK, args=args, eta=eta)
    finally:
        app.close()


def _wait_heavy(ctx: Context, tag: str, n: int, due: float) -> None:
    seen, changed = (-1, -1), time.time()
    while time.time() < due + S6_TIMEOUT_S:
        progress = count_progress(ctx.fires, tag)
        if progress[1] >= n:
            return
        if progress != seen:
            seen, changed = progress, time.time()
        elif time.time() - changed > QUIET_S:
            return
        time.sleep(0.25)


class LeaderProbe:
    """GET /health, one request at a time and a new connection each, answered by the leader.

    A sync gunicorn worker serves one connection at a time, and gunicorn, not the URL,
    picks the worker: so every other worker is kept busy with an idle connection the probe
    holds open. Which worker holds which is learnt from /health's `role`: each parked
    connection is released with a request, and a follower that answered it is parked again
    with a new one, until the leader answers. Parked for at most PARK_MAX_S (gunicorn kills
    a worker that is silent for its timeout, 30 s).
    """

    def __init__(self, port: int, workers: int) -> None:
        self.port = port
        self.parked = self._park(workers)
        #: (epoch sent, ms, role of the worker that answered, answered 200)
        self.samples: list[tuple[float, float, str, bool]] = []
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._client, daemon=True)
        self._thread.start()

    def _connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=PROBE_TIMEOUT_S)

    def _health(self, sock: socket.socket | None = None) -> tuple[bool, str]:
        """(answered 200, role of the worker that answered), on `sock` or a new connection."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=PROBE_TIMEOUT_S)
        if sock is not None:
            conn.sock = sock
        try:
            conn.request("GET", "/health")
            response = conn.getresponse()
            body = json.loads(response.read() or b"{}")
            return response.status == 200, str(body.get("role", "?"))
        finally:
            conn.close()

    def _park(self, workers: int) -> list[socket.socket]:
        """Idle connections held by every worker but the leader (none if it cannot tell)."""
        parked = [self._connect() for _ in range(workers)]
        time.sleep(PARK_SETTLE_S)  # each worker has accepted one
        for sock in list(parked):
            parked.remove(sock)
            try:
                _, role = self._health(sock)
            except (OSError, ValueError):
                break
            if role == "leader":
                return parked
            parked.append(self._connect())  # taken by that follower: the only free worker
            time.sleep(PARK_SETTLE_S)
        for sock in parked:
            sock.close()
        return []

    def _client(self) -> None:
        deadline = time.monotonic() + PARK_MAX_S
        while not self._stopping.is_set() and time.monotonic() < deadline:
            sent, began = time.time(), time.perf_counter()
            try:
                ok, role = self._health()
            except (OSError, ValueError):
                ok, role = False, "?"
            self.samples.append((sent, (time.perf_counter() - began) * 1000, role, ok))
            self._stopping.wait(PROBE_PAUSE_S)
        for sock in self.parked:
            sock.close()

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join()

    def figures(self, start: float, end: float) -> dict[str, Any]:
        """Latency percentiles of the requests sent in [start, end] that the leader answered
        (all of them, when the followers were parked)."""
        during = [(ms, role, ok) for sent, ms, role, ok in self.samples if start <= sent <= end]
        leader = [ms for ms, role, _ in during if role == "leader"]
        return {
            "api_leader_isolated": bool(self.parked),
            "api_requests": len(during),
            "api_errors": sum(not ok for _, _, ok in during),
            "api_leader_requests": len(leader),
            "api_p50_leader_ms": percentile(leader, 50),
            "api_p99_leader_ms": percentile(leader, 99),
            "api_max_leader_ms": max(leader, default=None),
        }
