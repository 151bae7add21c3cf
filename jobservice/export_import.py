"""Export and import of job definitions: how schedules move between environments.

The file holds each job in the API's own form (what POST /scheduler/jobs takes), so
an import applies exactly the API's rules. An import is all or nothing: every job is
checked first, and all are written in one transaction.
"""

from __future__ import annotations

from datetime import datetime, tzinfo
from typing import Any

from apscheduler.job import Job
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from flask_apscheduler.utils import trigger_to_dict

from .errors import InvalidJob
from .jobstore import BrokenJob, ClusterJobStore
from .models import utcnow
from .operations import Operations
from .options import options_of
from .rules import SERVICE_JOB_PREFIX

FORMAT_VERSION = 1


def export_jobs(store: ClusterJobStore, timezone: tzinfo) -> dict[str, Any]:
    """Every job (but the service's own) as definitions the API accepts; rows that cannot
    be read are listed under `unreadable` with their error instead."""
    entries = [entry for entry in store.entries() if not entry.id.startswith(SERVICE_JOB_PREFIX)]
    document: dict[str, Any] = {
        "version": FORMAT_VERSION,
        "exported_at": utcnow().isoformat(),
        "timezone": str(timezone),
        "jobs": [definition(entry, timezone) for entry in entries if not isinstance(entry, BrokenJob)],
    }
    unreadable = [{"id": e.id, "error": e.error} for e in entries if isinstance(e, BrokenJob)]
    if unreadable:
        document["unreadable"] = unreadable
    return document


def definition(job: Job, timezone: tzinfo) -> dict[str, Any]:
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
        **options_of(job),
    }
    trigger = job.trigger
    if isinstance(trigger, (IntervalTrigger, CronTrigger)):
        if str(trigger.timezone) != str(timezone):
            fields["timezone"] = str(trigger.timezone)
        if trigger.jitter is not None:
            fields["jitter"] = trigger.jitter
    if job.next_run_time is None:
        fields["next_run_time"] = None
    return fields


def import_jobs(operations: Operations, document: object, replace: bool = False) -> list[str]:
    """Check every job of an export (or a bare list of jobs); add all of them or none."""
    return operations.add_many(_job_list(document), replace=replace)


def _job_list(document: object) -> list[Any]:
    if isinstance(document, dict):
        if "version" in document and document["version"] != FORMAT_VERSION:
            raise InvalidJob("version", f"version must be {FORMAT_VERSION}, the only export format there is")
        document = document.get("jobs")
    if not isinstance(document, list):
        raise InvalidJob("jobs", 'the import must be an export file ({"jobs": [...]}) or a list of jobs')
    return document
