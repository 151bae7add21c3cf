"""Export and import of job definitions: how schedules move between environments.

The file holds each job in the API's own form (what POST /scheduler/jobs takes), so
an import applies exactly the API's rules. An import is all or nothing: every job is
checked first, and all are written in one transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from apscheduler.job import Job
from apscheduler.jobstores.base import ConflictingIdError
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from flask_apscheduler.utils import trigger_to_dict

from .errors import InvalidJob
from .jobdefs import SERVICE_JOB_PREFIX
from .jobstore import BrokenJob
from .models import utcnow

if TYPE_CHECKING:
    from .scheduler import JobService

FORMAT_VERSION = 1


@dataclass(frozen=True)
class JobError:
    """Why one job of an import was refused."""

    index: int
    id: str | None
    field: str | None
    error_message: str


class ImportRefused(Exception):
    """The import wrote nothing; `errors` lists every job at fault."""

    def __init__(self, errors: list[JobError], total: int) -> None:
        super().__init__(f"{len(errors)} of {total} jobs cannot be imported; nothing was imported")
        self.errors = errors


def export_jobs(service: JobService) -> dict[str, Any]:
    """Every job (but the service's own) as definitions the API accepts; rows that cannot
    be read are listed under `unreadable` with their error instead."""
    entries = [entry for entry in service.store.entries() if not entry.id.startswith(SERVICE_JOB_PREFIX)]
    document: dict[str, Any] = {
        "version": FORMAT_VERSION,
        "exported_at": utcnow().isoformat(),
        "timezone": str(service.timezone),
        "jobs": [definition(entry, service) for entry in entries if not isinstance(entry, BrokenJob)],
    }
    unreadable = [{"id": e.id, "error": e.error} for e in entries if isinstance(e, BrokenJob)]
    if unreadable:
        document["unreadable"] = unreadable
    return document


def definition(job: Job, service: JobService) -> dict[str, Any]:
    """A job in the form POST /scheduler/jobs takes; a paused job stays paused."""
    trigger_fields = trigger_to_dict(job.trigger).items()
    fields: dict[str, Any] = {
        "id": job.id,
        "name": job.name,
        "func": job.func_ref,
        "args": list(job.args),
        "kwargs": dict(job.kwargs),
        **{k: v.isoformat() if isinstance(v, datetime) else v for k, v in trigger_fields},
        "misfire_grace_time": job.misfire_grace_time,
        "coalesce": job.coalesce,
        "max_instances": job.max_instances,
    }
    trigger = job.trigger
    if isinstance(trigger, (IntervalTrigger, CronTrigger)):
        if str(trigger.timezone) != str(service.timezone):
            fields["timezone"] = str(trigger.timezone)
        if trigger.jitter is not None:
            fields["jitter"] = trigger.jitter
    if job.next_run_time is None:
        fields["next_run_time"] = None
    return fields


def import_jobs(service: JobService, document: object, replace: bool = False) -> list[str]:
    """Check every job of an export (or a bare list of jobs); add all of them or none."""
    jobs = _job_list(document)
    errors: list[JobError] = []
    specs: list[dict[str, Any]] = []
    seen: set[str] = set()
    for index, data in enumerate(jobs):
        job_id = data.get("id") if isinstance(data, dict) else None
        job_id = job_id if isinstance(job_id, str) else None
        try:
            spec = service.rules.new_job(data)
        except InvalidJob as exc:
            errors.append(JobError(index, job_id, exc.field, exc.message))
            continue
        if spec["id"] in seen:
            errors.append(JobError(index, spec["id"], "id", f"id {spec['id']!r} appears twice in the file"))
        elif not replace and service.store.lookup_entry(spec["id"]) is not None:
            errors.append(JobError(index, spec["id"], "id", f"Job {spec['id']} already exists."))
        seen.add(spec["id"])
        specs.append(spec)
    if errors:
        raise ImportRefused(errors, len(jobs))
    try:
        service.scheduler.add_jobs(specs, replace=replace)
    except ConflictingIdError:  # added by someone else since the check: say which
        taken = [(i, s["id"]) for i, s in enumerate(specs) if service.store.lookup_entry(s["id"]) is not None]
        raise ImportRefused(
            [JobError(i, job_id, "id", f"Job {job_id} already exists.") for i, job_id in taken], len(jobs)
        ) from None
    service.notify()
    return [spec["id"] for spec in specs]


def _job_list(document: object) -> list[Any]:
    if isinstance(document, dict):
        if "version" in document and document["version"] != FORMAT_VERSION:
            raise InvalidJob("version", f"version must be {FORMAT_VERSION}, the only export format there is")
        document = document.get("jobs")
    if not isinstance(document, list):
        raise InvalidJob("jobs", 'the import must be an export file ({"jobs": [...]}) or a list of jobs')
    return document
