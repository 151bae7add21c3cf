"""GET /health: can this process serve, who leads, and are the database and Redis reachable."""

from __future__ import annotations

import logging

import redis
from flask import Blueprint, Flask, Response, jsonify
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from .scheduler import JobService, current_service

logger = logging.getLogger(__name__)

bp = Blueprint("health", __name__)


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)


@bp.get("/health")
def health() -> tuple[Response, int]:
    """200 while the database answers (status ok or degraded), 503 when it does not."""
    service = current_service()
    database = _database(service)
    redis_state = _redis(service)
    leader = service.leader()
    jobs = service.store.count() if database == "ok" else None
    if database != "ok":
        status = "error"
    elif redis_state == "unreachable" or leader is None:
        status = "degraded"
    else:
        status = "ok"
    body = {
        "status": status,
        "role": service.role,
        "leader": leader.worker if leader else None,
        "fence": leader.fence if leader else None,
        "database": database,
        "redis": redis_state,
        "jobs": jobs,
    }
    return jsonify(body), 200 if database == "ok" else 503


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
