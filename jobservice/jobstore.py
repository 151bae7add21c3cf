"""APScheduler's SQLAlchemy job store, made safe for several processes sharing one table.

Differences from the upstream store, each closing a hazard of APScheduler 3:

* a job is rebuilt without importing its function (the executor resolves it when it
  runs), so a process running an older release never deletes a job it cannot import;
* `next_run_time` comes from its column, and every write is checked against a
  `version` column, so the leader never writes back a stale copy over a pause or
  an edit made through another process;
* the leader advances many jobs in one transaction (`advance`), fenced: a leader whose
  fence was superseded cannot move or delete a job;
* a row that cannot be read back (written by older code, or by hand) is never deleted and
  never breaks a listing: it is listed as a `BrokenJob` with its error, and the pass
  leaves it alone.
"""

from __future__ import annotations

import logging
import pickle
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from apscheduler.job import Job
from apscheduler.jobstores.base import BaseJobStore, ConflictingIdError, JobLookupError
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.util import datetime_to_utc_timestamp, utc_timestamp_to_datetime
from sqlalchemy import and_, bindparam, func, or_, select, tuple_
from sqlalchemy.engine import Engine, Row
from sqlalchemy.exc import IntegrityError

from . import fencing
from .models import jobs_table
from .options import ServiceJob, restore

logger = logging.getLogger(__name__)
#: Jobs per statement when many go to the same next run time.
GROUP_CHUNK = 500
#: Unreadable rows remembered per process (their next run time is not waited for).
MAX_UNREADABLE = 10_000


class StaleJobError(Exception):
    """The job changed in the store after this process read it."""


class BrokenJobError(Exception):
    """The job's row cannot be read back into a job; it can only be removed (or re-added)."""

    def __init__(self, job_id: str, error: str) -> None:
        super().__init__(job_id, error)
        self.job_id = job_id
        self.error = error


class StoredJob(ServiceJob):
    """A job as read from the store, remembering the version it was read at and the pickled
    state it was read from (what a claim of its last fire keeps, without pickling again)."""

    __slots__ = ("version", "stored_state")


@dataclass(frozen=True)
class BrokenJob:
    """A row that cannot be read back into a job, as listings show it."""

    id: str
    next_run_time: datetime | None
    error: str


Entry = StoredJob | BrokenJob


class ClusterJobStore(SQLAlchemyJobStore):
    """Jobs in a SQL table shared by every process of the deployment."""

    def __init__(self, engine: Engine) -> None:
        BaseJobStore.__init__(self)
        self.engine = engine
        self.jobs_t = jobs_table
        self.pickle_protocol = pickle.HIGHEST_PROTOCOL
        self._unreadable: set[str] = set()
        self._unschedulable: set[tuple[str, int]] = set()

    def start(self, scheduler: Any, alias: str) -> None:
        # The schema belongs to the migrations; never CREATE TABLE from here.
        BaseJobStore.start(self, scheduler, alias)

    def shutdown(self) -> None:
        """The engine belongs to the Runtime, which disposes of it (close())."""

    def lookup_job(self, job_id: str) -> StoredJob | None:
        """The job, None if there is none; BrokenJobError if its row cannot be read."""
        entry = self.lookup_entry(job_id)
        if isinstance(entry, BrokenJob):
            raise BrokenJobError(entry.id, entry.error)
        return entry

    def lookup_entry(self, job_id: str) -> Entry | None:
        """The job or, if its row cannot be read, a BrokenJob saying why."""
        rows = self._rows(self.jobs_t.c.id == job_id)
        return self._restore(rows[0]) if rows else None

    def lookup_many(self, job_ids: Sequence[str]) -> dict[str, StoredJob]:
        """The readable ones of these jobs, in one query."""
        if not job_ids:
            return {}
        return {job.id: job for job in self._select(self.jobs_t.c.id.in_(list(job_ids)))}

    def restore_saved(self, job_id: str, job_state: bytes) -> StoredJob | None:
        """A job rebuilt from a definition kept with a claim (see the ledger), or None."""
        job = self._restore_row(job_id, None, job_state, 0, from_column=False)
        return job if isinstance(job, StoredJob) else None

    def skip(self, job: StoredJob) -> None:
        """Stop waiting for this version of a job in this process: its trigger fails."""
        if len(self._unschedulable) < MAX_UNREADABLE:
            self._unschedulable.add((job.id, job.version))

    def get_due_jobs(self, now: datetime) -> list[StoredJob]:
        return self._select(self.jobs_t.c.next_run_time <= datetime_to_utc_timestamp(now))

    def get_next_run_time(self) -> datetime | None:
        """The earliest next run time, not counting rows this process cannot read or schedule
        (they stay due for ever: waiting for them would spin the scheduler)."""
        t = self.jobs_t
        query = select(t.c.next_run_time).where(t.c.next_run_time.is_not(None))
        if self._unreadable:
            query = query.where(t.c.id.not_in(sorted(self._unreadable)))
        if self._unschedulable:
            query = query.where(tuple_(t.c.id, t.c.version).not_in(sorted(self._unschedulable)))
        with self.engine.connect() as conn:
            timestamp = conn.execute(query.order_by(t.c.next_run_time).limit(1)).scalar()
        return _from_timestamp(timestamp)

    def due_chunks(self, now: datetime, size: int) -> Iterator[list[StoredJob]]:
        """The due jobs, `size` rows at a time, in (next run time, id) order.

        Each chunk starts after the last row of the one before (whatever was done to
        it meanwhile, and even if that row could not be read), so a pass holds one
        chunk of jobs in memory at a time and never sees a job twice.
        """
        t = self.jobs_t
        due = t.c.next_run_time <= datetime_to_utc_timestamp(now)
        after: Any = None
        while True:
            conditions = [due]
            if after is not None:
                at, job_id = after
                conditions.append(or_(t.c.next_run_time > at, and_(t.c.next_run_time == at, t.c.id > job_id)))
            rows = self._rows(*conditions, limit=size, order=(t.c.next_run_time, t.c.id))
            jobs = [job for job in map(self._restore, rows) if isinstance(job, StoredJob)]
            if jobs:
                yield jobs
            if len(rows) < size:
                return
            after = (rows[-1].next_run_time, rows[-1].id)

    def get_all_jobs(self) -> list[StoredJob]:
        """Every readable job (APScheduler's interface; listings use `entries`)."""
        jobs = self._select()
        self._fix_paused_jobs_sorting(jobs)
        return jobs

    def entries(self) -> list[Entry]:
        """Every row, readable or not, in the upstream order (next run time, paused last)."""
        t = self.jobs_t
        scheduled = self._entries(t.c.next_run_time.is_not(None), order=(t.c.next_run_time, t.c.id))
        return scheduled + self._entries(t.c.next_run_time.is_(None), order=(t.c.id,))

    def page(self, limit: int, offset: int) -> list[Entry]:
        """One page of `entries` without reading the rest of the table."""
        t = self.jobs_t
        scheduled = self._entries(
            t.c.next_run_time.is_not(None), limit=limit, offset=offset, order=(t.c.next_run_time, t.c.id)
        )
        if len(scheduled) == limit:
            return scheduled
        paused_offset = 0
        if not scheduled and offset:
            with self.engine.connect() as conn:
                count = select(func.count()).select_from(t).where(t.c.next_run_time.is_not(None))
                paused_offset = offset - conn.execute(count).scalar_one()
        paused = self._entries(
            t.c.next_run_time.is_(None),
            limit=limit - len(scheduled),
            offset=max(paused_offset, 0),
            order=(t.c.id,),
        )
        return scheduled + paused

    def entries_where(
        self, *conditions: Any, order: Iterable[Any], limit: int, offset: int = 0
    ) -> list[Entry]:
        """The rows (readable or not) that match, in this order: one page of a listing."""
        return self._entries(*conditions, limit=limit, offset=offset, order=order)

    def count(self) -> int:
        with self.engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(self.jobs_t)).scalar_one()

    def add_job(self, job: Job) -> None:
        insert = self.jobs_t.insert().values(
            id=job.id,
            next_run_time=datetime_to_utc_timestamp(job.next_run_time),
            job_state=pickle.dumps(job.__getstate__(), self.pickle_protocol),
            version=1,
            func_ref=_func_ref(job),
        )
        with self.engine.begin() as conn:
            try:
                conn.execute(insert)
            except IntegrityError:
                raise ConflictingIdError(job.id) from None
        if isinstance(job, StoredJob):
            job.version = 1

    def add_many(self, jobs: Sequence[Job], replace: bool = False) -> None:
        """Add all of these jobs in one transaction (replacing same-id jobs if asked), or none."""
        rows = [
            {
                "id": job.id,
                "next_run_time": datetime_to_utc_timestamp(job.next_run_time),
                "job_state": pickle.dumps(job.__getstate__(), self.pickle_protocol),
                "version": 1,
                "func_ref": _func_ref(job),
            }
            for job in jobs
        ]
        with self.engine.begin() as conn:
            if replace:
                conn.execute(self.jobs_t.delete().where(self.jobs_t.c.id.in_([job.id for job in jobs])))
            try:
                if rows:
                    conn.execute(self.jobs_t.insert(), rows)
            except IntegrityError:
                raise ConflictingIdError(", ".join(job.id for job in jobs[:5])) from None

    def update_job(self, job: Job) -> None:
        """Write the whole job; refused if someone else wrote it since it was read."""
        t = self.jobs_t
        update = t.update().values(
            next_run_time=datetime_to_utc_timestamp(job.next_run_time),
            job_state=pickle.dumps(job.__getstate__(), self.pickle_protocol),
            version=t.c.version + 1,
            func_ref=_func_ref(job),
        )
        if isinstance(job, StoredJob):
            update = update.where(t.c.id == job.id, t.c.version == job.version)
        else:
            update = update.where(t.c.id == job.id)
        with self.engine.begin() as conn:
            if conn.execute(update).rowcount == 1:
                if isinstance(job, StoredJob):
                    job.version += 1
                return
            exists = conn.execute(select(t.c.id).where(t.c.id == job.id)).first()
        if exists is None:
            raise JobLookupError(job.id)
        raise StaleJobError(job.id)

    def remove_all_except(self, prefix: str) -> None:
        """Remove every job but those whose id starts with `prefix` (the service's own)."""
        with self.engine.begin() as conn:
            conn.execute(self.jobs_t.delete().where(~self.jobs_t.c.id.startswith(prefix, autoescape=True)))

    def advance(self, moves: Sequence[tuple[StoredJob, datetime | None]], fence: int) -> None:
        """After a pass: set each job's next run time, or delete it when it has none.

        Only the `next_run_time` column changes, and only where the version is the one
        the leader read, so a concurrent pause or edit wins over the leader's copy. Jobs
        going to the same next time (a burst, interval jobs with one start) share one
        statement; the rest are sent as one executemany. One transaction in all, refused
        (FencedOut) if a newer leader recorded its fence.
        """
        t = self.jobs_t
        groups: dict[float | None, list[tuple[str, int]]] = defaultdict(list)
        for job, nxt in moves:
            groups[datetime_to_utc_timestamp(nxt)].append((job.id, job.version))
        singles = []
        with self.engine.begin() as conn:
            for next_ts, pairs in groups.items():
                if len(pairs) == 1 and next_ts is not None:
                    singles.append({"b_id": pairs[0][0], "b_version": pairs[0][1], "b_next": next_ts})
                    continue
                for start in range(0, len(pairs), GROUP_CHUNK):
                    chunk = pairs[start : start + GROUP_CHUNK]
                    # The id IN list lets MySQL use the primary key; the pairs check versions.
                    match = and_(t.c.id.in_([i for i, _ in chunk]), tuple_(t.c.id, t.c.version).in_(chunk))
                    if next_ts is None:
                        conn.execute(t.delete().where(match))
                    else:
                        conn.execute(t.update().where(match).values(next_run_time=next_ts))
            if singles:
                same_version = and_(t.c.id == bindparam("b_id"), t.c.version == bindparam("b_version"))
                conn.execute(
                    t.update().where(same_version).values(next_run_time=bindparam("b_next")), singles
                )
            fencing.check(conn, fence)
        for job, nxt in moves:
            job.next_run_time = nxt

    def _select(
        self,
        *conditions: Any,
        limit: int | None = None,
        offset: int = 0,
        order: Iterable[Any] | None = None,
    ) -> list[StoredJob]:
        """The readable jobs among these rows."""
        entries = self._entries(*conditions, limit=limit, offset=offset, order=order)
        return [job for job in entries if isinstance(job, StoredJob)]

    def _entries(
        self,
        *conditions: Any,
        limit: int | None = None,
        offset: int = 0,
        order: Iterable[Any] | None = None,
    ) -> list[Entry]:
        rows = self._rows(*conditions, limit=limit, offset=offset, order=order)
        return [self._restore(row) for row in rows]

    def _rows(
        self,
        *conditions: Any,
        limit: int | None = None,
        offset: int = 0,
        order: Iterable[Any] | None = None,
    ) -> Sequence[Row[Any]]:
        t = self.jobs_t
        query = select(t.c.id, t.c.next_run_time, t.c.job_state, t.c.version)
        if conditions:
            query = query.where(*conditions)
        query = query.order_by(*(order or (t.c.next_run_time,)))
        if limit is not None:
            query = query.limit(limit).offset(offset)
        with self.engine.connect() as conn:
            return conn.execute(query).all()

    def _restore(self, row: Row[Any]) -> Entry:
        entry = self._restore_row(row.id, row.next_run_time, row.job_state, row.version)
        if isinstance(entry, BrokenJob):
            if entry.id not in self._unreadable:
                logger.error("Cannot read job %r from the store (left in place): %s", entry.id, entry.error)
                if len(self._unreadable) < MAX_UNREADABLE:
                    self._unreadable.add(entry.id)
        else:
            self._unreadable.discard(entry.id)
        return entry

    def _restore_row(
        self, job_id: str, next_ts: float | None, job_state: bytes, version: int, from_column: bool = True
    ) -> Entry:
        """Rebuild a job without importing its function; a row that cannot be read is
        reported as a BrokenJob, never deleted. Without `from_column` the next run time is
        the pickled one (a definition kept with a claim)."""
        try:
            state = pickle.loads(job_state)
            job = StoredJob.__new__(StoredJob)
            job.id = state["id"]
            job.func_ref = state["func"]
            job.func = None
            job.trigger = state["trigger"]
            job.executor = state["executor"]
            job.args = state["args"]
            job.kwargs = state["kwargs"]
            job.name = state["name"]
            job.misfire_grace_time = state["misfire_grace_time"]
            job.coalesce = state["coalesce"]
            job.max_instances = state["max_instances"]
            restore(job, state)
            stored_next = state["next_run_time"]
            # The column is the truth (the leader only updates the column); keep the time
            # zone the job was pickled with, as the upstream store would.
            next_run_time = utc_timestamp_to_datetime(next_ts) if from_column else stored_next
            if next_run_time is not None:
                zone = stored_next.tzinfo if stored_next is not None else self._scheduler.timezone
                next_run_time = next_run_time.astimezone(zone)
        except Exception as exc:
            return BrokenJob(job_id, _from_timestamp(next_ts), f"{exc.__class__.__name__}: {exc}")
        job.next_run_time = next_run_time
        job.version = version
        job.stored_state = job_state
        job._scheduler = self._scheduler
        job._jobstore_alias = self._alias
        return job


def _func_ref(job: Job) -> str | None:
    ref = getattr(job, "func_ref", None)
    return ref[:255] if isinstance(ref, str) else None


def _from_timestamp(timestamp: float | None) -> datetime | None:
    """A next run time column as a datetime; None if empty or beyond what datetime holds."""
    try:
        return utc_timestamp_to_datetime(timestamp)
    except (OverflowError, ValueError, OSError):
        return None


def definition(job: Job) -> bytes:
    """A job's pickled state as read from the store (or pickled now): what travels with a run
    handed to another process, which rebuilds it with `restore_saved`."""
    stored = getattr(job, "stored_state", None)
    return stored if stored is not None else pickle.dumps(job.__getstate__(), pickle.HIGHEST_PROTOCOL)
