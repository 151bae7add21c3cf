"""The one results table (ours against each peer), the machine, and the files written."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .deploy import OURS_MYSQLDB, OURS_RQ, OURS_SPREAD

Results = dict[str, dict[str, dict[str, Any]]]

#: Plain APScheduler in S3 with its default misfire_grace_time (1 s): a row for its drops.
PLAIN_GRACE1 = "plain_grace1"
PEERS = {
    "plain": "APScheduler",
    PLAIN_GRACE1: "APScheduler, grace 1 s",
    "naive": "FAS naive",
    "flock": "FAS flock",
    "celery": "Celery",
    # S7: "ours" is the large store; the small store (and, during the purge, the large one
    # without it) is the comparison.
    "small": "small store",
    "large_steady": "large, no purge",
}
#: Scenarios with variants of jobservice besides sizes (S6-thread, S6-rq), in this order.
VARIANTS = {"thread": "thread executor", "rq": "RQ executor"}
#: S7's parts besides the steady load on each store.
PARTS = {"purge": "large store, during the purge"}
#: jobservice with its RQ executor in S1-S5 (results key OURS_RQ, beside "ours" = thread
#: executor): one row per figure, after that figure's rows, against APScheduler where measured.
RQ_PEER = "plain"
#: Variants of jobservice with a row of their own per figure, after the thread executor's.
OURS_VARIANTS = {OURS_SPREAD: "spread runs", OURS_MYSQLDB: "mysqlclient", OURS_RQ: "RQ executor"}


@dataclass(frozen=True)
class Figure:
    key: str
    label: str
    unit: str = "n"  # "n", "s", "ms", "MiB", "/s"
    theirs_key: str | None = None  # when the peer's comparable figure has another name


FIGURES: dict[str, tuple[Figure, ...]] = {
    "S1": (
        Figure("fires", "fires in window"),
        Figure("duplicates", "duplicate fires"),
        Figure("largest_gap_s", "largest gap", "s"),
    ),
    "S2": (
        Figure("kill9_next_fire_s", "kill -9 leader -> next fire", "s"),
        Figure("sigterm_next_fire_s", "SIGTERM its master -> next fire", "s"),
        Figure("duplicates", "duplicate fires"),
        Figure("missed_slots", "fire times with no fire"),
    ),
    "S3": (
        Figure("makespan_s", "makespan (due -> last start)", "s"),
        Figure("p50_late_ms", "p50 lateness", "ms"),
        Figure("p99_late_ms", "p99 lateness", "ms"),
        Figure("dropped", "dropped"),
        Figure("sched_cpu_ms_per_fire", "CPU per fire, scheduling process", "ms"),
        Figure("cpu_ms_per_fire", "CPU per fire, all its processes", "ms"),
        Figure("db_cpu_ms_per_fire", "MariaDB CPU per fire", "ms"),
    ),
    "S4": (
        Figure("fires_per_s", "fires/s", "/s"),
        Figure("p50_late_ms", "p50 lateness", "ms"),
        Figure("p99_late_ms", "p99 lateness", "ms"),
        Figure("sched_cpu_ms_per_fire", "CPU per fire, scheduling process", "ms"),
        Figure("cpu_ms_per_fire", "CPU per fire, all its processes", "ms"),
        Figure("db_cpu_ms_per_fire", "MariaDB CPU per fire", "ms"),
    ),
    "S5": (
        Figure("fired", "jobs fired"),
        Figure("duplicates", "duplicate fires"),
        Figure("p50_late_ms", "p50 lateness", "ms"),
        Figure("p99_late_ms", "p99 lateness", "ms"),
    ),
    "A1": (
        Figure("p50_ms", "first 100 (theirs: whole list) p50", "ms", "all_p50_ms"),
        Figure("p99_ms", "first 100 (theirs: whole list) p99", "ms", "all_p99_ms"),
        Figure("all_p50_ms", "whole list p50", "ms"),
    ),
    "A2": (
        Figure("requests_per_s", "requests/s", "/s"),
        Figure("p99_ms", "p99 latency", "ms"),
        Figure("errors", "errors"),
    ),
    "M1": (
        Figure("start_mib", "worker RSS after start", "MiB"),
        Figure("after_s4_mib", "worker RSS after S4", "MiB"),
        Figure("after_s3_s4_mib", "worker RSS after S3 and S4 (ours only)", "MiB"),
    ),
    "S6": (
        Figure("makespan_s", "makespan (due -> last start)", "s"),
        Figure("makespan_finish_s", "due -> last finish", "s"),
        Figure("p50_late_ms", "p50 lateness", "ms"),
        Figure("p99_late_ms", "p99 lateness", "ms"),
        Figure("api_p99_leader_ms", "API p99 on the leader's worker", "ms"),
        Figure("cpu_s", "CPU, schedulers + job workers", "s"),
        Figure("dropped", "dropped"),
    ),
    "S7": (
        Figure("fires_per_s", "fires/s (due each second: S7's due_per_s)", "/s"),
        Figure("p50_late_ms", "p50 lateness", "ms"),
        Figure("p99_late_ms", "p99 lateness", "ms"),
        Figure("sched_cpu_ms_per_fire", "pass cost: leader CPU per fire", "ms"),
        Figure("db_cpu_ms_per_fire", "MariaDB CPU per fire", "ms"),
        Figure("db_disk_reads_per_s", "MariaDB pages read from disk (server-wide)", "/s"),
        Figure("missed", "fire times missed (past their grace)"),
        Figure("runs_p50_ms", "GET /scheduler/runs first page p50", "ms"),
        Figure("runs_p99_ms", "GET /scheduler/runs first page p99", "ms"),
        Figure("job_runs_p50_ms", "GET a job's runs first page p50", "ms"),
        Figure("job_runs_p99_ms", "GET a job's runs first page p99", "ms"),
    ),
    "S7-purge": (
        Figure("fires_per_s", "fires/s", "/s"),
        Figure("p50_late_ms", "p50 lateness", "ms"),
        Figure("p99_late_ms", "p99 lateness", "ms"),
        Figure("sched_cpu_ms_per_fire", "leader CPU per fire", "ms"),
        Figure("db_cpu_ms_per_fire", "MariaDB CPU per fire", "ms"),
        Figure("db_disk_reads_per_s", "MariaDB pages read from disk (server-wide)", "/s"),
        Figure("missed", "fire times missed (past their grace)"),
        Figure("purge_s", "maintenance run (purge) took", "s"),
        Figure("deleted", "old runs deleted"),
    ),
}


def fmt(value: Any, unit: str = "n") -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    if unit == "n":
        return str(int(value)) if float(value).is_integer() else f"{value:.1f}"
    if unit == "s":
        return f"{value:.3f} s"
    if unit == "ms":
        return f"{value:.1f} ms"
    if unit == "MiB":
        return f"{value:.1f} MiB"
    return f"{value:.1f}{unit}"


def ratio(ours: Any, theirs: Any) -> str:
    if not isinstance(ours, int | float) or not isinstance(theirs, int | float) or theirs == 0:
        return "-"
    return f"{ours / theirs:.2f}"


def rows(results: Results) -> list[tuple[str, str, str, str, str, str]]:
    """(scenario, figure, ours, theirs, peer, ratio) for every figure and peer; in S1-S5,
    jobservice's variants (RQ executor, mysqlclient; when measured) get one more row per
    figure each, against APScheduler (A2: against naive Flask-APScheduler)."""
    out = []
    for scenario in sorted(results, key=_order):
        figures = FIGURES.get(scenario) or FIGURES[scenario.split("-")[0]]
        by_peer = results[scenario]
        peers = [p for p in by_peer if p != "ours" and p not in OURS_VARIANTS] or [None]
        label = _scenario_label(scenario)
        for figure in figures:
            if "ours" in by_peer or not set(by_peer) & set(OURS_VARIANTS):
                out += [_row(label, figure, by_peer.get("ours", {}), by_peer, peer) for peer in peers]
            for variant, name in OURS_VARIANTS.items():
                if variant in by_peer:
                    peer = next((p for p in (RQ_PEER, "naive") if p in by_peer), None)
                    out.append(_row(f"{label} {name}", figure, by_peer[variant], by_peer, peer))
    return out


def _row(
    label: str, figure: Figure, ours: dict[str, Any], by_peer: dict[str, dict[str, Any]], peer: str | None
) -> tuple[str, str, str, str, str, str]:
    theirs_all = by_peer.get(peer, {}) if peer else {}
    theirs_key = figure.theirs_key or figure.key
    return (
        label,
        figure.label,
        _value(ours, figure.key, figure.unit),
        _value(theirs_all, theirs_key, figure.unit),
        PEERS.get(peer or "", "-"),
        ratio(ours.get(figure.key), theirs_all.get(theirs_key)),
    )


def _value(figures: dict[str, Any], key: str, unit: str) -> str:
    if not figures:
        return "-"
    if figures.get("not_applicable"):
        return str(figures["not_applicable"])
    if key in figures and figures[key] is None and key.endswith("next_fire_s"):
        note = figures.get(key.replace("next_fire_s", "note"))
        return note or f"none in {figures.get('observe_s', 0):g} s"
    return fmt(figures.get(key), unit)


def _order(scenario: str) -> tuple[int, int]:
    head, _, size = scenario.partition("-")
    order = ("S1", "S2", "S3", "S4", "S5", "A1", "A2", "M1", "S6", "S7")
    if size in VARIANTS:
        variant = list(VARIANTS).index(size)
    else:
        variant = list(PARTS).index(size) + 1 if size in PARTS else int(size or 0)
    return order.index(head), variant


def _scenario_label(scenario: str) -> str:
    head, _, size = scenario.partition("-")
    if size in VARIANTS:
        return f"{head} {VARIANTS[size]}"
    if size in PARTS:
        return f"{head} {PARTS[size]}"
    if head == "S7":
        return "S7 large store"
    return f"{head} N={size}" if size else head


HEADER = ("scenario", "figure", "ours", "theirs", "peer", "ours/theirs")


def text_table(table: list[tuple[str, ...]], header: tuple[str, ...] = HEADER) -> str:
    widths = [max(len(str(r[i])) for r in [header, *table]) for i in range(len(header))]
    line = "  ".join(f"{{:<{w}}}" for w in widths)
    out = [line.format(*header), line.format(*("-" * w for w in widths))]
    out += [line.format(*r) for r in table]
    return "\n".join(out)


def markdown_table(table: list[tuple[str, ...]], header: tuple[str, ...] = HEADER) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in table]
    return "\n".join(out)


# S6, one row per system --------------------------------------------------------------------

HEAVY_SYSTEMS = (
    ("S6-thread", "ours", "jobservice, thread executor (20 threads)"),
    ("S6-thread", OURS_SPREAD, "jobservice, thread executor, spread over 4 workers"),
    ("S6-rq", "ours", "jobservice, RQ executor (2 RQ workers)"),
    ("S6-thread", "plain", "APScheduler, ThreadPoolExecutor(20)"),
    ("S6-rq", "celery", "Celery, prefork x2 (apply_async eta)"),
)
HEAVY_HEADER = (
    "S6 system", "started/finished", "due->last start", "due->last finish", "p50 late", "p99 late",
    "API p99 leader (n)", "CPU sched", "CPU job workers",
)  # fmt: skip


def heavy_rows(results: Results) -> list[tuple[str, ...]]:
    """S6 as one row per system (the main table pairs them: threads, and worker processes)."""
    out = []
    for scenario, peer, label in HEAVY_SYSTEMS:
        f = results.get(scenario, {}).get(peer)
        if f is None:
            continue
        if f.get("not_applicable"):
            out.append((label, str(f["not_applicable"]), *("" for _ in HEAVY_HEADER[2:])))
            continue
        out.append(
            (
                label,
                f"{f['fired']}/{f['finished']} of {f['jobs']}",
                fmt(f.get("makespan_s"), "s"),
                fmt(f.get("makespan_finish_s"), "s"),
                fmt(f.get("p50_late_ms"), "ms"),
                fmt(f.get("p99_late_ms"), "ms"),
                _api_cell(f),
                fmt(f.get("sched_cpu_s"), "s"),
                "in sched" if f.get("job_workers_cpu_s") is None else fmt(f["job_workers_cpu_s"], "s"),
            )
        )
    return out


def _api_cell(f: dict[str, Any]) -> str:
    if isinstance(f.get("api_p99_leader_ms"), str):
        return str(f["api_p99_leader_ms"])
    return f"{fmt(f.get('api_p99_leader_ms'), 'ms')} ({f.get('api_leader_requests')})"


# S7, below the table --------------------------------------------------------------------------


def scale_lines(results: Results) -> list[str]:
    """S7's stores, seeding, purge and the plans of its statements on the large store."""
    large, small = results.get("S7", {}).get("ours"), results.get("S7", {}).get("small")
    if not large or not small:
        return []
    purge = results.get("S7-purge", {}).get("ours", {})
    lines = ["S7, scale of the store (jobservice, 1 master x 4 workers, thread executor):", ""]
    for label, f in (("small", small), ("large", large)):
        st, seeded = f["store"], f["seeded"]
        lines.append(
            f"* {label} store: {st['jobs']:,} interval jobs every {st['every_s']} s "
            f"({f['due_per_s']} due each second = {f['due_per_s'] / st['jobs']:.1%} of the jobs), "
            f"{seeded['runs']:,} runs ({seeded['old_runs']:,} older than 30 days; "
            f"{seeded['hot_job_runs']:,} of {seeded['hot_job']}, the job whose runs are paged). "
            f"History seeded in {f['seed_s']:.1f} s (INSERT ... SELECT {f['seed_insert_s']:.1f} s, "
            f"indexes {f['seed_indexes_s']:.1f} s, ANALYZE {f['seed_analyze_s']:.1f} s); "
            f"jobs inserted in {f['jobs_insert_s']:.1f} s"
        )
    if purge:
        lines.append(
            f"* purge: jobservice-maintenance run-now ({purge.get('maintenance_status')}) started "
            f"{fmt(purge.get('request_to_start_s'), 's')} after the request, took "
            f"{fmt(purge.get('purge_s'), 's')}, deleted {purge.get('deleted', 0):,} of "
            f"{purge.get('old_runs_before', 0):,} old runs ({purge.get('old_runs_after', 0):,} left); "
            f"p99 lateness during it {fmt(purge.get('p99_late_ms'), 'ms')} "
            f"(first {purge.get('first_s')} s: {fmt(purge.get('first_p99_late_ms'), 'ms')}) against "
            f"{fmt(large.get('p99_late_ms'), 'ms')} without; {purge.get('missed', 0):,} of its "
            f"{purge.get('ideal_fires', 0):,} fire times missed (later than their grace)"
        )
    if purge.get("during"):
        flips = [x["at_s"] for x in purge["during"] if x["pending_full_scan"]]
        plan = f"was a FULL SCAN from {flips[0]:.0f} s on" if flips else "kept its index"
        lines.append(
            f"* during the purge ({len(purge['during'])} snapshots): at most "
            f"{purge.get('max_unstarted_claims', 0):,} claimed runs not started yet; leader pid "
            f"{purge.get('leader_before')} before, {purge.get('leaders_seen')} since; the leader's "
            f"ledger.pending query {plan}; "
            + (
                f"fire times on time again {fmt(purge['recovered_after_s'], 's')} after the purge ended"
                if purge.get("recovered_after_s") is not None
                else "fire times not on time again when the harness stopped looking "
                f"({purge.get('after', {}).get('at_s', 0) - (purge.get('purge_s') or 0):.0f} s after "
                f"the purge ended; {purge.get('after', {}).get('unstarted_claims', 0):,} claimed runs "
                "still not started)"
            )
        )
    settings = large.get("mariadb_settings")
    if settings:
        pool = int(settings.get("innodb_buffer_pool_size", 0)) / 2**20
        lines.append(
            f"* MariaDB: innodb_buffer_pool_size {pool:.0f} MiB, innodb_flush_method "
            f"{settings.get('innodb_flush_method')} (the large store does not fit in the pool)"
        )
    lines += ["", "S7 plans on the large store (EXPLAIN; ANALYZE for the SELECTs: est/read rows, time):", ""]
    for plan in large.get("explain", []):
        lines.append(f"* {plan['name']}: {plan['summary']}" + (" <- FULL SCAN" if plan["full_scan"] else ""))
    return lines


# The machine and the files ------------------------------------------------------------------


def machine(mysql_version: str, redis_version: str) -> dict[str, Any]:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kib = next(
        int(line.split()[1])
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal")
    )
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram_gib": round(mem_kib / 1024 / 1024, 1),
        "mariadb": mysql_version,
        "redis": redis_version,
        "python": platform.python_version(),
        "kernel": platform.release(),
        "jobservice_commit": os.environ.get("BENCH_REF") or _git("rev-parse", "--short", "HEAD"),
        "jobservice_tree": _tree_state(),
        "code": source_digest(Path(__file__).resolve().parent.parent),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def source_digest(root: Path) -> str:
    """A digest of jobservice's code as it is on disk now (jobservice/, run.py, config.py)."""
    digest = hashlib.sha1()
    for path in sorted([*root.glob("jobservice/**/*.py"), root / "run.py", root / "config.py"]):
        if path.is_file():
            digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def _tree_state() -> str:
    if os.environ.get("BENCH_REF"):
        return f"exported from git at {os.environ['BENCH_REF']}"
    return "uncommitted changes" if _git("status", "--porcelain", "--", "jobservice") else "clean"


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def write(path_stem: Path, text: str, raw: dict[str, Any]) -> None:
    path_stem.parent.mkdir(parents=True, exist_ok=True)
    path_stem.with_suffix(".md").write_text(text)
    path_stem.with_suffix(".json").write_text(json.dumps(raw, indent=2, default=str))
