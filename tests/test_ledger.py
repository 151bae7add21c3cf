"""Run claims: one statement for many fire times, and a fire time is won exactly once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import event, select
from sqlalchemy.exc import OperationalError

from jobservice import ledger as ledger_module
from jobservice.ledger import UNSURE, RunKey, RunLedger
from tests.conftest import engine, session
from tests.lostcommit import LostCommitAnswers
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


# A start whose COMMIT goes unanswered ---------------------------------------------------


def claimed_runs(app: Flask, count: int) -> tuple[RunLedger, list[Any]]:
    due = datetime(2030, 1, 1, tzinfo=UTC)
    ledger = RunLedger(engine(app))
    return ledger, ledger.claim([RunKey(f"job-{i}", "scheduled", due) for i in range(count)], fence=3)


def test_a_start_whose_commit_landed_unanswered_is_found_started_and_kept_from_the_sweep(app: Flask) -> None:
    ledger, claims = claimed_runs(app, 3)
    lost = LostCommitAnswers(engine(app), landed=True)
    try:
        result = ledger.start_many(claims, {"job-0": 1}, lock=True)
    finally:
        lost.close()
    with session(app) as db_session:
        rows = db_session.execute(select(JobRun).order_by(JobRun.id)).scalars().all()

    assert lost.lost == 1
    assert {claim.key for claim in claims} == set(result.started)
    assert [result.answer(claim) for claim in claims] == [rows[0].started_at] * 3
    # Started once, and touched when found: the sweep goes by updated_at.
    assert all(row.started_at is not None and row.updated_at > row.started_at for row in rows)
    assert ledger.start_many(claims, {}).started == {}  # it cannot start twice


def test_a_start_whose_commit_was_lost_leaves_its_claims_for_adoption(app: Flask) -> None:
    ledger, claims = claimed_runs(app, 3)
    lost = LostCommitAnswers(engine(app), landed=False)
    try:
        result = ledger.start_many(claims, {})
    finally:
        lost.close()
    with session(app) as db_session:
        rows = db_session.execute(select(JobRun).order_by(JobRun.id)).scalars().all()

    assert lost.lost == 1
    assert result.started == {} and [result.answer(claim) for claim in claims] == [UNSURE] * 3
    assert all(row.started_at is None and row.status == "running" for row in rows)
    assert {row.claim for row in rows} == {claims[0].token}  # still claimed: the leader adopts them
    assert set(ledger.start_many(claims, {}).started) == {claim.key for claim in claims}


def test_a_start_in_doubt_is_asked_about_until_the_database_answers(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first questions meet the same outage: they are asked again."""
    ledger, claims = claimed_runs(app, 2)
    monkeypatch.setattr(ledger_module, "SETTLE_EVERY_S", 0.01)
    asked = []

    def outage(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.startswith("SELECT") and "jobservice_runs.worker = " in statement:
            asked.append(statement)
            if len(asked) <= 3:
                raise OperationalError(statement, {}, Exception("Lost connection to server"))

    lost = LostCommitAnswers(engine(app), landed=True)
    event.listen(engine(app), "before_cursor_execute", outage)
    try:
        result = ledger.start_many(claims, {})
    finally:
        event.remove(engine(app), "before_cursor_execute", outage)
        lost.close()

    assert len(asked) == 4
    assert set(result.started) == {claim.key for claim in claims}
