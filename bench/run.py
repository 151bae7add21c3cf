"""`python -m bench.run [--quick] [--only S3,S4] [--profile]`: every scenario, jobservice and its peers.

Prints the machine, one table (scenario, figure, ours, theirs, peer, ratio) and the
targets, and writes them (markdown) with every raw number (JSON) to bench/results/.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis
from sqlalchemy import create_engine

from . import procs, report, targets
from .groups import Results, groups
from .plan import FULL, QUICK, SCENARIOS, Context
from .rqworkers import forget_redis_keys
from .store import Databases, create_fires_table, scalar

RESULTS_DIR = Path(__file__).resolve().parent / "results"
LEGEND = """\
Peers (theirs), all on the same MariaDB and Redis, with the same job body:
  APScheduler = plain APScheduler 3.11 BackgroundScheduler + SQLAlchemyJobStore + ThreadPoolExecutor(20),
                one scheduler per process (S1/S2: two processes on one store; S3/S4: one process).
  FAS naive   = Flask-APScheduler 1.13 under gunicorn, every worker starts its scheduler
                (S1/S2/S5: 2 masters x 3 workers; S4/M1: 1 worker; A1/A2: 4 workers).
  FAS flock   = the same, but only the worker that wins an fcntl lock at start-up starts its
                scheduler (one lock file for the machine, tried once).
  Celery      = Celery 5 beat (celery-redbeat, lock timeout 5 s, max loop interval 1 s) + one
                worker (prefork, concurrency 2); S6's jobs are sent with apply_async(eta=due).
jobservice: S1/S2/S5 on 2 masters x 3 workers; S3/S4/M1/A1/A2/S6 on 1 master x 4 workers.
"S1..S5 spread runs": the same deployments with SPREAD_RUNS=true: the leader claims and pushes
each run to a Redis list, the other workers take and start them (the leader's CPU alone is
"CPU per fire, scheduling process"; the takers' is in the JSON's cpu_s).
"S1..S5 RQ executor": the same deployments with SCHEDULER_EXECUTOR=rq and 2 RQ workers
(`flask jobservice worker`, a work-horse forked per run) beside them, against APScheduler
where it was measured (targets are for the thread executor); S2 strikes the same processes.
A1 theirs: Flask-APScheduler has no paging, so its only listing is the whole list.
S6: thread executor against APScheduler's thread pool (misfire_grace_time None), RQ executor
(2 RQ workers) against Celery; API p99 of one client GETting /health on the leader's worker
during the burst (the other 3 workers are kept busy with idle connections).
S7: not a peer but a store size: "ours" is the large store (jobs, run history), "theirs" the small
one with the same fires per second; "S7 large store, during the purge" is the large store while
jobservice-maintenance purges its old runs, against its own window without the purge."""


def log(began: float, message: str) -> None:
    print(f"[{time.monotonic() - began:6.1f}s] {message}", file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a reduced run of every scenario (about 4 min)")
    parser.add_argument("--only", default="", help=f"comma-separated scenarios among {','.join(SCENARIOS)}")
    parser.add_argument(
        "--profile", action="store_true", help="py-spy the jobservice leader during S3 and S4"
    )
    parser.add_argument(
        "--no-rq", action="store_true", help="leave out the RQ executor's deployments (quicker)"
    )
    parser.add_argument(
        "--mysql", default=os.environ.get("BENCH_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/")
    )
    parser.add_argument("--redis", default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"))
    parser.add_argument(
        "--ref",
        help="measure jobservice as committed at this git ref (exported to a temporary directory, "
        "with this bench/) instead of the working tree, which someone may be editing",
    )
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    unknown = {s for s in args.only.upper().split(",") if s} - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    return args


def run_at_ref(ref: str, argv: list[str]) -> int:
    """Export `ref` with git archive, put this bench/ beside it, and run the harness there."""
    with tempfile.TemporaryDirectory(prefix="jobservice-bench-") as tmp:
        archive = subprocess.run(["git", "archive", ref], cwd=procs.ROOT, capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", tmp], input=archive.stdout, check=True)
        shutil.rmtree(Path(tmp, "bench"), ignore_errors=True)
        shutil.copytree(Path(__file__).parent, Path(tmp, "bench"), ignore=shutil.ignore_patterns("results"))
        rest = [a for i, a in enumerate(argv) if a != "--ref" and (i == 0 or argv[i - 1] != "--ref")]
        rest = [a for a in rest if not a.startswith("--ref=")]
        command = [sys.executable, "-m", "bench.run", *rest, "--results-dir", str(RESULTS_DIR)]
        sha = subprocess.run(
            ["git", "rev-parse", "--short", ref], cwd=procs.ROOT, capture_output=True, text=True
        )
        env = {**os.environ, "BENCH_REF": f"{ref} = {sha.stdout.strip()}"}
        return subprocess.run(command, cwd=tmp, env=env).returncode


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.ref:
        return run_at_ref(args.ref, sys.argv[1:] if argv is None else argv)
    results_dir: Path = args.results_dir
    plan = QUICK if args.quick else FULL
    only = frozenset(s for s in args.only.upper().split(",") if s) or frozenset(SCENARIOS)
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    began = time.monotonic()
    dbs = Databases(args.mysql, secrets.token_hex(3))
    client = redis.Redis.from_url(args.redis)
    info = report.machine(dbs.version(), str(client.info("server")["redis_version"]))
    fires_url = dbs.create()
    create_fires_table(fires_url)
    log_dir = results_dir / f"logs-{stamp}"
    ctx = Context(
        plan=plan,
        dbs=dbs,
        fires_url=fires_url,
        fires=create_engine(fires_url, pool_size=2),
        redis_url=args.redis,
        log_dir=log_dir,
        profile_dir=log_dir / "profiles" if args.profile else None,
        only=only,
    )
    if ctx.profile_dir is not None:
        ctx.profile_dir.mkdir(parents=True, exist_ok=True)
    results: Results = {}
    failures: list[str] = []
    try:
        for name, serves, run in groups(ctx):
            if not ctx.wants(*serves) or (args.no_rq and "RQ executor" in name):
                continue
            log(began, f"{name}: {', '.join(s for s in serves if s in only)}")
            try:
                for scenario, by_peer in run(ctx).items():
                    for peer, figures in by_peer.items():  # M1's ours comes from two groups
                        results.setdefault(scenario, {}).setdefault(peer, {}).update(figures)
            except Exception as exc:  # noqa: BLE001 (one failed group must not lose the others' results)
                traceback.print_exc()
                procs.stop_all()
                failures.append(f"{name}: {type(exc).__name__}: {str(exc)[:2000]}")
                log(began, f"FAILED {failures[-1]}")
    finally:
        procs.stop_all()
        _forget_redis_keys(ctx, client)
        ctx.fires.dispose()
        dbs.drop_all()
    wall_s = time.monotonic() - began
    log(began, "done")
    text = render(plan.name, stamp, info, results, wall_s, args.profile)
    if len(set(ctx.code.values())) > 1:
        text += (
            "\n\nWARNING: jobservice's code changed during this run (digest per deployment): "
            + ", ".join(f"{name} {digest}" for name, digest in ctx.code.items())
        )
    if failures:
        text += "\n\nFAILED (their figures are missing):\n" + "\n".join(f"- {f}" for f in failures)
    print(text)
    stem = results_dir / f"bench-{stamp}-{plan.name}"
    raw = {
        "plan": plan.__dict__,
        "machine": info,
        "wall_s": wall_s,
        "results": results,
        "failures": failures,
        "code_per_deployment": ctx.code,
    }
    report.write(stem, text, raw)
    print(f"\nWritten: {stem.with_suffix('.md')} and {stem.with_suffix('.json')}; logs in {log_dir}")
    return 1 if failures else 0


def render(
    name: str, stamp: str, info: dict[str, Any], results: Results, wall_s: float, profiled: bool
) -> str:
    """The whole printed report, in markdown (readable as plain text too)."""
    lines = [
        f"# jobservice benchmark ({name} run, {stamp} UTC, wall time {wall_s:.0f} s)",
        "",
        f"Machine: {info['cpu']}, {info['cores']} cores, {info['ram_gib']} GiB RAM; "
        f"MariaDB {info['mariadb']}; Redis {info['redis']}; Python {info['python']}; "
        f"jobservice {info['jobservice_commit']} "
        f"(jobservice/: {info['jobservice_tree']}; code digest {info['code']}); "
        f"load average at start {info['load_average_at_start']}",
    ]
    if profiled:
        lines += ["", "NOTE: py-spy sampled the jobservice leader during S3 and S4 in this run."]
    lines += ["", "```", report.text_table(report.rows(results)), "```", "", LEGEND, ""]
    heavy = report.heavy_rows(results)
    if heavy:
        lines += ["```", report.text_table(heavy, report.HEAVY_HEADER), "```", ""]
    scale = report.scale_lines(results)
    if scale:
        lines += [*scale, ""]
    met = targets.targets(results)
    if met:
        lines += [
            "Targets (jobservice):",
            "",
            report.markdown_table(met, ("target", "measured", "result")),
            "",
        ]
    for scenario, by_peer in sorted(results.items()):
        for peer, figures in by_peer.items():
            groups = [(k, g, v) for k, p in figures.items() if k.startswith("profile") for g, v in p.items()]
            for key, group, shares in groups:
                if group == "other threads":
                    continue
                text = ", ".join(
                    f"{k} {v:.0%}" for k, v in shares.items() if k != "active_samples" and v >= 0.005
                )
                samples = int(shares["active_samples"])
                where = key.removeprefix("profile").strip(" ()") or "leader"
                lines.append(f"Profile {scenario} {peer} {where}, {group} ({samples} busy samples): {text}")
    return "\n".join(lines)


def _forget_redis_keys(ctx: Context, client: redis.Redis) -> None:
    """Delete the Redis keys jobservice made for our databases (it namespaces them per database),
    and those of our RQ queues and Celery (their names contain the deployment's prefix)."""
    for d in ctx.deployments:
        if d.kind == "celery" or d.n_rq_workers:
            try:
                forget_redis_keys(client, d.redis_prefix, d.rq_worker_keys)
            except Exception as exc:  # noqa: BLE001 (clean-up is best effort)
                print(f"warning: could not clean RQ/Celery keys of {d.name}: {exc}", file=sys.stderr)
        if d.kind != "ours":
            continue
        try:
            cluster_id = scalar(d.store_url, "SELECT cluster_id FROM jobservice_cluster WHERE id = 1")
            keys = list(client.scan_iter(match=f"jobservice:{cluster_id}:*"))
            if keys:
                client.delete(*keys)
        except Exception as exc:  # noqa: BLE001 (clean-up is best effort)
            print(f"warning: could not clean Redis keys of {d.name}: {exc}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
