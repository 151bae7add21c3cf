"""Monitoring endpoints: GET /health (can this process serve, who leads, is the leader
processing) and GET /metrics (Prometheus)."""

from __future__ import annotations

import logging
from typing import Any

import redis
from flask import Blueprint, Flask, Response, current_app, jsonify
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from . import metrics
from .api.auth import require_token
from .scheduler import JobService, current_service

logger = logging.getLogger(__name__)

#: No pass for longer than this many leases means nobody is processing due jobs.
STALE_PASS_LEASES = 2


def init_app(app: Flask) -> None:
    bp = Blueprint("monitoring", __name__)
    bp.get("/health")(health)
    if app.config["METRICS_ENABLED"]:
        metrics.forget_dead_processes()
        bp.get("/metrics")(prometheus_metrics)
    app.register_blueprint(bp)


def health() -> tuple[Response, int]:
    """200 while the database answers (status ok or degraded), 503 when it does not."""
    service = current_service()
    body: dict[str, Any] = {
        "role": service.role,
        "database": _database(service),
        "redis": _redis(service),
        "leader": None,
        "fence": None,
        "lease_seconds_left": None,
        "seconds_since_last_pass": None,
        "jobs": None,
    }
    leader = service.leader()
    if leader is not None:
        body.update(
            leader=leader.worker,
            fence=leader.fence,
            lease_seconds_left=_rounded(service.lease_seconds_left()),
        )
    if body["database"] == "ok":
        state = service.cluster.snapshot()
        if state["last_pass_at"] is not None:
            body["seconds_since_last_pass"] = round(metrics.seconds_since(state["last_pass_at"]), 3)
        body["jobs"] = service.store.count()
        body["status"] = _status(service, body, paused=state["paused"])
        return jsonify(body), 200
    body["status"] = "error"
    return jsonify(body), 503


def prometheus_metrics() -> Response:
    """Prometheus text format; behind the API token when METRICS_REQUIRE_TOKEN is on."""
    if current_app.config["METRICS_REQUIRE_TOKEN"]:
        refused = require_token()
        if refused is not None:
            return refused
    payload, content_type = metrics.exposition(current_service())
    return Response(payload, content_type=content_type)


def _status(service: JobService, body: dict[str, Any], paused: bool) -> str:
    """ok, or degraded: Redis unreachable, no leader, or a leader that has stopped passing."""
    if body["redis"] == "unreachable" or body["leader"] is None:
        return "degraded"
    since = body["seconds_since_last_pass"]
    if not paused and (since is None or since > STALE_PASS_LEASES * service.lease_s):
        return "degraded"
    return "ok"


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _database(service: JobService) -> str:
    try:
        with service.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        logger.warning("Health: database unreachable (%s)", exc.__class__.__name__)
        return "unreachable"
    return "ok"


def _redis(service: JobService) -> str:
    if service.redis is None:
        return "not configured"
    try:
        service.redis.ping()
    except redis.RedisError:
        return "unreachable"
    return "ok"
