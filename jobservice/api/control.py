"""Scheduler-wide routes. Pause, resume, start and shutdown act on the whole cluster."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request

from ..cluster import STOPPED
from ..identity import host_name
from ..runtime import current_runtime
from .errors import ApiError, json_body


def register(bp: Blueprint) -> None:
    bp.get("")(get_scheduler_info)
    bp.post("/pause")(pause_scheduler)
    bp.post("/resume")(resume_scheduler)
    bp.post("/start")(start_scheduler)
    bp.post("/shutdown")(shutdown_scheduler)


def get_scheduler_info() -> Response:
    """Flask-APScheduler's fields (`running`: started and not shut down, also while paused),
    plus this process's role and the cluster's leader and state."""
    runtime = current_runtime()
    state = runtime.cluster.state()
    leader = runtime.leader()
    info = {
        "current_host": host_name(),
        "allowed_hosts": list(runtime.settings.allowed_hosts),
        "running": state != STOPPED,
        "role": runtime.role,
        "leader": leader.worker if leader else None,
        "fence": leader.fence if leader else None,
        "state": state,
        "executor": runtime.settings.executor,
    }
    info.update(runtime.executor_status())
    return jsonify(info)


def pause_scheduler() -> Response:
    """Stop processing due jobs on every process (persisted; survives restarts)."""
    current_runtime().operations.pause_cluster()
    return Response(status=204)


def resume_scheduler() -> Response:
    current_runtime().operations.resume_cluster()
    return Response(status=204)


def start_scheduler() -> Response:
    """Start a cluster that was shut down; 400 if it is already running (or paused), as upstream."""
    if not current_runtime().operations.start_cluster():
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
    if not current_runtime().operations.stop_cluster():
        raise ApiError(400, "Scheduler is not running")
    return Response(status=204)
