"""Claims on fire times: what makes "exactly one run per fire time" hold.

A run is a row of `jobservice_runs`, unique on (job_id, trigger, scheduled_at, attempt): the
fire itself is attempt 1, and each retry of a failed attempt is a row of its own.

1. The leader *claims* due fire times in one statement per pass. A key that is
   already there (a stale leader, a new leader re-firing what a dead one fired
   but did not advance) is refused and its `prevented` count goes up.
2. A worker thread (or an RQ work-horse) *starts* a claimed run only by a compare-and-set
   on (claim token, started_at IS NULL), and only while fewer than the job's `max_instances`
   runs of it are going anywhere in the cluster (counted from this table in the same
   transaction). A start whose COMMIT went unanswered is *in doubt*: the ledger asks the
   database which of its runs started (those are run; the sweep leaves them alone) before
   it answers, and the others keep their claim, for adoption.
3. A claimed run that never started (its leader died or stepped down, or it is a
   run-now request nobody has claimed yet) is *adopted* by the current leader with
   the same compare-and-set; whichever of the two sets first wins, so it runs once.
   The claim of a job's last fire keeps the job's definition (`job_state`): the store
   deletes such a job once its fire is claimed, and the adopter still needs it.
4. A failed attempt with retries left gets its successor row (`add_retry`) in the same
   transaction that records the failure, unclaimed and `not_before` its delay: the leader
   adopts it like a run-now request once that time has come.

Claims, starts, adoptions and misses are fenced (see `fencing`): a leader whose fence
was superseded cannot write any of them.
"""

from __future__ import annotations

import functools
import logging
import secrets
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import bindparam, exists, func, literal, literal_column, or_, select
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.sql import Insert

from . import fencing
from .identity import worker_id
from .models import (
    ACTIVE,
    MANUAL,
    MISSED,
    MYSQL,
    RUNNING,
    SKIPPED,
    UTCDateTime,
    force_index,
    jobs_table,
    runs_table,
    utcnow,
)

logger = logging.getLogger(__name__)

runs = runs_table
#: What a start answers for a run that would exceed its job's max_instances.
BUSY = "busy"
#: What a start answers for a run whose start was in doubt and, asked, had not started (or
#: the database never answered): its claim stays, and the leader adopts it.
UNSURE = "unsure"
#: How long a start in doubt is asked about before it is given up (its runs, if they did
#: start, are then closed failed by the sweep), and how often.
SETTLE_FOR_S = 600.0
SETTLE_EVERY_S = 0.2
#: A claim of our own fence, unstarted this long and not in our executor, was left behind
#: (a start that failed, a claim whose commit outcome was unknown): adopt it again.
LEFT_BEHIND_S = 2
#: A literal, not a bound parameter: PyMySQL's executemany cannot bind parameters that
#: follow VALUES (in ON DUPLICATE KEY UPDATE), and rewrites to multi-row VALUES only without.
PREVENTED_PLUS_ONE = runs.c.prevented + literal_column("1")

# The hot statements are built once: building one per call costs more CPU (SQLAlchemy
# derives its cache key from the whole expression each time) than running it.
_CLAIMED_BY = select(runs.c.job_id, runs.c.trigger, runs.c.scheduled_at, runs.c.attempt, runs.c.id).where(
    runs.c.claim == bindparam("token")
)
#: Runs of these jobs going on now, anywhere: what max_instances is held to.
_ACTIVE_RUNS = (
    select(runs.c.job_id, func.count())
    .where(
        runs.c.status.in_(ACTIVE),
        runs.c.started_at.is_not(None),
        runs.c.job_id.in_(bindparam("jobs", expanding=True)),
    )
    .group_by(runs.c.job_id)
)
_LOCK_JOBS = (
    select(jobs_table.c.id).where(jobs_table.c.id.in_(bindparam("jobs", expanding=True))).with_for_update()
)
_PAUSED = select(jobs_table.c.id).where(
    jobs_table.c.id == runs.c.job_id, jobs_table.c.next_run_time.is_(None)
)
#: By primary key (cheap to render and to look up, whatever the batch size), with the claim
#: token as the compare-and-set: one statement per token (a pass's claims share one).
_START = (
    runs.update()
    .where(
        runs.c.id.in_(bindparam("ids", expanding=True)),
        runs.c.claim == bindparam("token"),
        runs.c.started_at.is_(None),
        or_(runs.c.trigger == MANUAL, ~exists(_PAUSED)),
    )
    .values(
        started_at=bindparam("started_at"), worker=bindparam("worker"), updated_at=bindparam("started_at")
    )
)
_STARTED_AT = select(runs.c.id, runs.c.claim).where(
    runs.c.id.in_(bindparam("ids", expanding=True)), runs.c.started_at == bindparam("started_at")
)

#: A start in doubt, as it would have landed: at that time, by this process, and still open.
_STARTED_BY = _STARTED_AT.where(
    runs.c.worker == bindparam("worker"), runs.c.status.in_(ACTIVE)
).with_for_update()
_TOUCH = (
    runs.update().where(runs.c.id.in_(bindparam("ids", expanding=True))).values(updated_at=bindparam("now"))
)


@dataclass(frozen=True)
class RunKey:
    """Identifies one fire of a job; `scheduled_at` is always UTC."""

    job_id: str
    trigger: str
    scheduled_at: datetime
    attempt: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "scheduled_at", self.scheduled_at.astimezone(UTC))


@dataclass(frozen=True)
class Claim:
    """A run this process may start, under the given lease fence."""

    key: RunKey
    token: str
    fence: int
    #: The run's row: starts and outcomes are written by primary key.
    run_id: int


def new_token() -> str:
    return secrets.token_hex(8)


class RunLedger:
    """Claims, starts and adoptions of runs; outcomes go through the Recorder."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def claim(
        self,
        keys: Sequence[RunKey],
        fence: int,
        status: str = RUNNING,
        error: str | None = None,
        saved: Mapping[RunKey, bytes] | None = None,
    ) -> list[Claim]:
        """Insert claims for these fire times; return the ones this call won.

        `saved` holds the definitions of jobs whose last fire this is (kept with the claim).
        """
        if not keys:
            return []
        token, now = new_token(), utcnow()
        saved = saved or {}
        rows = [
            {
                "job_id": key.job_id,
                "trigger": key.trigger,
                "scheduled_at": key.scheduled_at,
                "attempt": key.attempt,
                "status": status,
                "claim": token,
                "fence": fence,
                "worker": worker_id(),
                "finished_at": now if status in (MISSED, SKIPPED) else None,
                "error": error,
                "prevented": 0,
                "created_at": now,
                "updated_at": now,
                "job_state": saved.get(key),
            }
            for key in keys
        ]
        with self.engine.begin() as conn:
            # executemany, not one multi-row VALUES: SQLAlchemy would compile and cache
            # a new statement for every row count, megabytes each.
            conn.execute(_insert_or_count(conn.dialect.name), rows)
            fencing.check(conn, fence)
        return self.claimed_by(token, fence)

    def claimed_by(self, token: str, fence: int) -> list[Claim]:
        """The claims a token holds; also how an unknown commit outcome is resolved."""
        with self.engine.connect() as conn:
            rows = conn.execute(_CLAIMED_BY, {"token": token}).all()
        return [Claim(RunKey(*row[:4]), token, fence, row[4]) for row in rows]

    def start_many(
        self, claims: Sequence[Claim], limits: Mapping[str, int], fenced: bool = True, lock: bool = False
    ) -> Starts:
        """Mark runs started where their claim still holds (and, for a scheduled run, the
        job was not paused meanwhile by any process), one transaction per fence (one, but
        for a process that led twice). `limits` is each job's max_instances: a run that
        would exceed it, counting what runs anywhere, is not started but reported `busy`.
        `fenced`: refuse (FencedOut) if a newer leader recorded its fence; an RQ worker
        starts unfenced (its claim token is what a newer leader replaces). `lock`: several
        processes start runs at once, so the count is taken under a lock on the jobs' rows."""
        by_fence: dict[int, list[Claim]] = defaultdict(list)
        for claim in claims:
            by_fence[claim.fence].append(claim)
        result = Starts({}, [])
        for fence, group in sorted(by_fence.items()):
            try:
                part = self._start(group, fence if fenced else None, limits, lock)
            except StartInDoubt as doubt:
                started = self._settle(doubt)
                part = Starts(started, [], [claim for claim in group if claim.key not in started])
            result.started.update(part.started)
            result.busy.extend(part.busy)
            result.unsure.extend(part.unsure)
        return result

    def _start(
        self, claims: Sequence[Claim], fence: int | None, limits: Mapping[str, int], lock: bool
    ) -> Starts:
        started_at = utcnow()
        committing = False
        try:
            with self.engine.begin() as conn:
                result = _start_in(conn, claims, fence, limits, lock, started_at)
                committing = True
        except SQLAlchemyError as exc:
            if committing:  # the COMMIT itself went unanswered: it may have landed
                raise StartInDoubt(list(claims), started_at, exc) from exc
            raise
        return result

    def _settle(self, doubt: StartInDoubt) -> dict[RunKey, datetime]:
        """The runs of a start in doubt that did start and are still open, asked until the
        database answers (the first question may meet the same outage). Those are ours to
        run: their `updated_at` is touched in the same transaction, so the sweep (which
        closes started runs nobody beats for) leaves them alone from here on."""
        claims = doubt.claims
        logger.warning(
            "The start of %d run(s) is in doubt (%s); asking which started", len(claims), doubt.cause
        )
        by_row = {(claim.run_id, claim.token): claim for claim in claims}
        params = {"ids": sorted({run_id for run_id, _ in by_row}), "started_at": doubt.started_at}
        deadline = time.monotonic() + SETTLE_FOR_S
        while True:
            try:
                with self.engine.begin() as conn:
                    rows = conn.execute(_STARTED_BY, {**params, "worker": worker_id()}).all()
                    mine = [by_row[row] for row in map(tuple, rows) if row in by_row]
                    if mine:
                        conn.execute(_TOUCH, {"ids": [claim.run_id for claim in mine], "now": utcnow()})
            except SQLAlchemyError as exc:
                if time.monotonic() > deadline:
                    logger.error(
                        "Gave up asking whether %d run(s) started: %s", len(claims), exc.__class__.__name__
                    )
                    return {}
                time.sleep(SETTLE_EVERY_S)
                continue
            logger.warning("Of %d run(s) whose start was in doubt, %d had started", len(claims), len(mine))
            return {claim.key: doubt.started_at for claim in mine}

    def miss(self, claim: Claim, error: str, status: str = MISSED) -> None:
        """Close a claimed run that will not start (too late, skipped, job gone)."""
        now = utcnow()
        update = (
            runs.update()
            .where(runs.c.id == claim.run_id, runs.c.claim == claim.token, runs.c.started_at.is_(None))
            .values(status=status, finished_at=now, updated_at=now, error=error)
        )
        with self.engine.begin() as conn:
            conn.execute(update)
            fencing.check(conn, claim.fence)

    def pending(self, fence: int, limit: int = 1000) -> list[tuple[RunKey, str | None]]:
        """Runs nobody started: requested (no claim: run-now, or a retry whose time came),
        claimed under another fence, or claimed under ours but left behind (an unknown
        commit outcome, a failed start)."""
        now = utcnow()
        left_behind = now - timedelta(seconds=LEFT_BEHIND_S)
        query = (
            select(runs.c.job_id, runs.c.trigger, runs.c.scheduled_at, runs.c.attempt, runs.c.claim)
            .where(
                runs.c.status == RUNNING,
                runs.c.started_at.is_(None),
                or_(
                    runs.c.fence.is_(None),
                    runs.c.fence != fence,
                    runs.c.updated_at < left_behind,
                ),
                or_(runs.c.not_before.is_(None), runs.c.not_before <= now),
            )
            .order_by(runs.c.id)
            .limit(limit)
        )
        # Every pass asks this: on a big history MariaDB may walk the primary key for the
        # ORDER BY id (S7: 9.6 million rows read per pass) instead of the few unstarted runs.
        query = force_index(query, runs, "ix_jobservice_runs_status_started_at")
        with self.engine.connect() as conn:
            return [(RunKey(*row[:4]), row[4]) for row in conn.execute(query)]

    def next_retry_at(self) -> datetime | None:
        """When the earliest retry still waiting for its delay may start."""
        query = select(func.min(runs.c.not_before)).where(
            runs.c.status == RUNNING, runs.c.started_at.is_(None), runs.c.not_before > utcnow()
        )
        with self.engine.connect() as conn:
            return conn.execute(query).scalar()

    def adopt(self, candidates: Iterable[tuple[RunKey, str | None]], fence: int) -> list[Claim]:
        """Take over runs that nobody started, if their claim is still the one we saw."""
        token, now = new_token(), utcnow()
        params = [
            {
                "b_job": key.job_id,
                "b_trigger": key.trigger,
                "b_at": key.scheduled_at,
                "b_attempt": key.attempt,
                "b_old": old,
            }
            for key, old in candidates
        ]
        if not params:
            return []
        update = (
            runs.update()
            .where(
                runs.c.job_id == bindparam("b_job"),
                runs.c.trigger == bindparam("b_trigger"),
                runs.c.scheduled_at == bindparam("b_at"),
                runs.c.attempt == bindparam("b_attempt"),
                runs.c.claim.is_not_distinct_from(bindparam("b_old")),
                runs.c.started_at.is_(None),
                runs.c.status == RUNNING,
            )
            .values(claim=token, fence=fence, worker=worker_id(), updated_at=now)
        )
        with self.engine.begin() as conn:
            conn.execute(update, params)
            fencing.check(conn, fence)
        return self.claimed_by(token, fence)

    def saved_jobs(self, run_ids: Sequence[int]) -> dict[int, bytes]:
        """The job definitions kept with these claims (those of last fires)."""
        if not run_ids:
            return {}
        query = select(runs.c.id, runs.c.job_state).where(
            runs.c.id.in_(list(run_ids)), runs.c.job_state.is_not(None)
        )
        with self.engine.connect() as conn:
            return {row.id: row.job_state for row in conn.execute(query)}

    def request_manual(self, job_id: str) -> RunKey:
        """Queue a run-now request; the leader adopts and runs it."""
        now = utcnow()
        key = RunKey(job_id, MANUAL, now)
        with self.engine.begin() as conn:
            conn.execute(
                runs.insert().values(
                    job_id=job_id,
                    trigger=MANUAL,
                    scheduled_at=now,
                    status=RUNNING,
                    prevented=0,
                    created_at=now,
                    updated_at=now,
                )
            )
        return key


@dataclass
class Starts:
    """What a start did: the runs it started (with their start time), the claims it did not
    start because their job had max_instances runs going already, and the claims of a start
    in doubt that had not started (or could not be asked about)."""

    started: dict[RunKey, datetime]
    busy: list[Claim]
    unsure: list[Claim] = field(default_factory=list)

    def answer(self, claim: Claim) -> datetime | str | None:
        """For one claim: its start time, BUSY, UNSURE, or None (refused: taken over, paused)."""
        started_at = self.started.get(claim.key)
        return started_at if started_at is not None else self._not_started.get(claim.run_id)

    @functools.cached_property
    def _not_started(self) -> dict[int, str]:
        return {claim.run_id: UNSURE for claim in self.unsure} | {claim.run_id: BUSY for claim in self.busy}


class StartInDoubt(Exception):
    """A start transaction whose COMMIT got no answer (the connection or the database died
    right then): its runs may have started or not. Nobody else can start them either way:
    they are claimed, and started ones are no longer startable."""

    def __init__(self, claims: list[Claim], started_at: datetime, cause: SQLAlchemyError) -> None:
        super().__init__(f"the start of {len(claims)} run(s) got no answer: {cause.__class__.__name__}")
        self.claims = claims
        self.started_at = started_at
        self.cause = cause.__class__.__name__


def _within_limits(
    conn: Connection, claims: Sequence[Claim], limits: Mapping[str, int], lock: bool
) -> tuple[list[Claim], list[Claim]]:
    """Split claims into those within their job's max_instances (counting the runs going on
    now and the ones allowed before them here) and those beyond it."""
    job_ids = sorted({claim.key.job_id for claim in claims if claim.key.job_id in limits})
    if not job_ids:
        return list(claims), []
    if lock:
        conn.execute(_LOCK_JOBS, {"jobs": job_ids})
    going: dict[str, int] = dict(conn.execute(_ACTIVE_RUNS, {"jobs": job_ids}).all())  # type: ignore[arg-type]
    allowed, busy = [], []
    for claim in sorted(claims, key=lambda c: c.run_id):
        job_id = claim.key.job_id
        if job_id in limits and going.get(job_id, 0) >= limits[job_id]:
            busy.append(claim)
            continue
        going[job_id] = going.get(job_id, 0) + 1
        allowed.append(claim)
    return allowed, busy


def _start_in(
    conn: Connection,
    claims: Sequence[Claim],
    fence: int | None,
    limits: Mapping[str, int],
    lock: bool,
    started_at: datetime,
) -> Starts:
    """The start compare-and-set of `start_many`, for one fence, inside its transaction."""
    allowed, busy = _within_limits(conn, claims, limits, lock)
    if not allowed:
        if fence is not None:  # a superseded leader hears so, whatever it tried
            fencing.check(conn, fence)
        return Starts({}, busy)
    by_row = {(claim.run_id, claim.token): claim for claim in allowed}
    by_token: dict[str, list[int]] = defaultdict(list)
    for run_id, token in sorted(by_row):
        by_token[token].append(run_id)
    matched, worker = 0, worker_id()
    for token, token_ids in by_token.items():
        params = {"ids": token_ids, "token": token, "started_at": started_at, "worker": worker}
        matched += conn.execute(_START, params).rowcount
    if fence is not None:
        fencing.check(conn, fence)
    if matched == len(by_row):  # all of them, as almost always: no need to ask which
        return Starts({claim.key: started_at for claim in allowed}, busy)
    ids = sorted({run_id for run_id, _ in by_row})
    rows = conn.execute(_STARTED_AT, {"ids": ids, "started_at": started_at}).all()
    return Starts({by_row[row].key: started_at for row in map(tuple, rows) if row in by_row}, busy)


def add_retry(conn: Connection, run_id: int, not_before: datetime) -> None:
    """The next attempt of a run that just failed: a row of its own, unclaimed, that may start
    at `not_before`. It keeps the failed row's copy of the job's definition, if any."""
    now = utcnow()
    columns = ["job_id", "trigger", "scheduled_at", "attempt", "not_before", "status", "prevented"]
    columns += ["created_at", "updated_at", "job_state"]
    source = select(
        runs.c.job_id,
        runs.c.trigger,
        runs.c.scheduled_at,
        runs.c.attempt + 1,
        literal(not_before, UTCDateTime()),
        literal(RUNNING),
        literal(0),
        literal(now, UTCDateTime()),
        literal(now, UTCDateTime()),
        runs.c.job_state,
    ).where(runs.c.id == run_id)
    conn.execute(runs.insert().from_select(columns, source))


@functools.cache
def _insert_or_count(name: str) -> Insert:
    """INSERT that, on a key already claimed, counts a prevented duplicate instead."""
    # Only the dialect in use is imported: each of the others is megabytes per worker.
    if name in MYSQL:
        from sqlalchemy.dialects.mysql import insert as mysql_insert

        return mysql_insert(runs).on_duplicate_key_update(prevented=PREVENTED_PLUS_ONE)
    if name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as dialect_insert
    else:
        from sqlalchemy.dialects.sqlite import insert as dialect_insert
    stmt = dialect_insert(runs)
    return stmt.on_conflict_do_update(
        index_elements=[runs.c.job_id, runs.c.trigger, runs.c.scheduled_at, runs.c.attempt],
        set_={"prevented": PREVENTED_PLUS_ONE},
    )
