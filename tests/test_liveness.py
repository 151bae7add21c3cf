"""Every run ends, and a hung job shows: heartbeats, the leader's sweep, overruns and skips.

The kill -9 and graceful-timeout cases with real gunicorn processes are in test_faults.py;
here a dead worker is a run row of a process that does not exist, and the lease is short
(0.5 s: a beat every 0.25 s, dead after 2.5 s) so the bounds are quick to see.
"""

from __future__ import annotations

import re
import secrets
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta

import pytest
from flask import Flask
from sqlalchemy import insert

from jobservice.models import utcnow
from tests import jobfuncs
from tests.conftest import finished_runs, leading_app, runs, session, wait_for
from tests.orm import JobRun

LEASE_S = 0.5
DEAD_AFTER_S = 5 * LEASE_S


@pytest.fixture
def released() -> Iterator[Callable[[], str]]:
    """Tags for `jobfuncs.hang`; every one is released when the test ends."""
    tags: list[str] = []

    def new() -> str:
        tags.append(secrets.token_hex(4))
        return tags[-1]

    yield new
    for tag in tags:
        jobfuncs.RELEASE.setdefault(tag, threading.Event()).set()


def dead_worker_run(app: Flask, job_id: str, silent_s: float) -> int:
    """A run row as a process that died would leave it: started, silent for `silent_s`."""
    then = utcnow() - timedelta(seconds=silent_s)
    with app.app_context(), session(app) as db_session:
        result = db_session.execute(
            insert(JobRun.__table__).values(
                job_id=job_id,
                trigger="scheduled",
                scheduled_at=then,
                status="running",
                claim="deadbeefdeadbeef",
                fence=1,
                worker="elsewhere:999999",
                started_at=then,
                prevented=0,
                created_at=then,
                updated_at=then,
            )
        )
        db_session.commit()
        return int(result.inserted_primary_key[0])


def test_a_run_whose_worker_stopped_beating_is_closed_failed(make_app: Callable[..., Flask]) -> None:
    app = leading_app(make_app, JOBSERVICE_LEADER_LEASE_SECONDS=LEASE_S)
    run_id = dead_worker_run(app, "orphan", silent_s=DEAD_AFTER_S + 1)
    [row] = finished_runs(app, "orphan")
    assert row.id == run_id and row.status == "failed" and row.finished_at is not None
    assert "worker elsewhere:999999 stopped" in row.error


def test_a_run_that_still_beats_is_left_alone(make_app: Callable[..., Flask]) -> None:
    """A run longer than the bound is kept alive by its process's heartbeat, and succeeds."""
    app = leading_app(make_app, JOBSERVICE_LEADER_LEASE_SECONDS=LEASE_S)
    body = {
        "id": "long",
        "func": "tests.jobfuncs:slow",
        "args": [DEAD_AFTER_S + 1.5],
        "trigger": "interval",
        "hours": 1,
    }
    app.test_client().post("/scheduler/jobs", json=body)
    app.test_client().post("/scheduler/jobs/long/run")
    [row] = finished_runs(app, "long")
    assert row.status == "succeeded", row.error
    assert (row.finished_at - row.started_at).total_seconds() > DEAD_AFTER_S


def test_a_run_silent_for_less_than_the_bound_stays_open(make_app: Callable[..., Flask]) -> None:
    app = leading_app(make_app, JOBSERVICE_LEADER_LEASE_SECONDS=LEASE_S)
    dead_worker_run(app, "quiet", silent_s=DEAD_AFTER_S - 2)
    wait_for(lambda: app.test_client().get("/health").json["seconds_since_last_pass"] is not None)
    [row] = runs(app, "quiet")
    assert row.status == "running"  # not yet: it might only be slow to beat
    [row] = finished_runs(app, "quiet")
    assert row.status == "failed"


def test_a_hung_job_is_overrunning_and_its_skipped_fires_show(
    make_app: Callable[..., Flask], released: Callable[[], str]
) -> None:
    """A 1 s job that never returns (max_instances 1): its run turns `overrunning`, each
    later fire is recorded `skipped`, /health is degraded naming the job, /metrics counts."""
    app = leading_app(make_app)
    client = app.test_client()
    job_id = f"hung-{secrets.token_hex(3)}"  # metrics are per process: one id per test
    body = {
        "id": job_id,
        "func": "tests.jobfuncs:hang",
        "args": [released()],
        "trigger": "interval",
        "seconds": 1,
    }
    assert client.post("/scheduler/jobs", json=body).status_code == 200

    def both() -> bool:
        statuses = {run.status for run in runs(app, job_id)}
        return {"overrunning", "skipped"} <= statuses

    wait_for(both, timeout_s=10)
    skipped = [run for run in runs(app, job_id) if run.status == "skipped"]
    assert "already running" in skipped[0].error and skipped[0].finished_at is not None
    health = client.get("/health").json
    assert health["status"] == "degraded"
    assert any(r.startswith(f"job {job_id} is overrunning") for r in health["reasons"]), health["reasons"]
    assert any(r.startswith(f"job {job_id} had") and "skipped" in r for r in health["reasons"]), health
    listed = client.get("/scheduler/runs?status=overrunning").json
    assert [run["job_id"] for run in listed] == [job_id]
    text = client.get("/metrics").get_data(as_text=True)
    assert re.search(rf'^jobservice_overruns_total\{{job_id="{job_id}"\}} 1\.0$', text, re.M)
    assert re.search(rf'^jobservice_runs_total\{{job_id="{job_id}",status="skipped"\}} [1-9]', text, re.M)
    assert re.search(r"^jobservice_runs_overrunning 1\.0$", text, re.M)


def test_an_overrun_that_ends_is_recorded_as_its_outcome(make_app: Callable[..., Flask]) -> None:
    """RUN_OVERRUN_SECONDS flags a run of any job; once it ends, its outcome replaces the flag."""
    app = leading_app(make_app, JOBSERVICE_RUN_OVERRUN_SECONDS=0.5)
    body = {"id": "once", "func": "tests.jobfuncs:slow", "args": [2], "trigger": "date"}
    app.test_client().post("/scheduler/jobs", json=body)
    wait_for(lambda: [r for r in runs(app, "once") if r.status == "overrunning"], timeout_s=5)
    [row] = finished_runs(app, "once")
    assert row.status == "succeeded" and row.error is None
