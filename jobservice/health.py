"""Monitoring endpoints: GET /health (can this process serve, who leads, is the leader
processing, is any job hung) and GET /metrics (Prometheus).

During an outage both still answer: /health says what is unreachable; /metrics leaves
out what it cannot read, and `jobservice_database_up` and `jobservice_redis_up` say why.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import redis
from flask import Blueprint, Flask, Response, jsonify
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from . import metrics
from .api import errors
from .api.auth import authorized, require_auth
from .models import utcnow
from .runs import overrunning_runs, recently_skipped
from .runtime import Runtime, current_runtime
from .settings import Settings

logger = logging.getLogger(__name__)

#: No pass for longer than this many leases means nobody is processing due jobs.
STALE_PASS_LEASES = 2
#: Fires skipped within this window (max_instances runs still going) make /health degraded.
SKIPPED_WINDOW_S = 600
RQ_COUNTS = {
    "timeouts": "Runs RQ work-horses stopped at their timeout_s (all workers).",
    "retries": "Failed runs RQ work-horses gave another attempt (all workers).",
    "overruns": "Runs RQ work-horses flagged overrunning (all workers).",
}


def init_app(app: Flask, settings: Settings) -> None:
    """GET /health and GET /metrics, each if enabled (the standalone service enables both)."""
    if not (settings.health_enabled or settings.metrics_enabled):
        return
    bp = Blueprint("jobservice", __name__)
    errors.register(bp)
    if settings.health_enabled:
        bp.get("/health")(health)
    if settings.metrics_enabled:
        metrics.forget_dead_processes()
        bp.get("/metrics")(prometheus_metrics)
    app.register_blueprint(bp)


def health() -> tuple[Response, int]:
    """200 while the database answers (status ok or degraded), 503 when it does not.

    With credentials configured (SCHEDULER_API_TOKEN, SCHEDULER_AUTH), a request without
    them gets the status alone: the load balancer needs only that, and the rest (who leads,
    which jobs hang) is the operator's.
    """
    body = report(current_runtime())
    code = 503 if body["status"] == "error" else 200
    if not authorized():
        return jsonify(status=body["status"]), code
    return jsonify(body), code


def report(service: Runtime) -> dict[str, Any]:
    """What /health says (and the dashboard's cluster view shows)."""
    body: dict[str, Any] = {
        "role": service.role,
        "database": _database(service),
        "redis": _redis(service),
        "leader": None,
        "fence": None,
        "lease_seconds_left": None,
        "seconds_since_last_pass": None,
        "jobs": None,
        "executor": service.settings.executor,
        "reasons": [],
    }
    body.update(service.executor_status())
    leader = service.leader()
    if leader is not None:
        body.update(
            leader=leader.worker,
            fence=leader.fence,
            lease_seconds_left=_rounded(service.lease_seconds_left()),
        )
    if body["database"] != "ok":
        body["status"] = "error"
        body["reasons"] = ["the database is unreachable"]
        return body
    try:
        state = service.cluster.snapshot()
        if state["last_pass_at"] is not None:
            body["seconds_since_last_pass"] = round(metrics.seconds_since(state["last_pass_at"]), 3)
        body["jobs"] = service.store.count()
        body["reasons"] = _degraded(service, body, paused=state["paused"] or state["stopped"])
    except SQLAlchemyError as exc:  # it went away after the first check
        logger.warning("Health: database unreachable (%s)", exc.__class__.__name__)
        body.update(database="unreachable", status="error", reasons=["the database is unreachable"])
        return body
    body["status"] = "degraded" if body["reasons"] else "ok"
    return body


def _degraded(service: Runtime, body: dict[str, Any], paused: bool) -> list[str]:
    """Why this deployment is not fully well: each reason a sentence an operator can act on."""
    reasons = []
    if body["redis"] == "unreachable":
        reasons.append("Redis is unreachable: nobody can lead until it is back")
    if body["leader"] is None:
        reasons.append("no process leads: due jobs are not being run")
    if body.get("rq", {}).get("workers") == 0:
        reasons.append(
            "no RQ worker serves this service's queues: runs wait in them (start `flask jobservice worker`)"
        )
    since = body["seconds_since_last_pass"]
    stale = since is None or since > STALE_PASS_LEASES * service.lease_s
    if body["leader"] is not None and not paused and stale:
        reasons.append(f"the leader has not processed due jobs for {since}s" if since else "no pass yet")
    for run in overrunning_runs(service.engine):
        reasons.append(
            f"job {run['job_id']} is overrunning: run {run['id']} on {run['worker']} "
            f"started at {run['started_at'].isoformat()} and is still going"
        )
    skipped = recently_skipped(service.engine, utcnow() - timedelta(seconds=SKIPPED_WINDOW_S))
    for job_id, count in skipped.items():
        reasons.append(
            f"job {job_id} had {count} fire(s) skipped in the last {SKIPPED_WINDOW_S // 60} minutes: "
            "max_instances runs of it were still going"
        )
    return reasons


def prometheus_metrics() -> Response:
    """Prometheus text format; behind the API token when METRICS_REQUIRE_TOKEN is on."""
    runtime = current_runtime()
    if runtime.settings.metrics_require_token:
        refused = require_auth()
        if refused is not None:
            return refused
    payload, content_type = metrics.exposition(ClusterCollector(runtime))
    return Response(payload, content_type=content_type)


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _database(service: Runtime) -> str:
    try:
        with service.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        logger.warning("Health: database unreachable (%s)", exc.__class__.__name__)
        return "unreachable"
    return "ok"


def _redis(service: Runtime) -> str:
    if service.redis is None:
        return "not configured"
    try:
        service.redis.ping()
    except (redis.RedisError, OSError):
        return "unreachable"
    return "ok"


class ClusterCollector(Collector):
    """Values that belong to the cluster, not to a process: read when scraped, each source
    on its own, so an outage of one leaves the others (and says so)."""

    def __init__(self, service: Runtime) -> None:
        self.service = service

    def collect(self) -> Iterator[Metric]:
        yield from self._database()
        yield from self._lease()
        yield from self._rq()

    def _rq(self) -> Iterator[Metric]:
        """RQ workers, queue depths, and what every work-horse counted (kept in Redis)."""
        status = self.service.rq_status()
        if status is None or status["workers"] is None:
            return
        yield _gauge("jobservice_rq_workers", "RQ workers serving this service's queues.", status["workers"])
        depth = GaugeMetricFamily(
            "jobservice_rq_queue_depth", "Runs waiting in each RQ queue.", labels=["queue"]
        )
        for queue, count in status["queues"].items():
            depth.add_metric([queue], count)
        yield depth
        from .rqworker import read_tally

        try:
            tally = read_tally(self.service.rq_connection(), self.service.cluster.cluster_id)
        except (redis.RedisError, OSError, SQLAlchemyError):
            return
        runs = CounterMetricFamily(
            "jobservice_rq_runs", "Runs RQ work-horses ended, by status (all workers).", labels=["status"]
        )
        for field, value in sorted(tally.items()):
            if field.startswith("runs:"):
                runs.add_metric([field[5:]], value)
        yield runs
        for field, documentation in RQ_COUNTS.items():
            family = CounterMetricFamily(f"jobservice_rq_{field}", documentation)
            family.add_metric([], tally.get(field, 0))
            yield family

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
        since = None if state["last_pass_at"] is None else metrics.seconds_since(state["last_pass_at"])
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
