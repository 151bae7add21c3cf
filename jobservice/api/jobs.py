"""Job routes, with Flask-APScheduler 1.13's paths, status codes and JSON shapes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import urlencode

from apscheduler.job import Job
from apscheduler.jobstores.base import JobLookupError
from flask import Blueprint, Response, request
from flask_apscheduler.json import jsonify

from ..errors import InvalidJob
from ..job_json import job_dict, job_payloads
from ..jobstore import Entry
from ..runtime import current_runtime
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
    job = current_runtime().operations.add(json_body())
    # The job as stored (APScheduler filled in its defaults and next run): no re-read,
    # and no history to look up: it has not run yet.
    return jsonify({**job_dict(job), "last_run": None})


def get_jobs() -> Response:
    """All jobs, or one page of them with ?limit=&offset= (only that page is read)."""
    store = current_runtime().store
    if "limit" not in request.args and "offset" not in request.args:
        return jsonify(_with_last_run(store.entries()))
    limit = int_arg("limit", MAX_PAGE, 1, MAX_PAGE)
    offset = int_arg("offset", 0, 0, MAX_OFFSET)
    jobs = store.page(limit, offset)
    response = jsonify(_with_last_run(jobs))
    if len(jobs) == limit:
        query = urlencode({"limit": limit, "offset": offset + limit})
        response.headers["Link"] = f'<{request.base_url}?{query}>; rel="next"'
    return response


def get_job(job_id: str) -> Response:
    """One job; a row that cannot be read answers with its `error` (remove it, or re-add it)."""
    entry = current_runtime().store.lookup_entry(job_id)
    if entry is None:
        raise JobLookupError(job_id)
    return _job_response(entry)


def update_job(job_id: str) -> Response:
    """Change some fields; a new trigger replaces the old one and keeps a pause."""
    return _job_response(current_runtime().operations.change(job_id, _object(json_body())))


def delete_job(job_id: str) -> Response:
    current_runtime().operations.remove(job_id)
    return Response(status=204)


def pause_job(job_id: str) -> Response:
    return _job_response(current_runtime().operations.pause(job_id))


def resume_job(job_id: str) -> Response:
    # A job with no run time left is removed by APScheduler: answer null, as upstream.
    job = current_runtime().operations.resume(job_id)
    return jsonify(None) if job is None else _job_response(job)


def run_job(job_id: str) -> Response:
    """Queue a run now; the leader runs it in the app context and records it. Never blocks."""
    operations = current_runtime().operations
    operations.run_now(job_id)
    return _job_response(operations.store.lookup_job(job_id))


def _job_response(job: Entry | None) -> Response:
    if job is None:  # removed meanwhile
        raise JobLookupError("")
    return jsonify(_with_last_run([job])[0])


def _with_last_run(jobs: Sequence[Job | Entry]) -> list[dict[str, Any]]:
    return job_payloads(current_runtime().engine, jobs)


def _object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise InvalidJob(None, "the changes must be a JSON object")
    return body
