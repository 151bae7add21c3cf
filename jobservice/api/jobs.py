"""Job routes, with Flask-APScheduler 1.13's paths, status codes and JSON shapes."""

from __future__ import annotations

from urllib.parse import urlencode

from apscheduler.jobstores.base import JobLookupError
from flask import Blueprint, Response, request
from flask_apscheduler.json import jsonify

from ..cluster_scheduler import RESCHEDULE
from ..jobstore import StoredJob
from ..scheduler import current_service
from .errors import ApiError, json_body

MAX_PAGE = 1000
MAX_OFFSET = 2**31


def register(bp: Blueprint) -> None:
    bp.post("/jobs")(add_job)
    bp.get("/jobs")(get_jobs)
    bp.get("/jobs/<job_id>")(get_job)
    bp.patch("/jobs/<job_id>")(update_job)
    bp.delete("/jobs/<job_id>")(delete_job)
    bp.post("/jobs/<job_id>/pause")(pause_job)
    bp.post("/jobs/<job_id>/resume")(resume_job)
    bp.post("/jobs/<job_id>/run")(run_job)


def add_job() -> Response:
    """Add a job; only functions of the job packages are accepted (400 otherwise)."""
    service = current_service()
    spec = service.rules.new_job(json_body())
    job = service.scheduler.add_job(**spec)
    service.notify()
    return jsonify(service.scheduler.get_job(job.id))


def get_jobs() -> Response:
    """All jobs, or one page of them with ?limit=&offset= (only that page is read)."""
    service = current_service()
    if "limit" not in request.args and "offset" not in request.args:
        return jsonify(service.store.get_all_jobs())
    limit = _int_arg("limit", MAX_PAGE, 1, MAX_PAGE)
    offset = _int_arg("offset", 0, 0, MAX_OFFSET)
    jobs = service.store.page(limit, offset)
    response = jsonify(jobs)
    if len(jobs) == limit:
        query = urlencode({"limit": limit, "offset": offset + limit})
        response.headers["Link"] = f'<{request.base_url}?{query}>; rel="next"'
    return response


def get_job(job_id: str) -> Response:
    return jsonify(_job(job_id))


def update_job(job_id: str) -> Response:
    """Change some fields; a new trigger replaces the old one and keeps a pause."""
    service = current_service()
    changes = service.rules.changes(json_body(), _job(job_id))
    if changes:
        if "trigger" in changes:
            changes.setdefault("next_run_time", RESCHEDULE)
        service.scheduler.modify_job(job_id, **changes)
        service.notify()
    return jsonify(_job(job_id))


def delete_job(job_id: str) -> Response:
    service = current_service()
    service.scheduler.remove_job(job_id)
    service.notify()
    return Response(status=204)


def pause_job(job_id: str) -> Response:
    service = current_service()
    service.scheduler.pause_job(job_id)
    service.notify()
    return jsonify(_job(job_id))


def resume_job(job_id: str) -> Response:
    service = current_service()
    service.scheduler.resume_job(job_id)
    service.notify()
    # A job with no run time left is removed by APScheduler: answer null, as upstream.
    return jsonify(service.scheduler.get_job(job_id))


def run_job(job_id: str) -> Response:
    """Queue a run now; the leader runs it in the app context and records it. Never blocks."""
    service = current_service()
    service.request_run(job_id)
    return jsonify(_job(job_id))


def _job(job_id: str) -> StoredJob:
    job = current_service().store.lookup_job(job_id)
    if job is None:
        raise JobLookupError(job_id)
    return job


def _int_arg(name: str, default: int, minimum: int, maximum: int) -> int:
    raw = request.args.get(name)
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 12 and minimum <= int(raw) <= maximum):
        raise ApiError(400, f"{name} must be a whole number from {minimum} to {maximum}", name)
    return int(raw)
