"""Jobs declared in the app's config (`JOBS`, `SCHEDULER_JOBS`) or in its code (Flask-APScheduler's
`@scheduler.task`, and `add_job` before `start()`), reconciled into the store at start-up.

A restart never duplicates a declared job and never moves its next run while its
definition is unchanged (a fingerprint of the definition is kept beside it). A
changed definition is applied; a paused job stays paused; a job no longer declared
is removed. Jobs added at run time (the API, the CLI, `add_job` after `start()`) are
never touched.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from apscheduler.jobstores.base import ConflictingIdError, JobLookupError
from sqlalchemy import delete, select
from sqlalchemy.engine import Engine

from .errors import ConfigError, InvalidJob
from .models import declared_table, utcnow
from .rules import JobRules
from .scheduler import RESCHEDULE, ClusterScheduler

logger = logging.getLogger(__name__)
declared = declared_table


@dataclass
class Reconciled:
    """What a reconciliation did, by job id."""

    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)


def parse_declared(
    rules: JobRules, jobs: Sequence[Mapping[str, Any]], context: Mapping[str, Any], where: str = "JOBS"
) -> dict[str, tuple[dict[str, Any], str]]:
    """Validate declared jobs with the API's rules; ConfigError names the job and the field."""
    specs: dict[str, tuple[dict[str, Any], str]] = {}
    for index, definition in enumerate(jobs):
        label = f"{where}[{index}]" + (
            f" ({definition['id']!r})" if isinstance(definition, dict) and "id" in definition else ""
        )
        try:
            spec = rules.new_job(definition)
        except InvalidJob as exc:
            where = f" field {exc.field!r}:" if exc.field else ""
            raise ConfigError(f"{label}:{where} {exc.message}") from None
        if spec["id"] in specs:
            raise ConfigError(f"{label}: job id {spec['id']!r} is declared twice")
        specs[spec["id"]] = (spec, fingerprint(_as_text(definition, spec), context))
    return specs


def _as_text(definition: Mapping[str, Any], spec: Mapping[str, Any]) -> dict[str, Any]:
    """The definition with its function as text and a trigger object as its description:
    a function object or a trigger would fingerprint by its memory address."""
    text = dict(definition)
    text["func"] = spec["func"]
    trigger = text.get("trigger", "date")
    if not isinstance(trigger, (str, dict)):
        # Not repr(): an interval's default start (now + the interval) differs in every process.
        parts = [str(trigger), str(getattr(trigger, "timezone", ""))]
        parts += [str(getattr(trigger, name, None)) for name in ("end_date", "jitter", "run_date")]
        text["trigger"] = " ".join(parts)
    return text


def fingerprint(definition: Mapping[str, Any], context: Mapping[str, Any]) -> str:
    """A digest of the definition and the settings it depends on (time zone, job defaults)."""
    text = json.dumps({"job": definition, "context": context}, sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()


def reconcile(
    scheduler: ClusterScheduler, engine: Engine, specs: Mapping[str, tuple[dict[str, Any], str]]
) -> Reconciled:
    """Make the store match the declared jobs. Call under the start-up lock."""
    result = Reconciled()
    with engine.connect() as conn:
        known = dict(conn.execute(select(declared.c.job_id, declared.c.fingerprint)).all())
    for job_id, (spec, digest) in specs.items():
        if known.get(job_id) == digest and scheduler.get_job(job_id) is not None:
            result.unchanged.append(job_id)
            continue
        if _apply(scheduler, spec):
            result.added.append(job_id)
        else:
            result.changed.append(job_id)
        _remember(engine, job_id, digest, job_id in known)
    for job_id in known.keys() - specs.keys():
        try:
            scheduler.remove_declared(job_id)
        except JobLookupError:
            pass
        with engine.begin() as conn:
            conn.execute(delete(declared).where(declared.c.job_id == job_id))
        result.removed.append(job_id)
    if result.added or result.changed or result.removed:
        logger.info(
            "Declared jobs: added %s, changed %s, removed %s", result.added, result.changed, result.removed
        )
    return result


def _apply(scheduler: ClusterScheduler, spec: dict[str, Any]) -> bool:
    """Add the job, or replace an existing one's definition keeping its pause; True if added."""
    spec = dict(spec)
    spec.pop("replace_existing", None)
    try:
        scheduler.add_job(**spec)
        return True
    except ConflictingIdError:
        pass
    job_id = spec.pop("id")
    spec.setdefault("next_run_time", RESCHEDULE)  # a job paused through the API stays paused
    scheduler.update_declared(job_id, **spec)
    return False


def _remember(engine: Engine, job_id: str, digest: str, update: bool) -> None:
    with engine.begin() as conn:
        if update:
            conn.execute(
                declared.update()
                .where(declared.c.job_id == job_id)
                .values(fingerprint=digest, updated_at=utcnow())
            )
        else:
            conn.execute(declared.insert().values(job_id=job_id, fingerprint=digest, updated_at=utcnow()))
