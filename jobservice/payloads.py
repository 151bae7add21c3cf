"""The JSON forms of jobs and runs, shared by the API and the CLI."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from apscheduler.job import Job
from flask_apscheduler.utils import job_to_dict

from .runs import last_runs

if TYPE_CHECKING:
    from .scheduler import JobService

LAST_RUN_CHUNK = 1000


def job_payloads(service: JobService, jobs: Sequence[Job]) -> list[dict[str, Any]]:
    """Flask-APScheduler's job JSON, plus `last_run` (status and times, or null)."""
    latest: dict[str, dict[str, Any]] = {}
    ids = [job.id for job in jobs]
    for start in range(0, len(ids), LAST_RUN_CHUNK):
        latest.update(last_runs(service.engine, ids[start : start + LAST_RUN_CHUNK]))
    return [{**job_to_dict(job), "last_run": latest.get(job.id)} for job in jobs]


def dumps(data: Any, indent: int | None = None) -> str:
    """JSON with datetimes as ISO 8601, as Flask-APScheduler writes them."""
    return json.dumps(data, indent=indent, default=_default)


def _default(value: object) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")
