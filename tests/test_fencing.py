"""Fencing at the database: once a newer fence is recorded, an older leader's writes are refused.

Each write a leader makes (claim, start, adoption, miss, advance, the sweep of dead runs)
is tried under fence 4 after fence 5 was recorded, on SQLite and MariaDB: every one raises
FencedOut and leaves the tables as they were. The multi-process form (a leader cut off
Redis while its successor takes over) is in test_faults.py.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import func, select

from jobservice import fencing
from jobservice.fencing import FencedOut
from jobservice.ledger import RunKey
from jobservice.models import jobs_table
from tests.conftest import engine, finished_runs, leading_app, session, wait_for
from tests.orm import ClusterState, JobRun

NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


def tables(app: Flask) -> tuple[Any, ...]:
    with engine(app).connect() as conn:
        run_rows = conn.execute(select(JobRun.__table__).order_by(JobRun.id)).all()
        job_rows = conn.execute(select(jobs_table).order_by(jobs_table.c.id)).all()
    return tuple(run_rows), tuple(job_rows)


def test_recording_a_fence_refuses_a_lower_one(make_app: Callable[..., Flask]) -> None:
    app = make_app()
    with app.app_context(), session(app) as db_session:
        fencing.record(engine(app), 5)
        fencing.record(engine(app), 5)  # again: the same leader
        with pytest.raises(FencedOut) as refused:
            fencing.record(engine(app), 4)
        assert (refused.value.fence, refused.value.recorded) == (4, 5)
        fence, fence_at = db_session.execute(select(ClusterState.fence, ClusterState.fence_at)).one()
    assert fence == 5 and fence_at is not None


def test_every_write_of_a_superseded_leader_is_refused(make_app: Callable[..., Flask]) -> None:
    app = make_app()
    client = app.test_client()
    client.post(
        "/scheduler/jobs", json={"id": "j", "func": "tests.jobfuncs:noop", "trigger": "interval", "hours": 1}
    )
    service = app.extensions["jobservice"]
    with app.app_context():
        fencing.record(engine(app), 4)
        [claim] = service.ledger.claim([RunKey("j", "scheduled", NOW)], fence=4)
        fencing.record(engine(app), 5)  # a newer leader
    job = service.store.lookup_job("j")
    writes: dict[str, Callable[[], Any]] = {
        "claim": lambda: service.ledger.claim([RunKey("j", "scheduled", NOW + timedelta(hours=1))], fence=4),
        "start": lambda: service.ledger.start_many([claim], {claim.key.job_id: 1}),
        "adopt": lambda: service.ledger.adopt([(claim.key, claim.token)], fence=4),
        "miss": lambda: service.ledger.miss(claim, "too late"),
        "advance": lambda: service.store.advance([(job, NOW + timedelta(hours=2))], fence=4),
        "sweep": lambda: service.scheduler._sweeper.sweep(4, healthy_s=60),
    }
    long_ago = datetime.now(UTC) - timedelta(days=1)
    with engine(app).begin() as conn:  # something for the sweep to close
        conn.execute(
            JobRun.__table__.update()
            .where(JobRun.id == claim.run_id)
            .values(started_at=long_ago, updated_at=long_ago)
        )
    before = tables(app)
    for name, write in writes.items():
        with pytest.raises(FencedOut):
            write()
        assert tables(app) == before, f"{name} changed the tables"


def test_a_fenced_out_leader_steps_down_and_leads_again_past_the_recorded_fence(
    make_app: Callable[..., Flask],
) -> None:
    app = leading_app(make_app)
    service = app.extensions["jobservice"]
    first = service.fence()
    with app.app_context():
        fencing.record(engine(app), first + 100)  # a leader elsewhere took fence first + 100
    # Its next write (adopting this run-now) is refused: it steps down, then campaigns again.
    service.operations.run_now("jobservice-maintenance")
    fence = wait_for(lambda: (f := service.fence()) is not None and f > first + 100 and f, timeout_s=10)
    assert fence == first + 101

    def recorded() -> int:
        with app.app_context(), session(app) as db_session:
            return db_session.execute(select(func.max(ClusterState.fence))).scalar_one()

    wait_for(lambda: recorded() == fence)  # by its first pass, before it writes anything
    [run] = finished_runs(app, "jobservice-maintenance")  # the refused run was not lost
    assert run.status == "succeeded" and run.fence == fence
