"""Scheduler set-up: the store, the executor, job defaults, config jobs, and the leader switch.

Every process gets a JobService whose scheduler is in standby (the store is live,
so API writes on any worker reach it). Serving processes also join the election;
the one holding the lease processes due jobs.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import threading
import time
import zoneinfo
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import redis
from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.base import STATE_RUNNING
from flask import Flask, current_app
from sqlalchemy.exc import SQLAlchemyError

from config import ConfigError

from . import lifecycle, maintenance, metrics
from .bus import RELEASED, WAKEUP, Bus, FileBus, RedisBus
from .cluster_scheduler import IDLE_RESCAN_S, ClusterScheduler
from .compat import FlaskScheduler
from .database import check_schema, service_engine, startup_lock
from .declared import Reconciled, parse_declared, reconcile
from .executor import AppContextExecutor
from .extensions import db
from .fencing import FencedOut
from .jobdefs import JobRules
from .jobstore import ClusterJobStore
from .leadership import Elector
from .leases import FileLease, LeaderInfo, Lease, RedisLease
from .ledger import RunKey, RunLedger
from .liveness import Heartbeat, Sweeper
from .recorder import Recorder
from .state import Cluster

logger = logging.getLogger(__name__)

EXTENSION = "jobservice"
MAX_WORKERS_LIMIT = 1000
#: Processes touch their runs in progress this many times per lease...
BEATS_PER_LEASE = 2
#: ...and the leader closes a run whose heartbeat stopped for this many leases. More than
#: the three leases of a frozen process the tests thaw, so a short freeze is survived.
DEAD_AFTER_LEASES = 5


class JobService:
    """One app's scheduling: a standby scheduler, and its part in the leader election."""

    def __init__(self, app: Flask) -> None:
        config = app.config
        self.engine = engine = service_engine(app)
        self.app = app
        self.pid = os.getpid()
        self.lease_s: float = config["LEADER_LEASE_SECONDS"]
        self.redis_url: str | None = config["REDIS_URL"]
        self.timezone = zoneinfo.ZoneInfo(config["SCHEDULER_TIMEZONE"])
        self.store = ClusterJobStore(engine)
        self.ledger = RunLedger(engine)
        self.recorder = Recorder(engine)
        self.cluster = Cluster(engine)
        self.rules = JobRules(config["JOB_PACKAGES"], self.timezone, executors=("default",))
        context = self._declared_context(config)
        self.declared = {
            **parse_declared(self.rules, config.get("JOBS") or [], context),
            **parse_declared(self._builtin_rules(), [maintenance.DEFINITION], context),
        }
        self.max_workers = _max_workers(config.get("SCHEDULER_EXECUTORS") or {})
        beat_s = self.lease_s / BEATS_PER_LEASE
        self.heartbeat = Heartbeat(engine, beat_s, metrics.run_overrunning)
        self.executor = AppContextExecutor(
            app,
            self.ledger,
            self.recorder,
            self.heartbeat,
            self.fence,
            on_fenced_out=self._fenced_out,
            max_workers=self.max_workers,
            overrun_s=config.get("RUN_OVERRUN_SECONDS") or None,
        )
        self._last_pass_recorded = 0.0
        self.scheduler = ClusterScheduler(
            ledger=self.ledger,
            sweeper=Sweeper(engine, beat_s, DEAD_AFTER_LEASES * self.lease_s),
            fence=self.fence,
            record_fence=self.cluster.record_fence,
            on_fenced_out=self._fenced_out,
            cluster_paused=self.cluster.paused,
            on_pass=self._passed,
            idle_rescan_s=min(IDLE_RESCAN_S, self.lease_s),
            timezone=self.timezone,
            job_defaults=dict(config["SCHEDULER_JOB_DEFAULTS"]),
            jobstores={"default": self.store},
            executors={"default": self.executor},
        )
        self.scheduler.start()  # standby: the store is live, nothing is processed
        self.elector: Elector | None = None
        self.started = False
        self.should_restart_after_fork = False
        self._redis: redis.Redis | None = None
        self._connections: tuple[Lease, Bus] | None = None

    # Roles ----------------------------------------------------------------------

    def fence(self) -> int | None:
        """Our fencing number while this process leads, else None."""
        return self.elector.fence() if self.elector is not None else None

    @property
    def role(self) -> str:
        return "leader" if self.fence() is not None else "follower"

    def leader(self) -> LeaderInfo | None:
        """The current leader, or None if nobody leads or the lease cannot be read."""
        try:
            return self.lease.leader()
        except (redis.RedisError, OSError, SQLAlchemyError) as exc:
            logger.debug("Cannot read the leader: %s", exc.__class__.__name__)
            return None

    def notify(self) -> None:
        """Tell the leader, wherever it runs, that jobs or the cluster state changed."""
        if self.fence() is not None:
            self.scheduler.wakeup()
        self.bus.publish(WAKEUP)

    def set_paused(self, paused: bool) -> bool:
        """Pause or resume processing on every process; True if the state changed."""
        changed = self.cluster.set_paused(paused)
        if changed:
            logger.info("Cluster %s", "paused" if paused else "resumed")
            self.notify()
        return changed

    def request_run(self, job_id: str) -> RunKey:
        """Queue a run-now of an existing job; the leader picks it up at once."""
        if self.scheduler.get_job(job_id) is None:
            raise JobLookupError(job_id)
        key = self.ledger.request_manual(job_id)
        self.notify()
        return key

    def reconcile(self) -> Reconciled:
        """Bring JOBS from config.py into the store (once, under the start-up lock)."""
        # On db.engine: the lock is held by a connection that idles while the others wait.
        with startup_lock(db.engine, self.app.instance_path):
            return reconcile(self.scheduler, self.engine, self.declared)

    # Joining and leaving the election --------------------------------------------

    def start(self) -> None:
        """Campaign for the lease and process due jobs whenever this process leads."""
        if self.started:
            return
        if self.redis_url is None and self.engine.dialect.name != "sqlite":
            logger.warning(
                "REDIS_URL is not set: leadership is per host (a file lock). Set REDIS_URL "
                "when several hosts share this database."
            )
        self.pid = os.getpid()
        self.started = True
        self.elector = Elector(self.lease, self.lease_s, self._on_role_change)
        self.recorder.start()
        self.scheduler.start_processing()
        self.bus.listen(self._on_message)
        self.elector.start()
        lifecycle.register(self)

    def stop(self, forking: bool = False) -> None:
        """Leave the election: stop processing, hand the lease over, write pending outcomes."""
        if not self.started or self.elector is None:
            return
        self.started = False
        self.should_restart_after_fork = forking
        led = self.elector.fence() is not None
        self.elector.stop(release=True)
        if led:
            self.bus.publish(RELEASED)
        self.bus.close()
        self.scheduler.stop_processing()
        self.recorder.stop()

    def close(self) -> None:
        """Stop everything, for tests and tools that build several apps in one process."""
        self.stop()
        if self.scheduler.running:
            self.scheduler.shutdown(wait=True)
        if self._connections is not None:
            self._connections[0].close()
        if self._redis is not None:
            self._redis.close()
        self.engine.dispose()

    def after_fork(self) -> None:
        """In a forked child: nothing of the parent's threads, sockets or locks is usable."""
        self.engine.dispose(close=False)
        with self.app.app_context():
            db.engine.dispose(close=False)
        self.scheduler._jobstores_lock = threading.RLock()
        self.scheduler._executors_lock = threading.RLock()
        self.scheduler._listeners_lock = threading.RLock()
        self.executor._lock = threading.RLock()
        self.executor._pool = concurrent.futures.ThreadPoolExecutor(
            self.max_workers, thread_name_prefix="jobservice-job"
        )
        self.recorder = self.executor.recorder = Recorder(self.engine)
        self.heartbeat.after_fork()
        self.started = False
        self.elector = None
        self.pid = os.getpid()
        self._redis = None  # the parent's sockets are not ours
        self._connections = None

    # Connections of this process, opened on first use -----------------------------

    @property
    def redis(self) -> redis.Redis | None:
        """The shared Redis client (None without REDIS_URL)."""
        if self._redis is None and self.redis_url is not None:
            self._redis = redis.Redis.from_url(self.redis_url, socket_timeout=2, socket_connect_timeout=2)
        return self._redis

    @property
    def lease(self) -> Lease:
        return self._open()[0]

    @property
    def bus(self) -> Bus:
        return self._open()[1]

    def _open(self) -> tuple[Lease, Bus]:
        """The lease and the bus are named after the cluster id, which the database holds."""
        if self._connections is None:
            cluster_id = self.cluster.cluster_id
            if self.redis is not None and self.redis_url is not None:
                prefix = f"jobservice:{cluster_id}"
                lease: Lease = RedisLease(self.redis_url, prefix, self.lease_s, self.cluster.fence_floor)
                self._connections = (lease, RedisBus(self.redis, prefix))
            else:
                instance = Path(self.app.instance_path)
                instance.mkdir(parents=True, exist_ok=True)
                lease = FileLease(instance / f"leader-{cluster_id}.lock", self.cluster.fence_floor)
                self._connections = (lease, FileBus(instance / f"events-{cluster_id}"))
        return self._connections

    def lease_seconds_left(self) -> float | None:
        """How long the current leader's lease lasts without renewal (None: no expiry or no leader)."""
        if self.elector is not None and self.elector.fence() is not None:
            return self.elector.seconds_left()
        try:
            return self.lease.seconds_left()
        except (redis.RedisError, OSError, SQLAlchemyError):
            return None

    def _passed(self) -> None:
        """Record, at most every half lease, that the leader processed due jobs."""
        now = time.monotonic()
        if now - self._last_pass_recorded >= self.lease_s / 2:
            self.cluster.record_pass()
            self._last_pass_recorded = now

    def _on_role_change(self, fence: int | None, reason: str) -> None:
        """Lead or stop leading. A new leader's first pass records its fence before it writes."""
        metrics.leadership_changed(fence, reason)
        if fence is None:
            if self.scheduler.state == STATE_RUNNING:
                self.scheduler.pause()
            return
        self.scheduler.resume()

    def _fenced_out(self, exc: FencedOut) -> None:
        """The database refused our fence: a newer leader exists, so stop leading at once."""
        if self.elector is not None:
            self.elector.step_down(exc.recorded)

    def _on_message(self, message: str) -> None:
        if message == RELEASED:
            if self.elector is not None:
                self.elector.poke()
        elif self.fence() is not None:
            self.scheduler.wakeup()

    def _builtin_rules(self) -> JobRules:
        """The service's own jobs live outside JOB_PACKAGES and are declared only by it."""
        return JobRules(("jobservice.maintenance",), self.timezone, executors=("default",), service_jobs=True)

    @staticmethod
    def _declared_context(config: Mapping[str, Any]) -> dict[str, Any]:
        """Settings a declared job's meaning depends on: a change re-applies it."""
        return {"timezone": config["SCHEDULER_TIMEZONE"], "defaults": config["SCHEDULER_JOB_DEFAULTS"]}


def init_app(app: Flask) -> None:
    """Create the app's JobService; serving processes reconcile JOBS and join the election."""
    with app.app_context():
        service = JobService(app)
        app.extensions[EXTENSION] = service
        FlaskScheduler(app, service)
        if lifecycle.joins_election(app):
            check_schema()
            service.reconcile()
            service.start()


def current_service() -> JobService:
    """The JobService of the app in the current context."""
    return current_app.extensions[EXTENSION]


def _max_workers(executors: Mapping[str, Any]) -> int:
    """SCHEDULER_EXECUTORS keeps Flask-APScheduler's meaning, limited to what can push a context."""
    if set(executors) - {"default"}:
        raise ConfigError("SCHEDULER_EXECUTORS may only configure the 'default' executor")
    default = executors.get("default", {})
    kind = default.get("type", "threadpool") if isinstance(default, Mapping) else None
    if kind != "threadpool" or "class" in default:
        raise ConfigError(
            "SCHEDULER_EXECUTORS['default'] must be {'type': 'threadpool', 'max_workers': N}: "
            "runs need this process's app context"
        )
    workers = default.get("max_workers", 20)
    if isinstance(workers, bool) or not isinstance(workers, int) or not 1 <= workers <= MAX_WORKERS_LIMIT:
        raise ConfigError(f"SCHEDULER_EXECUTORS['default']['max_workers'] must be 1 to {MAX_WORKERS_LIMIT}")
    return workers
