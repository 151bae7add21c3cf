"""Run claims: one statement for many fire times, and a fire time is won exactly once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from flask import Flask
from sqlalchemy import select

from jobservice.ledger import RunKey, RunLedger
from tests.conftest import engine, session
from tests.orm import JobRun


def test_claiming_many_keys_at_once_wins_each_exactly_once(app: Flask) -> None:
    """Several keys go through executemany (one key alone would not): the statement must
    bind on every backend, and a second claim of the same keys wins none and counts them."""
    due = datetime(2030, 1, 1, tzinfo=UTC)
    keys = [RunKey(f"job-{i}", "scheduled", due + timedelta(seconds=i)) for i in range(5)]
    with app.app_context(), session(app) as db_session:
        ledger = RunLedger(engine(app))
        first = ledger.claim(keys, fence=7)
        second = ledger.claim([*keys[:3], RunKey("job-new", "scheduled", due)], fence=8)
        rows = db_session.execute(select(JobRun).order_by(JobRun.job_id)).scalars().all()

    assert {c.key for c in first} == set(keys)
    assert {c.fence for c in first} == {7}
    assert [c.key.job_id for c in second] == ["job-new"]
    assert {r.job_id: r.prevented for r in rows} == {
        "job-0": 1, "job-1": 1, "job-2": 1, "job-3": 0, "job-4": 0, "job-new": 0,
    }  # fmt: skip
