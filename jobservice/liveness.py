"""Every run ends: heartbeats from the processes running them, and the leader's sweep.

* A process keeps a heartbeat on its runs in progress: every `beat_s` it touches their
  `updated_at`, one statement for all of them, and flags the ones past their limit
  (their job's interval, or RUN_OVERRUN_SECONDS) `overrunning`, with a log line and a metric.
* The leader closes a run whose heartbeat stopped `dead_after_s` ago as `failed`, naming
  the worker: its process died (kill -9, a lost host, a stop that outlasted gunicorn's
  graceful timeout), so nobody will ever write its outcome, and gives it its next attempt
  if its job has retries left (in the same transaction). It sweeps only once its own
  passes have worked for two beats, so an outage that stopped everyone's heartbeats is
  not mistaken for dead workers.

Heartbeats are not fenced: a process that stopped leading still runs, and beats for, the
runs it started. The sweep is.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from apscheduler.triggers.base import BaseTrigger
from sqlalchemy import bindparam, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from . import fencing
from .ledger import Claim, add_retry, runs
from .models import ACTIVE, FAILED, OVERRUNNING, RUNNING, utcnow

logger = logging.getLogger(__name__)

#: Runs closed per statement of a sweep.
SWEEP_BATCH = 500


@dataclass
class _InProgress:
    claim: Claim
    started_at: datetime
    limit_s: float | None
    flagged: bool = False

    def overran(self, now: datetime) -> bool:
        return self.limit_s is not None and (now - self.started_at).total_seconds() > self.limit_s


class Heartbeat:
    """Keeps this process's runs in progress visibly alive, from one thread."""

    def __init__(self, engine: Engine, beat_s: float, on_overrun: Callable[[str], None]) -> None:
        self.engine = engine
        self.beat_s = beat_s
        self._on_overrun = on_overrun
        self._runs: dict[int, _InProgress] = {}
        self._lock = threading.Lock()
        self._pid = -1
        self._failures = 0

    def started(self, claim: Claim, started_at: datetime, limit_s: float | None) -> None:
        """A run began here: beat for it until `ended`, and flag it once past `limit_s`."""
        with self._lock:
            self._runs[claim.run_id] = _InProgress(claim, started_at, limit_s)
            if self._pid != os.getpid():  # first run of this process (or of a forked child)
                self._pid = os.getpid()
                threading.Thread(target=self._loop, name="jobservice-heartbeat", daemon=True).start()

    def ended(self, claim: Claim) -> None:
        with self._lock:
            self._runs.pop(claim.run_id, None)

    def after_fork(self) -> None:
        """In a forked child: the parent's runs and lock are not ours."""
        self._lock = threading.Lock()
        self._runs = {}
        self._pid = -1

    def _loop(self) -> None:
        pid = os.getpid()
        while self._pid == pid:
            time.sleep(self.beat_s)
            try:
                self.beat()
            except SQLAlchemyError as exc:  # the next beat tries again
                if self._failures % 20 == 0:  # an outage must not flood the log
                    logger.warning("Heartbeat of runs in progress failed: %s", exc.__class__.__name__)
                self._failures += 1
            else:
                self._failures = 0

    def beat(self) -> None:
        """Touch every run in progress, and flag the ones that overran, in one transaction."""
        now = utcnow()
        with self._lock:
            runs_now = list(self._runs.values())
        if not runs_now:
            return
        overrun = [run for run in runs_now if not run.flagged and run.overran(now)]
        ids = [run.claim.run_id for run in runs_now]
        with self.engine.begin() as conn:
            conn.execute(_BEAT, {"ids": ids, "now": now})
            if overrun:
                conn.execute(_FLAG, {"ids": [run.claim.run_id for run in overrun], "now": now})
        for run in overrun:
            run.flagged = True
            key = run.claim.key
            logger.warning(
                "Run of %s at %s is overrunning: still going after %.1fs (limit %.1fs)",
                key.job_id,
                key.scheduled_at,
                (now - run.started_at).total_seconds(),
                run.limit_s,
                extra={"job_id": key.job_id, "scheduled_at": key.scheduled_at, "status": OVERRUNNING},
            )
            self._on_overrun(key.job_id)


_BEAT = (
    runs.update()
    .where(runs.c.id.in_(bindparam("ids", expanding=True)), runs.c.status.in_(ACTIVE))
    .values(updated_at=bindparam("now"))
)
_FLAG = (
    runs.update()
    .where(runs.c.id.in_(bindparam("ids", expanding=True)), runs.c.status == RUNNING)
    .values(status=OVERRUNNING, updated_at=bindparam("now"))
)


@dataclass(frozen=True)
class DeadRun:
    """A run closed by the sweep because its process stopped beating."""

    run_id: int
    job_id: str
    trigger: str
    worker: str | None
    silent_s: float
    attempt: int = 1


class Sweeper:
    """The leader's side: close runs whose heartbeat stopped."""

    def __init__(self, engine: Engine, beat_s: float, dead_after_s: float) -> None:
        self.engine = engine
        self.beat_s = beat_s
        self.dead_after_s = dead_after_s
        self._last_sweep = 0.0

    def sweep(
        self,
        fence: int,
        healthy_s: float,
        retries: Callable[[list[DeadRun], datetime], dict[int, datetime]] = lambda dead, now: {},
    ) -> list[DeadRun]:
        """Close dead runs (at most once a beat, and only after `healthy_s` >= two beats of
        working passes), adding the next attempt where `retries` gives one a time;
        FencedOut if a newer leader recorded its fence."""
        moment = time.monotonic()
        if healthy_s < 2 * self.beat_s or moment - self._last_sweep < self.beat_s:
            return []
        self._last_sweep = moment
        now = utcnow()
        cutoff = now - timedelta(seconds=self.dead_after_s)
        candidates = select(
            runs.c.id, runs.c.job_id, runs.c.trigger, runs.c.worker, runs.c.updated_at, runs.c.attempt
        ).where(runs.c.status.in_(ACTIVE), runs.c.started_at.is_not(None), runs.c.updated_at < cutoff)
        with self.engine.connect() as conn:
            rows = conn.execute(candidates.limit(SWEEP_BATCH)).all()
        if not rows:
            return []
        dead = [
            DeadRun(
                row.id,
                row.job_id,
                row.trigger,
                row.worker,
                (now - row.updated_at).total_seconds(),
                row.attempt,
            )
            for row in rows
        ]
        retry_at = retries(dead, now)
        closed = []
        with self.engine.begin() as conn:
            for run in dead:  # one by one: a run whose heartbeat came back meanwhile stays open
                params = {"b_id": run.run_id, "b_cutoff": cutoff, "b_now": now, "b_error": _stopped(run)}
                if conn.execute(_CLOSE, params).rowcount == 1:
                    closed.append(run)
                    if run.run_id in retry_at:
                        add_retry(conn, run.run_id, retry_at[run.run_id])
            fencing.check(conn, fence)
        for run in closed:
            logger.warning(
                "Run %d of %s closed as failed: %s",
                run.run_id,
                run.job_id,
                _stopped(run),
                extra={"job_id": run.job_id, "status": FAILED, "worker": run.worker},
            )
        return closed


def _stopped(run: DeadRun) -> str:
    return (
        f"worker {run.worker} stopped: no heartbeat for {run.silent_s:.0f}s, so this run's outcome "
        "is unknown (its process died, or was killed after a graceful stop ran out of time)"
    )


_CLOSE = (
    runs.update()
    .where(
        runs.c.id == bindparam("b_id"),
        runs.c.status.in_(ACTIVE),
        runs.c.updated_at < bindparam("b_cutoff"),
    )
    .values(
        status=FAILED,
        finished_at=bindparam("b_now"),
        updated_at=bindparam("b_now"),
        error=bindparam("b_error"),
    )
)


def overrun_limit(
    trigger: BaseTrigger | None,
    scheduled_at: datetime,
    setting_s: float | None,
    timeout_s: float | None = None,
) -> float | None:
    """How long a run may go before it counts as overrunning: the gap from its fire time to
    the next (recurring jobs), capped by RUN_OVERRUN_SECONDS and the job's timeout_s when set."""
    gap_s = None
    try:
        nxt = trigger.get_next_fire_time(scheduled_at, scheduled_at) if trigger is not None else None
    except (OverflowError, ValueError):
        nxt = None
    if nxt is not None:
        gap_s = max((nxt - scheduled_at).total_seconds(), 0.0)
    limits = [limit for limit in (gap_s, setting_s, timeout_s) if limit]
    return min(limits) if limits else None
