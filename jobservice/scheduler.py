"""APScheduler's BackgroundScheduler, changed to share one job store safely.

* Standby: `start()` makes the store live (API writes reach it) without a thread;
  the processing thread starts with the process's runtime, and a pass only does
  anything while `fence()` says this process leads.
* A pass is batched: one query for due jobs, one statement to claim their fire
  times, one transaction to advance them, instead of a transaction per job.
* A database error anywhere in a pass is logged and retried; the thread lives on.
* After `shutdown()` no further pass runs, and a run that could not be handed to
  the executor is neither advanced nor lost: its claim waits for the next leader.
* A pass is fenced: it records this leader's fence before its first write, and the
  database refuses its writes once a newer leader recorded a higher one (FencedOut),
  upon which this process steps down.
* The claim of a job's last fire keeps the job's definition, so whoever adopts the run
  can start it although the store deletes the job when advancing it.
* The service's own jobs (`jobservice-*`) can be paused and resumed, not changed or
  removed (ProtectedJob), except as the service declares them (`update_declared`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Protocol

from apscheduler.events import (
    EVENT_JOB_ADDED,
    EVENT_JOB_MAX_INSTANCES,
    EVENT_JOB_MODIFIED,
    EVENT_JOB_SUBMITTED,
    JobEvent,
    JobSubmissionEvent,
)
from apscheduler.executors.base import MaxInstancesReachedError
from apscheduler.job import Job
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import STATE_RUNNING, STATE_STOPPED, BaseScheduler
from apscheduler.util import undefined

from . import metrics
from .errors import ProtectedJob
from .fencing import FencedOut
from .jobstore import ClusterJobStore, StaleJobError, StoredJob
from .ledger import Claim, RunKey, RunLedger
from .liveness import DeadRun, Sweeper
from .models import MISSED, SCHEDULED, SKIPPED
from .options import OPTION_FIELDS, RetryPolicy, ServiceJob
from .rules import SERVICE_JOB_PREFIX

logger = logging.getLogger(__name__)

#: Re-scan at least this often (the service passes less than a lease): catches lost
#: wake-ups and orphaned claims, and shows in /health that the leader is processing.
IDLE_RESCAN_S = 5.0
#: After a failed pass (database down), try again this soon.
RETRY_S = 1.0
#: A job is re-read and its change re-applied this many times if others keep writing it.
MODIFY_ATTEMPTS = 5
#: Fire times computed per job and pass; past this a long outage is coalesced anyway.
MAX_RUN_TIMES = 1000
#: Due jobs read, claimed and handed out per step of a pass.
DUE_CHUNK = 100
#: Pass as next_run_time to modify_job: recompute it from the trigger, keeping a pause.
RESCHEDULE = object()


class RunExecutor(Protocol):
    """What the scheduler hands claimed runs to: the thread pool, or RQ."""

    def submit_run(self, job: Job, claim: Claim) -> None: ...

    def inflight(self) -> frozenset[RunKey]: ...

    def flush(self) -> None:
        """Send what was submitted since the last flush (after each step of a pass)."""


class ClusterScheduler(BackgroundScheduler):
    """Processes due jobs only while this process holds the leader lease."""

    def __init__(
        self,
        *,
        ledger: RunLedger,
        sweeper: Sweeper,
        fence: Callable[[], int | None],
        record_fence: Callable[[int], None],
        on_fenced_out: Callable[[FencedOut], None],
        cluster_paused: Callable[[], bool],
        on_pass: Callable[[], None] = lambda: None,
        idle_rescan_s: float = IDLE_RESCAN_S,
        retry_cap_s: float = 3600.0,
        **options: Any,
    ) -> None:
        self._ledger = ledger
        self._sweeper = sweeper
        self._fence = fence
        self._record_fence = record_fence
        self._on_fenced_out = on_fenced_out
        self._recorded_fence: int | None = None
        self._cluster_paused = cluster_paused
        self._on_pass = on_pass
        self._idle_rescan_s = idle_rescan_s
        self._retry_cap_s = retry_cap_s
        self._failed_passes = 0
        self._healthy_since: float | None = None
        self._processing = False
        super().__init__(**options)
        # APScheduler keeps only its own three defaults; the run options' join them, and
        # are applied as theirs are, when a job is added.
        defaults = options.get("job_defaults", {})
        self._job_defaults.update({k: defaults[k] for k in OPTION_FIELDS if k in defaults})

    # Standby and the processing thread ------------------------------------------

    def start(self, paused: bool = True) -> None:  # type: ignore[override]
        """Start executors and the store, paused and without a thread (standby)."""
        if self._event is None or self._event.is_set():
            self._event = threading.Event()
        BaseScheduler.start(self, paused=True)

    def start_processing(self) -> None:
        """Start the thread that runs passes while this process leads."""
        self._processing = True
        self._thread = threading.Thread(
            target=self._main_loop, name="jobservice-scheduler", daemon=self._daemon
        )
        self._thread.start()

    def after_fork(self) -> None:
        """In a forked child: locks held by the parent's threads would never be released."""
        self._jobstores_lock = threading.RLock()
        self._executors_lock = threading.RLock()
        self._listeners_lock = threading.RLock()

    def stop_processing(self) -> None:
        """Stop that thread; the store stays live for the API (standby)."""
        self._processing = False
        self._event.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=30)

    def shutdown(self, wait: bool = True) -> None:
        BaseScheduler.shutdown(self, wait)
        self.stop_processing()

    def _main_loop(self) -> None:
        wait_s: float | None = None
        while self._processing and self.state != STATE_STOPPED:
            self._event.wait(wait_s)
            self._event.clear()
            if not self._processing or self.state == STATE_STOPPED:
                return  # APScheduler 3 makes one more pass here and advances jobs it cannot run
            wait_s = self._process_jobs()

    # Writes from the API ---------------------------------------------------------

    def modify_job(self, job_id: str, jobstore: str | None = None, **changes: Any) -> Any:
        """APScheduler's modify_job, re-applied to a fresh copy if another process wrote
        the job meanwhile. `next_run_time=RESCHEDULE` computes it from the (new) trigger,
        unless the job is paused in that fresh copy: a pause is never undone by an edit.
        The service's own jobs only take pause and resume (a change of next_run_time)."""
        if set(changes) - {"next_run_time"}:
            _refuse_if_protected(job_id, "changed")
        return self.update_declared(job_id, jobstore, **changes)

    def update_declared(self, job_id: str, jobstore: str | None = None, **changes: Any) -> Any:
        """modify_job for jobs the service declares (JOBS, and its own): no protection."""
        for attempt in range(MODIFY_ATTEMPTS):
            with self._jobstores_lock:
                job, alias = self._lookup_job(job_id, jobstore)
                applied = dict(changes)
                if applied.get("next_run_time") is RESCHEDULE:
                    trigger = applied.get("trigger", job.trigger)
                    paused = job.next_run_time is None
                    applied["next_run_time"] = (
                        None if paused else trigger.get_next_fire_time(None, datetime.now(self.timezone))
                    )
                job._modify(**applied)
                try:
                    self._lookup_jobstore(alias).update_job(job)
                except StaleJobError:
                    if attempt == MODIFY_ATTEMPTS - 1:
                        raise
                    continue
            break
        self._dispatch_event(JobEvent(EVENT_JOB_MODIFIED, job_id, alias))
        if self.state == STATE_RUNNING:
            self.wakeup()
        return job

    def add_job(  # type: ignore[override]
        self,
        func: Any,
        trigger: Any = None,
        args: Any = None,
        kwargs: Any = None,
        id: str | None = None,
        name: str | None = None,
        misfire_grace_time: Any = undefined,
        coalesce: Any = undefined,
        max_instances: Any = undefined,
        next_run_time: Any = undefined,
        jobstore: str = "default",
        executor: str = "default",
        replace_existing: bool = False,
        **trigger_args: Any,
    ) -> Job:
        """APScheduler's add_job, making a ServiceJob: the run options are fields of the job."""
        options = {field: trigger_args.pop(field) for field in OPTION_FIELDS if field in trigger_args}
        job_kwargs = {
            "trigger": self._create_trigger(trigger, trigger_args),
            "executor": executor,
            "func": func,
            "args": tuple(args) if args is not None else (),
            "kwargs": dict(kwargs) if kwargs is not None else {},
            "id": id,
            "name": name,
            "misfire_grace_time": misfire_grace_time,
            "coalesce": coalesce,
            "max_instances": max_instances,
            "next_run_time": next_run_time,
            **options,
        }
        job = ServiceJob(self, **{k: v for k, v in job_kwargs.items() if v is not undefined})
        with self._jobstores_lock:
            if self.state == STATE_STOPPED:
                self._pending_jobs.append((job, jobstore, replace_existing))
            else:
                self._real_add_job(job, jobstore, replace_existing)
        return job

    def _real_add_job(self, job: Job, jobstore_alias: str, replace_existing: bool) -> None:
        """Where APScheduler's add_job stores a job: replacing one of the service's own is refused."""
        if replace_existing:
            _refuse_if_protected(job.id, "replaced")
        super()._real_add_job(job, jobstore_alias, replace_existing)

    def remove_job(self, job_id: str, jobstore: str | None = None) -> None:
        _refuse_if_protected(job_id, "removed")
        super().remove_job(job_id, jobstore)

    def remove_declared(self, job_id: str) -> None:
        """remove_job for jobs the service declares (JOBS, and its own): no protection."""
        super().remove_job(job_id)

    def remove_all_jobs(self, jobstore: str | None = None) -> None:
        """Remove every job but the service's own."""
        with self._jobstores_lock:
            self._jobstores["default"].remove_all_except(SERVICE_JOB_PREFIX)
        if self.state == STATE_RUNNING:
            self.wakeup()

    def add_jobs(self, specs: list[dict[str, Any]], replace: bool = False) -> list[Job]:
        """Add many jobs at once, all or none (APScheduler's add_job, one transaction)."""
        if replace:
            for spec in specs:
                _refuse_if_protected(spec["id"], "replaced")
        now = datetime.now(self.timezone)
        jobs = []
        for spec in specs:
            fields = {k: v for k, v in spec.items() if k != "replace_existing"}
            job = ServiceJob(self, **{"executor": "default", **fields})
            defaults = {k: v for k, v in self._job_defaults.items() if not hasattr(job, k)}
            if not hasattr(job, "next_run_time"):
                defaults["next_run_time"] = job.trigger.get_next_fire_time(None, now)
            job._modify(**defaults)
            job._jobstore_alias = "default"
            jobs.append(job)
        self._jobstores["default"].add_many(jobs, replace=replace)
        for job in jobs:
            self._dispatch_event(JobEvent(EVENT_JOB_ADDED, job.id, "default"))
        if self.state == STATE_RUNNING:
            self.wakeup()
        return jobs

    # A pass -----------------------------------------------------------------------

    def _process_jobs(self) -> float | None:
        fence = self._fence()
        if fence is None or self.state != STATE_RUNNING:
            return None  # a follower waits for the elector's wake-up
        try:
            wait_s = self._pass(fence)
        except FencedOut as exc:
            logger.warning("Scheduler pass refused by the database: %s; stepping down", exc)
            self._on_fenced_out(exc)
            return None
        except Exception as exc:
            if self._failed_passes % 20 == 0:
                logger.warning("Scheduler pass failed (%s); retrying in %.0fs", exc, RETRY_S, exc_info=True)
            self._failed_passes += 1
            self._healthy_since = None
            return RETRY_S
        if self._failed_passes:
            logger.info("Scheduler passes succeed again after %d failures", self._failed_passes)
            self._failed_passes = 0
        return wait_s

    def _pass(self, fence: int) -> float:
        store: ClusterJobStore = self._jobstores["default"]
        if self._recorded_fence != fence:  # a new term
            self._record_fence(fence)  # before any write under it: older fences are refused from now
            self._recorded_fence = fence
            self._healthy_since = None
        if self._healthy_since is None:
            self._healthy_since = time.monotonic()
        now = datetime.now(self.timezone)
        paused = self._cluster_paused()
        if not paused:
            # A chunk at a time: the first runs start before the last jobs are read, and
            # a burst of thousands never holds them all in memory.
            for due in store.due_chunks(now, DUE_CHUNK):
                self._fire(due, now, fence, store)
                if self._fence() != fence:
                    break
        self._adopt(fence, store)
        for dead in self._sweeper.sweep(fence, time.monotonic() - self._healthy_since, self._retries):
            metrics.run_ended(dead.job_id, "failed", dead.trigger, None, None)
            metrics.dead_run_closed()
        next_run = None if paused else store.get_next_run_time()
        retry = self._ledger.next_retry_at()
        if retry is not None and not paused:
            next_run = retry if next_run is None else min(next_run, retry)
        self._on_pass()
        if next_run is None:
            return self._idle_rescan_s
        return min(max((next_run - datetime.now(self.timezone)).total_seconds(), 0.0), self._idle_rescan_s)

    def _fire(self, due: list[StoredJob], now: datetime, fence: int, store: ClusterJobStore) -> None:
        """Claim every due fire time in one statement, hand out what we won, advance the jobs."""
        to_run: list[tuple[StoredJob, RunKey]] = []
        missed: list[RunKey] = []
        moves: list[tuple[StoredJob, datetime | None]] = []
        saved: dict[RunKey, bytes] = {}
        for job in due:
            try:
                run_times = self._run_times(job, now)
                nxt = _next_fire_time(job, run_times[-1], now) if run_times else None
            except Exception:
                logger.exception("Cannot compute the fire times of job %s; leaving it alone", job.id)
                store.skip(job)
                continue
            if not run_times:
                continue
            for run_time in run_times[-1:] if job.coalesce else run_times:
                key = RunKey(job.id, SCHEDULED, run_time)
                grace = job.misfire_grace_time
                if grace is not None and now - run_time > timedelta(seconds=grace):
                    missed.append(key)
                    logger.warning("Run of %s at %s was missed by %s", job.id, run_time, now - run_time)
                else:
                    to_run.append((job, key))
                    if nxt is None:  # its last fire: advancing deletes the job, the claim keeps it
                        saved[key] = job.stored_state
            moves.append((job, nxt))
        if self._fence() != fence:
            return
        self._ledger.claim(missed, fence, MISSED, "Run time was missed by more than misfire_grace_time")
        for key in missed:
            metrics.run_ended(key.job_id, MISSED, key.trigger, None, None)
        won = {claim.key: claim for claim in self._ledger.claim([k for _, k in to_run], fence, saved=saved)}
        stuck: set[str] = set()
        try:
            for job, key in to_run:
                claim = won.get(key)
                if claim is None:
                    logger.info(
                        "Claim of %s at %s refused: already claimed, duplicate prevented",
                        job.id,
                        key.scheduled_at,
                        extra={"job_id": job.id, "scheduled_at": key.scheduled_at, "fence": fence},
                    )
                    metrics.claims_refused(job.id)
                elif not self._submit(job, claim):
                    stuck.add(job.id)
            store.advance([(job, nxt) for job, nxt in moves if job.id not in stuck], fence)
        finally:  # claimed is claimed: hand the runs out even if the advance failed
            self._lookup_executor("default").flush()

    def _adopt(self, fence: int, store: ClusterJobStore) -> None:
        """Run what was claimed or requested but never started (run-now, a dead leader's runs)."""
        executor: RunExecutor = self._lookup_executor("default")
        inflight = executor.inflight()
        candidates = [(key, claim) for key, claim in self._ledger.pending(fence) if key not in inflight]
        claims = self._ledger.adopt(candidates, fence) if candidates else []
        if not claims:
            return
        jobs = store.lookup_many(sorted({claim.key.job_id for claim in claims}))
        gone = [claim.run_id for claim in claims if claim.key.job_id not in jobs]
        saved = self._ledger.saved_jobs(gone) if gone else {}
        try:
            for claim in claims:
                job = jobs.get(claim.key.job_id)
                if job is None and claim.run_id in saved:  # a last fire: the claim kept the job
                    job = store.restore_saved(claim.key.job_id, saved[claim.run_id])
                if job is None:
                    self._ledger.miss(claim, "The job was removed before this run could start")
                    metrics.run_ended(claim.key.job_id, MISSED, claim.key.trigger, None, None)
                elif not self._submit(job, claim):
                    return
        finally:
            executor.flush()

    def _retries(self, dead: list[DeadRun], now: datetime) -> dict[int, datetime]:
        """When each of these dead runs' next attempt may start, for jobs with retries left."""
        store: ClusterJobStore = self._jobstores["default"]
        jobs: dict[str, Job] = dict(store.lookup_many(sorted({run.job_id for run in dead})))
        gone = [run.run_id for run in dead if run.job_id not in jobs]
        saved = self._ledger.saved_jobs(gone) if gone else {}
        times = {}
        for run in dead:
            job = jobs.get(run.job_id)
            if job is None and run.run_id in saved:
                job = store.restore_saved(run.job_id, saved[run.run_id])
            at = None if job is None else RetryPolicy.of(job, self._retry_cap_s).next_at(run.attempt, now)
            if at is not None:
                times[run.run_id] = at
                metrics.retry_scheduled(run.job_id)
        return times

    def _submit(self, job: StoredJob, claim: Claim) -> bool:
        """Hand one claimed run to the executor; False if the executor is shut down."""
        executor: RunExecutor = self._lookup_executor(job.executor)
        try:
            executor.submit_run(job, claim)
        except MaxInstancesReachedError:
            message = f"Skipped: {job.max_instances} instance(s) of this job already running"
            self._ledger.miss(claim, message, SKIPPED)
            logger.warning(
                "Run of %s at %s skipped: %d instance(s) already running",
                job.id,
                claim.key.scheduled_at,
                job.max_instances,
                extra={"job_id": job.id, "scheduled_at": claim.key.scheduled_at, "status": SKIPPED},
            )
            metrics.run_ended(job.id, SKIPPED, claim.key.trigger, None, None)
            event = EVENT_JOB_MAX_INSTANCES
        except RuntimeError:  # the pool is shut down: leave the claim for the next leader
            logger.info("Executor is shut down; run of %s left for the next leader", job.id)
            return False
        else:
            event = EVENT_JOB_SUBMITTED
        self._dispatch_event(JobSubmissionEvent(event, job.id, "default", [claim.key.scheduled_at]))
        return True

    @staticmethod
    def _run_times(job: StoredJob, now: datetime) -> list[datetime]:
        """APScheduler's Job._get_run_times, bounded: a long outage must not stall the pass."""
        run_times: list[datetime] = []
        next_run = job.next_run_time
        while next_run is not None and next_run <= now and len(run_times) < MAX_RUN_TIMES:
            run_times.append(next_run)
            next_run = _next_fire_time(job, next_run, now)
        return run_times


def _next_fire_time(job: StoredJob, previous: datetime, now: datetime) -> datetime | None:
    """The trigger's next fire time; None past what a datetime can hold (the schedule ends)."""
    try:
        return job.trigger.get_next_fire_time(previous, now)
    except OverflowError:
        logger.info("Job %s has no fire time after %s that a date can hold: it ends", job.id, previous)
        return None


def _refuse_if_protected(job_id: str, action: str) -> None:
    if job_id.startswith(SERVICE_JOB_PREFIX):
        raise ProtectedJob(job_id, action)
