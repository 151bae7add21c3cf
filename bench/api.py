"""A2 (POST throughput) and A1 (listing 100 000 jobs) against one gunicorn master of 4 workers."""

from __future__ import annotations

import http.client
import json
import threading
import time
from pathlib import Path
from typing import Any

from . import profile
from .costs import Costs
from .deploy import FAR_FUTURE, Deployment
from .plan import Context
from .stats import percentile
from .store import APSCHEDULER_GRACE_S, JOBSERVICE_GRACE_S, date_trigger, execute, insert_jobs, job_row

FAR_FUTURE_EPOCH = 4_070_908_800.0  # 2099-01-01T00:00:00Z
WARM_UP_REQUESTS = 3


def _request(port: int, method: str, path: str, body: bytes | None, timeout_s: float) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def a2_writes(ctx: Context, d: Deployment) -> dict[str, Any]:
    """Concurrent clients POST never-due date jobs for the A2 duration."""
    port, duration_s = d.masters[0].port, ctx.plan.a2_s
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    start_gate = threading.Barrier(ctx.plan.a2_clients + 1)
    deadline = [0.0]

    def client(index: int) -> None:
        mine: list[float] = []
        bad: list[str] = []
        start_gate.wait()
        i = 0
        while time.monotonic() < deadline[0]:
            job_id = f"a2-{d.kind}-{index}-{i}"
            i += 1
            body = {"id": job_id, "func": "bench.benchjobs:fire", "args": ["A2", job_id]}
            body |= {"trigger": "date", "run_date": FAR_FUTURE}
            began = time.perf_counter()
            try:
                status, _ = _request(port, "POST", "/scheduler/jobs", json.dumps(body).encode(), 10.0)
            except OSError as exc:
                status = 0
                bad.append(type(exc).__name__)
            mine.append(time.perf_counter() - began)
            if status != 200:
                bad.append(str(status))
        with lock:
            latencies.extend(mine)
            errors.extend(bad)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(ctx.plan.a2_clients)]
    spies = _profile_workers(ctx, d, int(duration_s) + 1)
    costs = Costs(ctx.dbs, d.processes())
    for thread in threads:
        thread.start()
    deadline[0] = time.monotonic() + duration_s
    began = time.monotonic()
    start_gate.wait()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - began
    cost = costs.done(len(latencies), "request")
    for spy, _, _ in spies:
        profile.finish(spy)
    ms = [x * 1000 for x in latencies]
    return {
        "clients": ctx.plan.a2_clients,
        "seconds": round(elapsed, 2),
        "requests": len(latencies),
        "requests_per_s": len(latencies) / elapsed,
        "ok_per_s": (len(latencies) - len(errors)) / elapsed,
        "errors": len(errors),
        "error_kinds": sorted(set(errors))[:10],
        "p50_ms": percentile(ms, 50),
        "p99_ms": percentile(ms, 99),
        **cost,
        **{f"profile ({role})": profile.summarize(path) for _, path, role in spies},
    }


def _profile_workers(ctx: Context, d: Deployment, duration_s: int) -> list[tuple[Any, Path, str]]:
    """With --profile, py-spy on jobservice's leader and on one follower during A2."""
    leader = d.leader_pid()
    if ctx.profile_dir is None or d.kind != "ours" or leader is None:
        return []
    follower = next((pid for pid in d.processes() if pid != leader), None)
    out = []
    for role, pid in (("leader", leader), ("follower", follower)):
        if pid is not None:
            path = ctx.profile_dir / f"A2-{role}.txt"
            out.append((profile.record(pid, duration_s, path), path, role))
    return out


def a1_listing(ctx: Context, d: Deployment) -> dict[str, Any]:
    """Fill the store with never-due jobs, then time the first page and the whole list."""
    n = ctx.plan.a1_jobs
    execute(d.store_url, "DELETE FROM apscheduler_jobs")
    grace = JOBSERVICE_GRACE_S if d.kind == "ours" else APSCHEDULER_GRACE_S
    rows = (
        job_row(
            f"a1-{i:06d}",
            date_trigger(FAR_FUTURE_EPOCH + i),
            FAR_FUTURE_EPOCH + i,
            ["A1", f"a1-{i:06d}"],
            grace,
        )
        for i in range(n)
    )
    began = time.monotonic()
    insert_jobs(d.store_url, rows, versioned=d.kind == "ours")
    out: dict[str, Any] = {"jobs": n, "insert_s": round(time.monotonic() - began, 1)}
    port = d.masters[0].port
    if d.kind == "ours":
        out |= timed_get(port, "/scheduler/jobs?limit=100&offset=0", ctx.plan.a1_requests, 10.0, expect=100)
    # The whole list: all Flask-APScheduler can do (it has no paging); capped, it is slow.
    whole = timed_get(
        port, "/scheduler/jobs", ctx.plan.a1_full_attempts, ctx.plan.a1_full_timeout_s, expect=n, warm=0
    )
    out |= {f"all_{k}": v for k, v in whole.items()}
    return out


def timed_get(
    port: int, path: str, count: int, timeout_s: float, expect: int, warm: int = WARM_UP_REQUESTS
) -> dict:
    """GET `path` (after `warm` untimed requests) `count` times; latency percentiles in ms."""
    times: list[float] = []
    errors = 0
    for i in range(warm + count):
        began = time.perf_counter()
        try:
            status, raw = _request(port, "GET", path, None, timeout_s)
            ok = status == 200 and len(json.loads(raw)) == expect
        except (OSError, ValueError):
            ok = False
        elapsed = (time.perf_counter() - began) * 1000
        if i >= warm:
            times.append(elapsed)
            errors += not ok
    return {
        "requests": len(times),
        "errors": errors,
        "p50_ms": percentile(times, 50),
        "p99_ms": percentile(times, 99),
        "max_ms": max(times, default=None),
    }
