"""APScheduler's SQLAlchemy job store, made safe for several processes sharing one table.

Differences from the upstream store, each closing a hazard of APScheduler 3:

* a job is rebuilt without importing its function (the executor resolves it when it
  runs), so a process running an older release never deletes a job it cannot import;
* `next_run_time` comes from its column, and every write is checked against a
  `version` column, so the leader never writes back a stale copy over a pause or
  an edit made through another process;
* the leader advances many jobs in one transaction (`advance`).
"""

from __future__ import annotations

import logging
import pickle
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any

from apscheduler.job import Job
from apscheduler.jobstores.base import BaseJobStore, ConflictingIdError, JobLookupError
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.util import datetime_to_utc_timestamp, utc_timestamp_to_datetime
from sqlalchemy import and_, bindparam, func, or_, select, tuple_
from sqlalchemy.engine import Engine, Row
from sqlalchemy.exc import IntegrityError

from .models import jobs_table

logger = logging.getLogger(__name__)
#: Jobs per statement when many go to the same next run time.
GROUP_CHUNK = 500


class StaleJobError(Exception):
    """The job changed in the store after this process read it."""


class StoredJob(Job):
    """A job as read from the store, remembering the version it was read at."""

    __slots__ = ("version",)


class ClusterJobStore(SQLAlchemyJobStore):
    """Jobs in a SQL table shared by every process of the deployment."""

    def __init__(self, engine: Engine) -> None:
        BaseJobStore.__init__(self)
        self.engine = engine
        self.jobs_t = jobs_table
        self.pickle_protocol = pickle.HIGHEST_PROTOCOL

    def start(self, scheduler: Any, alias: str) -> None:
        # The schema belongs to the migrations; never CREATE TABLE from here.
        BaseJobStore.start(self, scheduler, alias)

    def shutdown(self) -> None:
        """The engine is Flask-SQLAlchemy's and outlives the scheduler."""

    def lookup_job(self, job_id: str) -> StoredJob | None:
        jobs = self._select(self.jobs_t.c.id == job_id)
        return jobs[0] if jobs else None

    def get_due_jobs(self, now: datetime) -> list[StoredJob]:
        return self._select(self.jobs_t.c.next_run_time <= datetime_to_utc_timestamp(now))

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
            jobs = [job for job in map(self._restore, rows) if job is not None]
            if jobs:
                yield jobs
            if len(rows) < size:
                return
            after = (rows[-1].next_run_time, rows[-1].id)

    def get_all_jobs(self) -> list[StoredJob]:
        jobs = self._select()
        self._fix_paused_jobs_sorting(jobs)
        return jobs

    def page(self, limit: int, offset: int) -> list[StoredJob]:
        """One page in the upstream order (next run time, paused jobs last) without
        reading the rest of the table."""
        t = self.jobs_t
        scheduled = self._select(
            t.c.next_run_time.is_not(None), limit=limit, offset=offset, order=(t.c.next_run_time, t.c.id)
        )
        if len(scheduled) == limit:
            return scheduled
        paused_offset = 0
        if not scheduled and offset:
            with self.engine.connect() as conn:
                count = select(func.count()).select_from(t).where(t.c.next_run_time.is_not(None))
                paused_offset = offset - conn.execute(count).scalar_one()
        paused = self._select(
            t.c.next_run_time.is_(None),
            limit=limit - len(scheduled),
            offset=max(paused_offset, 0),
            order=(t.c.id,),
        )
        return scheduled + paused

    def count(self) -> int:
        with self.engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(self.jobs_t)).scalar_one()

    def add_job(self, job: Job) -> None:
        insert = self.jobs_t.insert().values(
            id=job.id,
            next_run_time=datetime_to_utc_timestamp(job.next_run_time),
            job_state=pickle.dumps(job.__getstate__(), self.pickle_protocol),
            version=1,
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

    def advance(self, moves: Sequence[tuple[StoredJob, datetime | None]]) -> None:
        """After a pass: set each job's next run time, or delete it when it has none.

        Only the `next_run_time` column changes, and only where the version is the one
        the leader read, so a concurrent pause or edit wins over the leader's copy. Jobs
        going to the same next time (a burst, interval jobs with one start) share one
        statement; the rest are sent as one executemany. One transaction in all.
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
        for job, nxt in moves:
            job.next_run_time = nxt

    def _select(
        self,
        *conditions: Any,
        limit: int | None = None,
        offset: int = 0,
        order: Iterable[Any] | None = None,
    ) -> list[StoredJob]:
        rows = self._rows(*conditions, limit=limit, offset=offset, order=order)
        return [job for job in map(self._restore, rows) if job is not None]

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

    def _restore(self, row: Row[Any]) -> StoredJob | None:
        """Rebuild a job without importing its function; a bad row is skipped, never deleted."""
        try:
            state = pickle.loads(row.job_state)
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
        except Exception:
            logger.exception("Cannot read job %r from the store; leaving it in place", row.id)
            return None
        # The column is the truth (the leader only updates the column); keep the
        # time zone the job was pickled with, as the upstream store would.
        stored_next = state["next_run_time"]
        next_run_time = utc_timestamp_to_datetime(row.next_run_time)
        if next_run_time is not None:
            zone = stored_next.tzinfo if stored_next is not None else self._scheduler.timezone
            next_run_time = next_run_time.astimezone(zone)
        job.next_run_time = next_run_time
        job.version = row.version
        job._scheduler = self._scheduler
        job._jobstore_alias = self._alias
        return job
