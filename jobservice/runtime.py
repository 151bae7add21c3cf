"""One app's scheduling, as it runs in this process: a scheduler in standby, and its part in
the leader election.

Every process gets a Runtime whose scheduler is in standby (the store is live, so every
write on any worker reaches it). Serving processes also join the election; the one
holding the lease processes due jobs. What changes jobs goes through `operations`.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import redis
from apscheduler.schedulers.base import STATE_RUNNING
from flask import Flask, current_app
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from . import lifecycle, maintenance, metrics, spread
from .bus import RELEASED, WAKEUP, Bus, FileBus, RedisBus
from .cluster import Cluster
from .config_jobs import Reconciled, parse_declared, reconcile
from .database import startup_lock
from .errors import ConfigError
from .executor import AppContextExecutor
from .fencing import FencedOut
from .jobstore import ClusterJobStore
from .leadership import Elector
from .leases import FileLease, LeaderInfo, Lease, RedisLease
from .ledger import RunLedger
from .liveness import Heartbeat, Sweeper
from .operations import Operations
from .recorder import Recorder
from .rules import JobRules
from .runner import Runner
from .scheduler import IDLE_RESCAN_S, ClusterScheduler
from .settings import Settings
from .spread import SpreadExecutor, Taker

if TYPE_CHECKING:
    from .rqexec import RQExecutor

logger = logging.getLogger(__name__)

EXTENSION = "jobservice"
#: Verdicts on job functions kept per process (a run looks its function's up when it starts).
MAX_CACHED_REFUSALS = 10_000
#: Processes touch their runs in progress this many times per lease...
BEATS_PER_LEASE = 2
#: ...and the leader closes a run whose heartbeat stopped for this many leases. More than
#: the three leases of a frozen process the tests thaw, so a short freeze is survived.
DEAD_AFTER_LEASES = 5


class Runtime:
    """The scheduler, store, run history and election of one app in this process."""

    def __init__(self, app: Flask, settings: Settings, engine: Engine) -> None:
        self.app = app
        self.settings = settings
        #: app.config as `settings` was read from it (see extension.init_app).
        self.config_read: dict[str, Any] = {}
        self.engine = engine
        self.pid = os.getpid()
        self.lease_s = settings.lease_s
        self.timezone = settings.timezone
        self.store = ClusterJobStore(engine)
        self.ledger = RunLedger(engine)
        self.recorder = Recorder(engine, self.notify)
        self.cluster = Cluster(engine)
        self.rules = JobRules(settings.job_packages, self.timezone, executors=("default",))
        self._refusals: dict[str, str | None] = {}
        # JOBS are checked in every process (a bad one stops any start-up, commands included).
        self._declared_context = {"timezone": settings.timezone_name, "defaults": settings.job_defaults}
        #: The service's own jobs live outside the job packages and are declared only by it.
        self.service_rules = JobRules(
            ("jobservice.maintenance",), self.timezone, executors=("default",), service_jobs=True
        )
        self.declared = {
            **parse_declared(self.rules, settings.jobs, self._declared_context),
            **parse_declared(self.service_rules, [maintenance.DEFINITION], self._declared_context),
        }
        beat_s = self.lease_s / BEATS_PER_LEASE
        self.heartbeat = Heartbeat(engine, beat_s, metrics.run_overrunning)
        self.runner = Runner(
            app,
            self.ledger,
            self.recorder,
            self.heartbeat,
            metrics,
            self.refused_func,
            settings.overrun_s,
            settings.retry_max_delay_s,
        )
        self.executor = self._executor()
        self.taker = self._taker()
        self._last_pass_recorded = 0.0
        self.scheduler = ClusterScheduler(
            ledger=self.ledger,
            sweeper=Sweeper(engine, beat_s, DEAD_AFTER_LEASES * self.lease_s),
            fence=self.fence,
            record_fence=self.cluster.record_fence,
            on_fenced_out=self._fenced_out,
            cluster_paused=self.cluster.halted,
            on_pass=self._passed,
            idle_rescan_s=min(IDLE_RESCAN_S, self.lease_s),
            retry_cap_s=settings.retry_max_delay_s,
            timezone=self.timezone,
            job_defaults=dict(settings.job_defaults),
            jobstores={"default": self.store},
            executors={"default": self.executor},
        )
        self.scheduler.start()  # standby: the store is live, nothing is processed
        self.operations = Operations(
            self.rules, self.scheduler, self.store, self.ledger, self.cluster, self.notify
        )
        #: Flask-APScheduler's `@scheduler.authenticate` callback, for SCHEDULER_AUTH.
        self.authenticate: Callable[[Any], bool] | None = None
        self.elector: Elector | None = None
        self.started = False
        self.should_restart_after_fork = False
        self._redis: redis.Redis | None = None
        self._connections: tuple[Lease, Bus] | None = None
        #: Request threads and the elector may open them together: once, under this lock.
        self._opening = threading.RLock()

    def _executor(self) -> AppContextExecutor | RQExecutor:
        """SCHEDULER_EXECUTOR: the leader's thread pool (spread over every serving process
        with JOBSERVICE_SPREAD_RUNS), or RQ (imported only then)."""
        if self.settings.executor == "rq":
            from .rqexec import RQExecutor

            return RQExecutor(self.rq_connection, self.settings.rq_queue_prefix, self.fence, self._fenced_out)
        if self.settings.spread_runs:
            return SpreadExecutor(
                self.runner,
                self.fence,
                self.rq_connection,
                self.redis_prefix,
                self._fenced_out,
                self.settings.max_workers,
            )
        return AppContextExecutor(self.runner, self.fence, self._fenced_out, self.settings.max_workers)

    def _taker(self) -> Taker | None:
        """With JOBSERVICE_SPREAD_RUNS: what takes the leader's runs while this process follows."""
        if not isinstance(self.executor, SpreadExecutor):
            return None
        return Taker(
            self.executor, self.runner, self.store, self.fence, self.rq_connection, self.redis_prefix
        )

    def redis_prefix(self) -> str:
        """The deployment's keys in Redis are named after the cluster id, which the database holds."""
        return f"jobservice:{self.cluster.cluster_id}"

    def rq_connection(self) -> redis.Redis:
        connection = self.redis
        if connection is None:  # settings refuse rq and spreading without Redis
            raise ConfigError("SCHEDULER_EXECUTOR 'rq' and JOBSERVICE_SPREAD_RUNS need JOBSERVICE_REDIS_URL")
        return connection

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

    def reconcile(self, extra: list[dict[str, Any]] | None = None) -> Reconciled:
        """Bring the declared jobs (JOBS, the service's own, `extra` ones declared in code)
        into the store, once across processes starting together."""
        declared = dict(self.declared)
        for job_id, spec in parse_declared(
            self.rules, extra or [], self._declared_context, "declared"
        ).items():
            if job_id in declared:
                raise ConfigError(f"job id {job_id!r} is declared both in JOBS and in code")
            declared[job_id] = spec
        with startup_lock(self.engine, self.app.instance_path):
            result = reconcile(self.scheduler, self.engine, declared)
        if result.added or result.changed or result.removed:
            self.notify()
        return result

    # Joining and leaving the election --------------------------------------------

    def start(self) -> None:
        """Campaign for the lease and process due jobs whenever this process leads."""
        if self.started:
            return
        if not self.settings.this_host_may_lead():
            logger.info("This host is not in SCHEDULER_ALLOWED_HOSTS: it serves, and never leads")
            return
        if self.settings.redis_url is None and self.engine.dialect.name != "sqlite":
            logger.warning(
                "No Redis (JOBSERVICE_REDIS_URL): leadership is per host (a file lock). Set it "
                "when several hosts share this database."
            )
        self.pid = os.getpid()
        self.started = True
        self.elector = Elector(self.lease, self.lease_s, self._on_role_change)
        self.recorder.start()
        self.scheduler.start_processing()
        self.bus.listen(self._on_message)
        if self.taker is not None:
            self.taker.start()
        self.elector.start()
        lifecycle.register(self)

    def stop(self, forking: bool = False) -> None:
        """Leave the election: stop processing, hand the lease over, write pending outcomes."""
        if not self.started or self.elector is None:
            return
        self.started = False
        self.should_restart_after_fork = forking
        led = self.elector.fence() is not None
        if self.taker is not None:
            self.taker.stop()
        self.elector.stop(release=True)
        if led:
            self.bus.publish(RELEASED)
        self.bus.close()
        self.scheduler.stop_processing()
        self.recorder.stop()

    def flush_outcomes(self) -> None:
        """Write the outcomes of finished runs now (at exit, after running jobs finished)."""
        self.recorder.flush()

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
        self.scheduler.after_fork()
        self.executor.after_fork()
        self.recorder = self.runner.recorder = Recorder(self.engine, self.notify)
        self.heartbeat.after_fork()
        self.started = False
        self.elector = None
        self.pid = os.getpid()
        self._redis = None  # the parent's sockets are not ours
        self._connections = None
        self._opening = threading.RLock()  # a fork may copy it held

    # Connections of this process, opened on first use -----------------------------

    @property
    def redis(self) -> redis.Redis | None:
        """The shared Redis client (None without a Redis URL)."""
        url = self.settings.redis_url
        if self._redis is None and url is not None:
            with self._opening:
                if self._redis is None:
                    self._redis = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
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
            cluster_id = self.cluster.cluster_id  # outside the lock: it may wait on the database
            with self._opening:
                if self._connections is None:
                    self._connections = self._connect(cluster_id)
        return self._connections

    def _connect(self, cluster_id: str) -> tuple[Lease, Bus]:
        url = self.settings.redis_url
        if self.redis is not None and url is not None:
            prefix = self.redis_prefix()
            lease: Lease = RedisLease(url, prefix, self.lease_s, self.cluster.fence_floor)
            return lease, RedisBus(self.redis, prefix)
        instance = Path(self.app.instance_path)
        instance.mkdir(parents=True, exist_ok=True)
        file_lease = FileLease(instance / f"leader-{cluster_id}.lock", self.cluster.fence_floor)
        return file_lease, FileBus(instance / f"events-{cluster_id}")

    def rq_status(self) -> dict[str, Any] | None:
        """With the RQ executor: live RQ workers of this service's queues and each queue's
        depth (None where Redis cannot be read); without it, None."""
        if self.settings.executor != "rq":
            return None
        from .rqexec import workers_and_queues

        try:
            return workers_and_queues(self.rq_connection(), self.settings.rq_queue_prefix)
        except (redis.RedisError, OSError):
            return {"workers": None, "queues": None}

    def spread_status(self) -> dict[str, Any] | None:
        """With JOBSERVICE_SPREAD_RUNS: the processes taking runs and the runs waiting for one
        (None where Redis cannot be read); without it, None."""
        if not self.settings.spread_runs:
            return None
        try:
            return spread.status(self.rq_connection(), self.redis_prefix())
        except (redis.RedisError, OSError):
            return {"takers": None, "queued": None}

    def executor_status(self) -> dict[str, Any]:
        """What /health and GET /scheduler add for the executor in use: `rq` or `spread`."""
        extras = {"rq": self.rq_status(), "spread": self.spread_status()}
        return {key: value for key, value in extras.items() if value is not None}

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

    def refused_func(self, func_ref: str) -> str | None:
        """Why a stored job's function may not run (outside the job packages), if it may not.
        Checked when each run starts: a row written by older code, or an adopted
        Flask-APScheduler table, must not run what the API would refuse."""
        try:
            return self._refusals[func_ref]
        except KeyError:
            pass
        refused = None if self.service_rules.refusal(func_ref) is None else self.rules.refusal(func_ref)
        if len(self._refusals) < MAX_CACHED_REFUSALS:  # the rules never change while it serves
            self._refusals[func_ref] = refused
        return refused

    def _on_message(self, message: str) -> None:
        if message == RELEASED:
            if self.elector is not None:
                self.elector.poke()
        elif self.fence() is not None:
            self.scheduler.wakeup()


def current_runtime() -> Runtime:
    """The Runtime of the app in the current context."""
    return current_app.extensions[EXTENSION]
