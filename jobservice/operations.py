"""Every change to jobs and to the cluster, whichever door it comes through.

The REST API, the CLI, the Python interface (`app.apscheduler`, `JobService`) and imports
all call these: each validates with the same rules (only functions of the job packages,
what can be stored and read back), writes once, and wakes the leader once. No door can
skip a rule, because no door writes anywhere else.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from apscheduler.job import Job
from apscheduler.jobstores.base import ConflictingIdError, JobLookupError

from .cluster import Cluster
from .errors import InvalidJob
from .jobstore import ClusterJobStore, StoredJob
from .ledger import RunKey, RunLedger
from .rules import JobRules
from .scheduler import RESCHEDULE, ClusterScheduler

logger = logging.getLogger(__name__)


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


class Operations:
    """Add, change, pause, resume, remove and run jobs; pause, resume, start and stop the cluster."""

    def __init__(
        self,
        rules: JobRules,
        scheduler: ClusterScheduler,
        store: ClusterJobStore,
        ledger: RunLedger,
        cluster: Cluster,
        notify: Callable[[], None],
    ) -> None:
        self.rules = rules
        self.scheduler = scheduler
        self.store = store
        self.ledger = ledger
        self.cluster = cluster
        self._notify = notify

    # Jobs -------------------------------------------------------------------------------

    def add(self, definition: object) -> Job:
        """Add one job (409 ConflictingIdError if the id is taken, unless replace_existing)."""
        spec = self.rules.new_job(definition)
        job = self.scheduler.add_job(**spec)
        self._notify()
        return job

    def add_many(self, definitions: Sequence[object], replace: bool = False) -> list[str]:
        """Check every definition; add all of them in one transaction, or none (ImportRefused)."""
        errors: list[JobError] = []
        specs: list[dict[str, Any]] = []
        seen: set[str] = set()
        for index, data in enumerate(definitions):
            job_id = data.get("id") if isinstance(data, dict) else None
            job_id = job_id if isinstance(job_id, str) else None
            try:
                spec = self.rules.new_job(data)
            except InvalidJob as exc:
                errors.append(JobError(index, job_id, exc.field, exc.message))
                continue
            if spec["id"] in seen:
                errors.append(
                    JobError(index, spec["id"], "id", f"id {spec['id']!r} appears twice in the file")
                )
            elif not replace and self.store.lookup_entry(spec["id"]) is not None:
                errors.append(JobError(index, spec["id"], "id", f"Job {spec['id']} already exists."))
            seen.add(spec["id"])
            specs.append(spec)
        if errors:
            raise ImportRefused(errors, len(definitions))
        try:
            self.scheduler.add_jobs(specs, replace=replace)
        except ConflictingIdError:  # added by someone else since the check: say which
            taken = [
                (i, s["id"]) for i, s in enumerate(specs) if self.store.lookup_entry(s["id"]) is not None
            ]
            raise ImportRefused(
                [JobError(i, job_id, "id", f"Job {job_id} already exists.") for i, job_id in taken],
                len(definitions),
            ) from None
        self._notify()
        return [spec["id"] for spec in specs]

    def change(self, job_id: str, changes: Mapping[str, Any]) -> StoredJob:
        """Change some fields; a new trigger replaces the old one and keeps a pause."""
        applied = self.rules.changes(dict(changes), self._job(job_id))
        if applied:
            if "trigger" in applied:
                applied.setdefault("next_run_time", RESCHEDULE)
            self.scheduler.modify_job(job_id, **applied)
            self._notify()
        return self._job(job_id)

    def pause(self, job_id: str) -> StoredJob:
        self.scheduler.pause_job(job_id)
        self._notify()
        return self._job(job_id)

    def resume(self, job_id: str) -> StoredJob | None:
        """Resume a job; None when it had no run time left, so APScheduler removed it."""
        self.scheduler.resume_job(job_id)
        self._notify()
        return self.store.lookup_job(job_id)

    def remove(self, job_id: str) -> None:
        self.scheduler.remove_job(job_id)
        self._notify()

    def remove_all(self) -> None:
        """Every job but the service's own."""
        self.scheduler.remove_all_jobs()
        self._notify()

    def run_now(self, job_id: str) -> RunKey:
        """Queue a run of an existing job for the leader; it never blocks."""
        self._job(job_id)
        key = self.ledger.request_manual(job_id)
        self._notify()
        return key

    def _job(self, job_id: str) -> StoredJob:
        job = self.store.lookup_job(job_id)
        if job is None:
            raise JobLookupError(job_id)
        return job

    # The cluster ----------------------------------------------------------------------

    def pause_cluster(self) -> bool:
        """Stop processing due jobs on every process (persisted); True if it changed anything."""
        return self._cluster_changed(self.cluster.set_paused(True), "paused")

    def resume_cluster(self) -> bool:
        return self._cluster_changed(self.cluster.set_paused(False), "resumed")

    def start_cluster(self, paused: bool = False) -> bool:
        """Start a cluster that was shut down; False if it was not."""
        return self._cluster_changed(self.cluster.start(paused), "started")

    def stop_cluster(self) -> bool:
        """Shut the cluster down (every process stays up, in standby); False if it was down."""
        return self._cluster_changed(self.cluster.stop(), "shut down")

    def _cluster_changed(self, changed: bool, what: str) -> bool:
        if changed:
            logger.info("Cluster %s", what)
            self._notify()
        return changed
