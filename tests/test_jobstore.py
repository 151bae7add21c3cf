"""The shared store: versioned writes, no deletion of unimportable jobs, batched advance."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from apscheduler.triggers.interval import IntervalTrigger
from flask import Flask
from sqlalchemy import insert, select

from jobservice.jobstore import StaleJobError
from jobservice.models import jobs_table
from tests.conftest import engine, finished_runs, leading_app


def put_raw_job(app: Flask, job_id: str, func_ref: str, next_run: datetime | None) -> None:
    """Write a job row as another release would, naming a function this one does not have."""
    state = {
        "version": 1,
        "id": job_id,
        "func": func_ref,
        "trigger": IntervalTrigger(hours=1, timezone=UTC),
        "executor": "default",
        "args": (),
        "kwargs": {},
        "name": job_id,
        "misfire_grace_time": 300,
        "coalesce": True,
        "max_instances": 1,
        "next_run_time": next_run,
    }
    with engine(app).begin() as conn:
        conn.execute(
            insert(jobs_table).values(
                id=job_id,
                next_run_time=next_run.timestamp() if next_run else None,
                job_state=pickle.dumps(state),
                version=1,
            )
        )


def stored_ids(app: Flask) -> list[str]:
    with engine(app).connect() as conn:
        return list(conn.execute(select(jobs_table.c.id).order_by(jobs_table.c.id)).scalars())


def test_unimportable_job_is_listed_run_as_failed_and_never_deleted(make_app: Callable[..., Flask]) -> None:
    app = leading_app(make_app)
    due = datetime.now(UTC) - timedelta(seconds=1)
    put_raw_job(app, "retired", "jobs.retired_module:gone", due)
    app.extensions["jobservice"].notify()
    listed = app.test_client().get("/scheduler/jobs").json
    assert "jobs.retired_module:gone" in [job["func"] for job in listed]
    [run] = finished_runs(app, "retired")
    assert run.status == "failed" and "could not import" in run.error
    assert "retired" in stored_ids(app)  # still there for the release that has it
    job = app.test_client().get("/scheduler/jobs/retired").json
    assert job["next_run_time"] > due.isoformat()  # and advanced to its next fire time


def test_write_from_a_stale_copy_is_refused(app: Flask) -> None:
    app.test_client().post(
        "/scheduler/jobs", json={"id": "j", "func": "tests.jobfuncs:noop", "trigger": "interval", "hours": 1}
    )
    store = app.extensions["jobservice"].store
    first, second = store.lookup_job("j"), store.lookup_job("j")
    first._modify(name="first")
    store.update_job(first)
    second._modify(name="second")
    with pytest.raises(StaleJobError):
        store.update_job(second)
    assert store.lookup_job("j").name == "first"


def test_modify_job_reapplies_the_change_to_a_fresh_copy(app: Flask) -> None:
    client = app.test_client()
    client.post(
        "/scheduler/jobs", json={"id": "j", "func": "tests.jobfuncs:noop", "trigger": "interval", "hours": 1}
    )
    service = app.extensions["jobservice"]
    stale = service.store.lookup_job("j")
    client.post("/scheduler/jobs/j/pause")  # another process writes meanwhile
    stale._modify(name="edited")
    with pytest.raises(StaleJobError):
        service.store.update_job(stale)
    service.scheduler.modify_job("j", name="edited")  # re-reads, keeps the pause
    job = client.get("/scheduler/jobs/j").json
    assert job["name"] == "edited" and job["next_run_time"] is None


def test_advance_never_overwrites_a_concurrent_pause(app: Flask) -> None:
    client = app.test_client()
    client.post(
        "/scheduler/jobs", json={"id": "j", "func": "tests.jobfuncs:noop", "trigger": "interval", "hours": 1}
    )
    store = app.extensions["jobservice"].store
    leader_copy = store.lookup_job("j")
    client.post("/scheduler/jobs/j/pause")
    store.advance([(leader_copy, datetime.now(UTC) + timedelta(hours=2))], fence=1)
    assert client.get("/scheduler/jobs/j").json["next_run_time"] is None


def test_advance_moves_and_removes_in_one_batch(app: Flask) -> None:
    client = app.test_client()
    for job_id in ("a", "b"):
        client.post(
            "/scheduler/jobs",
            json={"id": job_id, "func": "tests.jobfuncs:noop", "trigger": "interval", "hours": 1},
        )
    store = app.extensions["jobservice"].store
    a, b = store.lookup_job("a"), store.lookup_job("b")
    later = datetime.now(UTC) + timedelta(days=1)
    store.advance([(a, later), (b, None)], fence=1)
    assert stored_ids(app) == ["a"]
    assert store.lookup_job("a").next_run_time == later


def test_due_jobs_come_in_chunks_each_once_past_unreadable_rows(app: Flask) -> None:
    """A pass reads due jobs a chunk at a time; a row that cannot be read is skipped (and
    kept), not re-read forever, and jobs due at the same time are ordered by id."""
    now = datetime.now(UTC).replace(microsecond=0)
    for i in range(7):
        put_raw_job(app, f"due-{i}", "tests.jobfuncs:noop", now - timedelta(seconds=i % 2))
    put_raw_job(app, "later", "tests.jobfuncs:noop", now + timedelta(hours=1))
    with engine(app).begin() as conn:
        bad = {"id": "due-bad", "next_run_time": (now - timedelta(seconds=1)).timestamp()}
        conn.execute(insert(jobs_table).values(**bad, job_state=b"not a pickle", version=1))
    with app.app_context():
        store = app.extensions["jobservice"].store
        chunks = [[job.id for job in chunk] for chunk in store.due_chunks(now, 3)]

    # Rows by (next run, id): due-1 due-3 due-5 | due-bad due-0 due-2 | due-4 due-6
    assert chunks == [["due-1", "due-3", "due-5"], ["due-0", "due-2"], ["due-4", "due-6"]]
