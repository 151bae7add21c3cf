"""The deployments of one run, in order, and which scenarios each serves.

Each group starts its deployment, runs the selected scenarios on it and stops it.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from typing import Any

from .api import a1_listing, a2_writes
from .cluster import run_cluster
from .deploy import OURS_MYSQLDB, OURS_RQ, OURS_SPREAD, SPREAD_ENV
from .heavy import s6_heavy
from .plan import Context
from .report import PLAIN_GRACE1
from .rqworkers import NO_RQ
from .scale import s7_scale
from .service import memory, s3_burst, s4_steady
from .store import APSCHEDULER_GRACE_S

Results = dict[str, dict[str, dict[str, Any]]]
#: At most this long between two scenarios on a deployment with RQ workers, for them to finish
#: what the previous one left queued.
RQ_DRAIN_S = 180.0


def cluster_group(kind: str, rq: bool = False, spread: bool = False) -> Callable[[Context], Results]:
    """S1, S2 and S5 (where the peer has an API) on a two-master deployment of `kind`; with
    `rq`, jobservice with its RQ executor and its RQ workers beside the masters; with
    `spread`, jobservice spreading its runs over every worker."""

    def run(ctx: Context) -> Results:
        rq_workers = ctx.plan.rq_workers if rq else 0
        key = OURS_RQ if rq else (OURS_SPREAD if spread else kind)
        return {s: {key: figures} for s, figures in run_cluster(ctx, kind, rq_workers, spread).items()}

    return run


def service_ours(ctx: Context) -> Results:
    """S3, S4, A2 and A1 on one jobservice master of 4 workers, in that order; and the
    leader's memory after S3 and S4 (M1 itself, after S4 alone as for the naive worker, is
    `memory_ours`)."""
    d = ctx.deployment("ours", "service-ours", 1, ctx.plan.service_workers).start()
    out: Results = {}
    try:
        if ctx.wants("S3"):
            out["S3"] = {"ours": s3_burst(ctx, d)}
        if ctx.wants("S4"):
            for n in ctx.plan.s4_sizes:
                out[f"S4-{n}"] = {"ours": s4_steady(ctx, d, n)}
        if ctx.wants("M1") and ctx.wants("S3") and ctx.wants("S4"):
            out["M1"] = {"ours": {"after_s3_s4_mib": memory(d)}}
        if ctx.wants("A2"):
            out["A2"] = {"ours": a2_writes(ctx, d)}
        if ctx.wants("A1"):
            out["A1"] = {"ours": a1_listing(ctx, d)}
    finally:
        d.stop()
    return out


def memory_ours(ctx: Context) -> Results:
    """M1: the leader of a jobservice master of 4 workers after start and after S4, the same
    history as the naive worker's (`service_naive_one`); its S4 figures are not reported."""
    d = ctx.deployment("ours", "memory-ours", 1, ctx.plan.service_workers).start()
    try:
        m1 = {"start_mib": memory(d)}
        for n in ctx.plan.s4_sizes:
            s4_steady(ctx, d, n)
        m1["after_s4_mib"] = memory(d)
    finally:
        d.stop()
    return {"M1": {"ours": m1}}


#: What the service variants of jobservice run (the thread executor's row runs them all).
MYSQLDB_SCENARIOS = ("S3", "S4", "A2")
SPREAD_SCENARIOS = ("S3", "S4")


def service_variant(
    key: str, scenarios: tuple[str, ...], driver: str = "pymysql", env: dict[str, str] | None = None
) -> Callable[[Context], Results]:
    """`scenarios` (of S3, S4, A2) on a deployment like `service_ours`'s, results under `key`:
    OURS_MYSQLDB has its own statements on mysqlclient (the job body stays on PyMySQL),
    OURS_SPREAD spreads its runs over the 4 workers (the leader claims, the others run)."""

    def run(ctx: Context) -> Results:
        if driver == "mysqldb" and importlib.util.find_spec("MySQLdb") is None:
            why = {"not_applicable": "mysqlclient not installed"}
            return {s: {key: why} for s in ("S3", *(f"S4-{n}" for n in ctx.plan.s4_sizes), "A2")}
        workers = ctx.plan.service_workers
        d = ctx.deployment("ours", f"service-{key}", 1, workers, driver=driver, env=env).start()
        out: Results = {}
        try:
            if "S3" in scenarios and ctx.wants("S3"):
                out["S3"] = {key: s3_burst(ctx, d)}
            if "S4" in scenarios and ctx.wants("S4"):
                for n in ctx.plan.s4_sizes:
                    out[f"S4-{n}"] = {key: s4_steady(ctx, d, n)}
            if "A2" in scenarios and ctx.wants("A2"):
                out["A2"] = {key: a2_writes(ctx, d)}
        finally:
            d.stop()
        return out

    return run


def service_ours_rq(ctx: Context) -> Results:
    """S3 and S4 on the same jobservice deployment as `service_ours` (one master of 4
    workers) with its RQ executor, and its RQ workers beside the master."""
    d = ctx.deployment("ours", "service-ours_rq", 1, ctx.plan.service_workers, ctx.plan.rq_workers)
    wanted = [s for s in ("S3", *(f"S4-{n}" for n in ctx.plan.s4_sizes)) if ctx.wants(s.split("-")[0])]
    d.start_tables()
    if not ctx.has_rq(d):
        return {s: {OURS_RQ: {"not_applicable": NO_RQ}} for s in wanted}
    d.start()
    out: Results = {}
    try:
        if ctx.wants("S3"):
            out["S3"] = {OURS_RQ: s3_burst(ctx, d)}
        if ctx.wants("S4"):
            for n in ctx.plan.s4_sizes:
                # Untimed: what the previous scenario left queued must not run into this one.
                drained_s = d.drain_rq(RQ_DRAIN_S)
                out[f"S4-{n}"] = {OURS_RQ: {**s4_steady(ctx, d, n), "rq_drained_before_s": drained_s}}
    finally:
        d.stop()
    return out


def service_plain(ctx: Context) -> Results:
    """S3 (and S4 in the full run) on one plain APScheduler process; S3 again with
    APScheduler's default misfire_grace_time (1 s), for what that drops."""
    d = ctx.deployment("plain", "service-plain", 1, 1).start()
    out: Results = {}
    try:
        if ctx.wants("S3"):
            out["S3"] = {"plain": s3_burst(ctx, d), PLAIN_GRACE1: s3_burst(ctx, d, APSCHEDULER_GRACE_S)}
        if ctx.wants("S4") and "plain" in ctx.plan.s4_peers:
            for n in ctx.plan.s4_sizes:
                out[f"S4-{n}"] = {"plain": s4_steady(ctx, d, n)}
    finally:
        d.stop()
    return out


def service_naive_one(ctx: Context) -> Results:
    """M1 (and S4) on a naive Flask-APScheduler worker: one worker, so no duplicates."""
    d = ctx.deployment("naive", "service-naive1", 1, 1).start()
    out: Results = {}
    try:
        m1 = {"start_mib": memory(d)} if ctx.wants("M1") else {}
        for n in ctx.plan.s4_sizes:
            out[f"S4-{n}"] = {"naive": s4_steady(ctx, d, n)}
        if ctx.wants("M1"):
            m1["after_s4_mib"] = memory(d)
            out["M1"] = {"naive": m1}
    finally:
        d.stop()
    return out


def api_naive(ctx: Context) -> Results:
    """A2 and A1 on naive Flask-APScheduler, 4 workers."""
    d = ctx.deployment("naive", "api-naive", 1, ctx.plan.service_workers).start()
    out: Results = {}
    try:
        if ctx.wants("A2"):
            out["A2"] = {"naive": a2_writes(ctx, d)}
        if ctx.wants("A1"):
            out["A1"] = {"naive": a1_listing(ctx, d)}
    finally:
        d.stop()
    return out


def heavy_group(kind: str, row: str, spread: bool = False) -> Callable[[Context], Results]:
    """S6 on a deployment of its own; row "thread" (jobservice's thread executor, plain
    APScheduler) or "rq" (jobservice's RQ executor and its workers, Celery); with `spread`,
    jobservice's thread executor spreading the runs over its 4 workers."""

    def run(ctx: Context) -> Results:
        rq_workers = ctx.plan.rq_workers if kind == "ours" and row == "rq" else 0
        workers = ctx.plan.service_workers if kind == "ours" else 1
        key = OURS_SPREAD if spread else kind
        name = f"heavy-{key}-{row}"
        d = ctx.deployment(kind, name, 1, workers, rq_workers, env=SPREAD_ENV if spread else None)
        d.start_tables()
        if rq_workers and not ctx.has_rq(d):
            return {f"S6-{row}": {kind: {"not_applicable": NO_RQ}}}
        d.start()
        try:
            return {f"S6-{row}": {key: s6_heavy(ctx, d, row)}}
        finally:
            d.stop()

    return run


def groups(ctx: Context) -> list[tuple[str, tuple[str, ...], Callable[[Context], Results]]]:
    """(name, scenarios it serves, function), in the order they run."""
    naive_one: tuple[str, ...] = ("M1", "S4") if "naive" in ctx.plan.s4_peers else ("M1",)
    return [
        ("cluster jobservice", ("S1", "S2", "S5"), cluster_group("ours")),
        ("cluster jobservice, spread runs", ("S1", "S2", "S5"), cluster_group("ours", spread=True)),
        ("cluster jobservice, RQ executor", ("S1", "S2", "S5"), cluster_group("ours", rq=True)),
        ("cluster FAS naive", ("S1", "S2", "S5"), cluster_group("naive")),
        ("cluster FAS flock", ("S1", "S2", "S5"), cluster_group("flock")),
        ("cluster APScheduler x2", ("S1", "S2"), cluster_group("plain")),
        ("service jobservice", ("S3", "S4", "A1", "A2"), service_ours),
        ("memory jobservice, S4 only", ("M1",), memory_ours),
        (
            "service jobservice, mysqlclient",
            MYSQLDB_SCENARIOS,
            service_variant(OURS_MYSQLDB, MYSQLDB_SCENARIOS, "mysqldb"),
        ),
        (
            "service jobservice, spread runs",
            SPREAD_SCENARIOS,
            service_variant(OURS_SPREAD, SPREAD_SCENARIOS, env=SPREAD_ENV),
        ),
        ("service jobservice, RQ executor", ("S3", "S4"), service_ours_rq),
        ("service APScheduler", ("S3", "S4") if "plain" in ctx.plan.s4_peers else ("S3",), service_plain),
        ("service FAS naive, 1 worker", naive_one, service_naive_one),
        ("API FAS naive, 4 workers", ("A1", "A2"), api_naive),
        ("heavy jobservice, thread executor", ("S6",), heavy_group("ours", "thread")),
        (
            "heavy jobservice, thread executor, spread runs",
            ("S6",),
            heavy_group("ours", "thread", spread=True),
        ),
        ("heavy jobservice, RQ executor", ("S6",), heavy_group("ours", "rq")),
        ("heavy APScheduler", ("S6",), heavy_group("plain", "thread")),
        ("heavy Celery", ("S6",), heavy_group("celery", "rq")),
        ("scale jobservice, small store then large store", ("S7",), s7_scale),
    ]
