"""Prometheus metrics (served at GET /metrics by health.py), correct under several gunicorn workers.

Runs happen in whichever worker leads, while /metrics is answered by any worker, so
the per-process numbers go through prometheus_client's multi-process mode (each
process writes its values to files in PROMETHEUS_MULTIPROC_DIR; a scrape sums
them). The cluster's own numbers (jobs in the store, lease time left, last pass)
are read at scrape time from the database and the lease. During an outage the
scrape still answers: what cannot be read is left out, and `jobservice_database_up`
and `jobservice_redis_up` say why.
"""

from __future__ import annotations

import atexit
import os
import re
from collections.abc import Iterable, Iterator
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

# prometheus_client picks its mode when it is first imported: point it at a directory
# this host's workers share before that happens. An explicit setting wins.
DEFAULT_DIR = Path(__file__).resolve().parent.parent / "instance" / "prometheus"
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    DEFAULT_DIR.mkdir(parents=True, exist_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(DEFAULT_DIR)

import redis  # noqa: E402
from prometheus_client import (  # noqa: E402
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily, Metric  # noqa: E402
from prometheus_client.registry import Collector  # noqa: E402
from sqlalchemy.exc import SQLAlchemyError  # noqa: E402

from .models import SCHEDULED, utcnow  # noqa: E402
from .runs import overrunning_runs  # noqa: E402

if TYPE_CHECKING:
    from .runtime import Runtime

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
DEAD_RUNS = Counter(
    "jobservice_dead_runs", "Runs closed as failed because the process running them stopped beating."
)
LEADER = Gauge("jobservice_leader", "1 while this process leads, else 0.", multiprocess_mode="liveall")
LEADERSHIP_CHANGES = Counter("jobservice_leadership_changes", "Changes of role in this process.", ["change"])

_FILE_PID = re.compile(r"_(\d+)\.db$")


def exposition(service: Runtime) -> tuple[bytes, str]:
    """Every worker's numbers summed, plus the cluster's own, in Prometheus text format."""
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    registry.register(ClusterCollector(service))
    return generate_latest(registry), CONTENT_TYPE_LATEST


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


def dead_run_closed() -> None:
    DEAD_RUNS.inc()


class ClusterCollector(Collector):
    """Values that belong to the cluster, not to a process: read when scraped, each source
    on its own, so an outage of one leaves the others (and says so)."""

    def __init__(self, service: Runtime) -> None:
        self.service = service

    def collect(self) -> Iterator[Metric]:
        yield from self._database()
        yield from self._lease()

    def _database(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("jobservice_database_up", "1 if this scrape could read the database, else 0.")
        try:
            count = self.service.store.count()
            state = self.service.cluster.snapshot()
            overrunning = len(overrunning_runs(self.service.engine))
        except SQLAlchemyError:
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield _gauge("jobservice_jobs", "Jobs in the store.", count)
        paused = 1 if state["paused"] else 0
        yield _gauge("jobservice_cluster_paused", "1 while processing is paused everywhere.", paused)
        since = None if state["last_pass_at"] is None else seconds_since(state["last_pass_at"])
        yield _gauge(
            "jobservice_seconds_since_last_pass", "Seconds since the leader last processed due jobs.", since
        )
        yield _gauge("jobservice_runs_overrunning", "Runs going past their job's interval now.", overrunning)

    def _lease(self) -> Iterator[Metric]:
        if self.service.redis is not None:
            try:
                reachable = bool(self.service.redis.ping())
            except (redis.RedisError, OSError):
                reachable = False
            yield _gauge("jobservice_redis_up", "1 if this scrape could reach Redis, else 0.", int(reachable))
        leader = self.service.leader()
        fence = None if leader is None else leader.fence
        yield _gauge("jobservice_leader_fence", "Fencing number of the current leader.", fence)
        yield _gauge(
            "jobservice_lease_seconds_left",
            "Seconds before the leader's lease expires.",
            self.service.lease_seconds_left(),
        )


def _gauge(name: str, documentation: str, value: float | None) -> GaugeMetricFamily:
    """A gauge family with one sample, or none when the value is unknown."""
    family = GaugeMetricFamily(name, documentation)
    if value is not None:
        family.add_metric([], value)
    return family


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
