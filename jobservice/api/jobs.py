"""Job routes, with Flask-APScheduler 1.13's paths, status codes and JSON shapes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import urlencode

from apscheduler.job import Job
from apscheduler.jobstores.base import JobLookupError
from flask import Blueprint, Response, request
from flask_apscheduler.json import jsonify
from flask_apscheduler.utils import job_to_dict

from ..cluster_scheduler import RESCHEDULE
from ..jobstore import Entry, StoredJob
from ..payloads import job_payloads
from ..scheduler import current_service
from .errors import json_body
from .params import int_arg

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
    # The job as stored (APScheduler filled in its defaults and next run): no re-read,
    # and no history to look up: it has not run yet.
    return jsonify({**job_to_dict(job), "last_run": None})


def get_jobs() -> Response:
    """All jobs, or one page of them with ?limit=&offset= (only that page is read)."""
    service = current_service()
    if "limit" not in request.args and "offset" not in request.args:
        return jsonify(_with_last_run(service.store.entries()))
    limit = int_arg("limit", MAX_PAGE, 1, MAX_PAGE)
    offset = int_arg("offset", 0, 0, MAX_OFFSET)
    jobs = service.store.page(limit, offset)
    response = jsonify(_with_last_run(jobs))
    if len(jobs) == limit:
        query = urlencode({"limit": limit, "offset": offset + limit})
        response.headers["Link"] = f'<{request.base_url}?{query}>; rel="next"'
    return response


def get_job(job_id: str) -> Response:
    """One job; a row that cannot be read answers with its `error` (remove it, or re-add it)."""
    entry = current_service().store.lookup_entry(job_id)
    if entry is None:
        raise JobLookupError(job_id)
    return jsonify(_with_last_run([entry])[0])


def update_job(job_id: str) -> Response:
    """Change some fields; a new trigger replaces the old one and keeps a pause."""
    service = current_service()
    changes = service.rules.changes(json_body(), _job(job_id))
    if changes:
        if "trigger" in changes:
            changes.setdefault("next_run_time", RESCHEDULE)
        service.scheduler.modify_job(job_id, **changes)
        service.notify()
    return _job_response(job_id)


def delete_job(job_id: str) -> Response:
    service = current_service()
    service.scheduler.remove_job(job_id)
    service.notify()
    return Response(status=204)


def pause_job(job_id: str) -> Response:
    service = current_service()
    service.scheduler.pause_job(job_id)
    service.notify()
    return _job_response(job_id)


def resume_job(job_id: str) -> Response:
    service = current_service()
    service.scheduler.resume_job(job_id)
    service.notify()
    # A job with no run time left is removed by APScheduler: answer null, as upstream.
    if service.store.lookup_job(job_id) is None:
        return jsonify(None)
    return _job_response(job_id)


def run_job(job_id: str) -> Response:
    """Queue a run now; the leader runs it in the app context and records it. Never blocks."""
    service = current_service()
    service.request_run(job_id)
    return _job_response(job_id)


def _job_response(job_id: str) -> Response:
    return jsonify(_with_last_run([_job(job_id)])[0])


def _with_last_run(jobs: Sequence[Job | Entry]) -> list[dict[str, Any]]:
    return job_payloads(current_service(), jobs)


def _job(job_id: str) -> StoredJob:
    job = current_service().store.lookup_job(job_id)
    if job is None:
        raise JobLookupError(job_id)
    return job
