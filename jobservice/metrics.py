"""Prometheus metrics (served at GET /metrics by health.py), correct under several gunicorn workers.

Runs happen in whichever worker leads, while /metrics is answered by any worker, so
the per-process numbers go through prometheus_client's multi-process mode (each
process writes its values to files in PROMETHEUS_MULTIPROC_DIR; a scrape sums
them). The cluster's own numbers (jobs in the store, lease time left, last pass)
are read at scrape time by health.ClusterCollector, beside the /metrics route.
"""

from __future__ import annotations

import atexit
import os
import re
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

# prometheus_client picks its mode when it is first imported: point it at a directory
# this host's workers share before that happens: `instance/prometheus` where the app is
# started (where Flask keeps an app's instance folder too). An explicit setting wins; where
# that directory cannot be made, each process keeps its own numbers.
DEFAULT_DIR = Path.cwd() / "instance" / "prometheus"
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    try:
        DEFAULT_DIR.mkdir(parents=True, exist_ok=True)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(DEFAULT_DIR)
    except OSError:
        pass

from prometheus_client import (  # noqa: E402
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.registry import Collector  # noqa: E402

from .models import SCHEDULED, utcnow  # noqa: E402

LATENESS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
DURATION_BUCKETS = (0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600)

RUNS = Counter("jobservice_runs", "Runs that ended, by job and status.", ["job_id", "status"])
# The histograms are not by job: job ids are unbounded, and each label value of a
# histogram costs a file entry per bucket in every process (8 MiB and 0.3 ms a run for
# 1000 jobs). A job's own lateness and duration are in its run history.
RUN_DURATION = Histogram(
    "jobservice_run_duration_seconds", "How long runs took.", ["trigger"], buckets=DURATION_BUCKETS
)
RUN_LATENESS = Histogram(
    "jobservice_run_lateness_seconds",
    "Start time minus scheduled time of scheduled runs.",
    buckets=LATENESS_BUCKETS,
)
CLAIMS_REFUSED = Counter(
    "jobservice_claims_refused", "Claims refused because the fire time was already claimed.", ["job_id"]
)
OVERRUNS = Counter(
    "jobservice_overruns", "Runs flagged overrunning: still going past their job's interval.", ["job_id"]
)
RETRIES = Counter("jobservice_retries", "Failed runs given another attempt, by job.", ["job_id"])
DEAD_RUNS = Counter(
    "jobservice_dead_runs", "Runs closed as failed because the process running them stopped beating."
)
LEADER = Gauge("jobservice_leader", "1 while this process leads, else 0.", multiprocess_mode="liveall")
LEADERSHIP_CHANGES = Counter("jobservice_leadership_changes", "Changes of role in this process.", ["change"])

_FILE_PID = re.compile(r"_(\d+)\.db$")


def exposition(cluster: Collector) -> tuple[bytes, str]:
    """Every worker's numbers summed, plus the cluster's own (read when scraped by
    `cluster`), in Prometheus text format."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:  # no shared directory: this process's own numbers
        registry = REGISTRY
    registry.register(cluster)
    try:
        return generate_latest(registry), CONTENT_TYPE_LATEST
    finally:
        if registry is REGISTRY:
            registry.unregister(cluster)


def run_ended(
    job_id: str, status: str, trigger: str, lateness_s: float | None, duration_s: float | None
) -> None:
    """Count a run and observe its lateness (scheduled runs only) and duration."""
    _child(RUNS, job_id, status).inc()
    if lateness_s is not None and trigger == SCHEDULED:
        RUN_LATENESS.observe(lateness_s)
    if duration_s is not None:
        _child(RUN_DURATION, trigger).observe(duration_s)


_children: dict[tuple[object, ...], Any] = {}


def _child(metric: Counter | Histogram, *labels: str) -> Any:
    """`metric.labels(*labels)`, cached: `labels()` takes the metric's lock on every call,
    which every job thread of a burst would queue on."""
    key = (metric, *labels)
    child = _children.get(key)
    if child is None:
        child = _children[key] = metric.labels(*labels)
    return child


def claims_refused(job_id: str) -> None:
    _child(CLAIMS_REFUSED, job_id).inc()


def run_overrunning(job_id: str) -> None:
    _child(OVERRUNS, job_id).inc()


def retry_scheduled(job_id: str) -> None:
    _child(RETRIES, job_id).inc()


def dead_run_closed() -> None:
    DEAD_RUNS.inc()


def seconds_since(moment: datetime) -> float:
    return max((utcnow() - moment).total_seconds(), 0.0)


def leadership_changed(fence: int | None, reason: str) -> None:
    LEADER.set(0 if fence is None else 1)
    LEADERSHIP_CHANGES.labels(reason).inc()


_tidied = False


def forget_dead_processes() -> None:
    """Drop live gauges of processes that died without a word (kill -9); ours go at exit."""
    global _tidied
    if _tidied:
        return
    _tidied = True
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return
    directory = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    dead = []
    for path in directory.glob("gauge_live*.db"):
        match = _FILE_PID.search(path.name)
        if match and not _alive(int(match[1])):
            dead.append(path)
    drop_files(dead)
    me = os.getpid()
    atexit.register(lambda: drop_files(directory.glob(f"gauge_live*_{me}.db")))


def drop_files(paths: Iterable[Path]) -> None:
    """Remove live-gauge files (prometheus_client's mark_process_dead, without its race:
    workers starting together find the same dead files, and the second remove must not
    fail a worker's start, which would stop its whole gunicorn master)."""
    for path in paths:
        path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
