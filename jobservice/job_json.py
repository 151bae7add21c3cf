"""The JSON forms of jobs and runs, shared by the API and the CLI."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from apscheduler.job import Job
from flask_apscheduler.utils import job_to_dict
from sqlalchemy.engine import Engine

from .jobstore import BrokenJob, Entry
from .options import options_of
from .runs import last_runs

LAST_RUN_CHUNK = 1000


def job_payloads(engine: Engine, jobs: Sequence[Job | Entry]) -> list[dict[str, Any]]:
    """Flask-APScheduler's job JSON, plus `last_run` (status and times, or null). A row
    that cannot be read shows as its id, next run time and `error`."""
    latest: dict[str, dict[str, Any]] = {}
    ids = [job.id for job in jobs]
    for start in range(0, len(ids), LAST_RUN_CHUNK):
        latest.update(last_runs(engine, ids[start : start + LAST_RUN_CHUNK]))
    return [{**_job_dict(job), "last_run": latest.get(job.id)} for job in jobs]


def _job_dict(job: Job | BrokenJob) -> dict[str, Any]:
    if isinstance(job, BrokenJob):
        return _broken(job, job.error)
    try:
        return job_dict(job)
    except Exception as exc:  # a trigger or argument of an older release's making
        return _broken(job, f"{exc.__class__.__name__}: {exc}")


def job_dict(job: Job) -> dict[str, Any]:
    """Flask-APScheduler's JSON of a job, with its run options."""
    return {**job_to_dict(job), **options_of(job)}


def _broken(job: Job | BrokenJob, error: str) -> dict[str, Any]:
    return {"id": job.id, "next_run_time": job.next_run_time, "error": f"this job cannot be read: {error}"}


def dumps(data: Any, indent: int | None = None) -> str:
    """JSON with datetimes as ISO 8601, as Flask-APScheduler writes them."""
    return json.dumps(data, indent=indent, default=_default)


def _default(value: object) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")
