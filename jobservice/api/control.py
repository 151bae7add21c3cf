"""Scheduler-wide routes. Pause, resume, start and shutdown act on the whole cluster."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request

from ..identity import host_name
from ..scheduler import current_service
from .errors import ApiError, json_body


def register(bp: Blueprint) -> None:
    bp.get("")(get_scheduler_info)
    bp.post("/pause")(pause_scheduler)
    bp.post("/resume")(resume_scheduler)
    bp.post("/start")(start_scheduler)
    bp.post("/shutdown")(shutdown_scheduler)


def get_scheduler_info() -> Response:
    """Flask-APScheduler's fields, plus this process's role and the cluster's leader and state."""
    service = current_service()
    paused = service.cluster.paused()
    leader = service.leader()
    return jsonify(
        current_host=host_name(),
        allowed_hosts=["*"],
        running=not paused,
        role=service.role,
        leader=leader.worker if leader else None,
        fence=leader.fence if leader else None,
        state="paused" if paused else "running",
    )


def pause_scheduler() -> Response:
    """Stop processing due jobs on every process (persisted; survives restarts)."""
    current_service().set_paused(True)
    return Response(status=204)


def resume_scheduler() -> Response:
    current_service().set_paused(False)
    return Response(status=204)


def start_scheduler() -> Response:
    """Start processing cluster-wide; 400 if it is already running, as upstream."""
    if not current_service().set_paused(False):
        raise ApiError(400, "Scheduler is already running")
    return Response(status=204)


def shutdown_scheduler() -> Response:
    """Stop processing cluster-wide (processes stay up, in standby); 400 if already stopped."""
    if request.get_data(cache=True).strip():
        body = json_body()
        if not isinstance(body, dict) or set(body) - {"wait"}:
            raise ApiError(400, 'the body may only be {"wait": true|false}', "wait")
        if not isinstance(body.get("wait", True), bool):
            raise ApiError(400, "wait must be true or false", "wait")
    if not current_service().set_paused(True):
        raise ApiError(400, "Scheduler is not running")
    return Response(status=204)
