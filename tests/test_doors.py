"""Every door refuses what the API refuses, and a row planted past every door never runs.

`os:system` is tried through the REST API, the CLI, the Python interface
(`app.apscheduler`, `JobService.operations`), JOBS in the config and an import: each
refuses it, saying the function is outside the job packages, and stores nothing. A row
written straight into the table (older code, or a Flask-APScheduler table adopted with
its jobs) is refused when its run starts: recorded failed, the function never called.
"""

from __future__ import annotations

import json
import pickle
import secrets
from collections.abc import Callable
from pathlib import Path

import pytest
from apscheduler.job import Job
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger
from flask import Flask
from sqlalchemy import insert, select

from config import ConfigError
from jobservice import JobService
from jobservice.models import jobs_table
from tests.conftest import engine, finished_runs, leading_app

PWN = {"id": "pwn", "func": "os:system", "args": ["id"], "trigger": "interval", "hours": 1}
OUTSIDE = "outside the job packages"


def stored_ids(app: Flask) -> set[str]:
    with engine(app).connect() as conn:
        return {row.id for row in conn.execute(select(jobs_table.c.id))}


def test_rest_api(app: Flask) -> None:
    response = app.test_client().post("/scheduler/jobs", json=PWN)
    assert response.status_code == 400 and OUTSIDE in response.json["error_message"]
    response = app.test_client().patch("/scheduler/jobs/pwn", json={"func": "os:system"})
    assert response.status_code == 404  # nothing was stored to change
    assert "pwn" not in stored_ids(app)


def test_cli(app: Flask) -> None:
    result = app.test_cli_runner().invoke(args=["jobservice", "jobs", "add", json.dumps(PWN)])
    assert result.exit_code == 2 and OUTSIDE in result.output
    assert "pwn" not in stored_ids(app)


def test_python_interface(app: Flask) -> None:
    scheduler = app.apscheduler  # type: ignore[attr-defined]
    scheduler.start()
    with pytest.raises(ValueError, match=OUTSIDE):
        scheduler.add_job(**PWN)
    with pytest.raises(ValueError, match=OUTSIDE):
        JobService().runtime(app).operations.add(PWN)
    scheduler.add_job(id="fine", func="tests.jobfuncs:noop", trigger="interval", hours=1)
    with pytest.raises(ValueError, match=OUTSIDE):
        scheduler.modify_job("fine", func="os:system")
    assert "pwn" not in stored_ids(app) and "fine" in stored_ids(app)


def test_jobs_in_the_config(make_app: Callable[..., Flask]) -> None:
    with pytest.raises(ConfigError, match=OUTSIDE):
        make_app(JOBS=[PWN])


def test_import(app: Flask) -> None:
    response = app.test_client().post("/scheduler/jobs/import", json={"jobs": [PWN]})
    assert response.status_code == 400
    assert OUTSIDE in response.json["errors"][0]["error_message"]
    assert "pwn" not in stored_ids(app)


def test_a_planted_row_is_refused_when_its_run_starts(make_app: Callable[..., Flask], tmp_path: Path) -> None:
    """As if a plain Flask-APScheduler had stored it: the row is valid APScheduler, but its
    function is outside the job packages. Its run is recorded failed, saying why, and the
    command it names is never executed."""
    app = leading_app(make_app)
    witness = tmp_path / f"pwned-{secrets.token_hex(4)}"
    trigger = IntervalTrigger(hours=1, timezone="UTC")
    job = Job(BackgroundScheduler(timezone="UTC"), id="planted", func="os:system", args=[f"touch {witness}"],
              trigger=trigger, executor="default", kwargs={}, name="planted", misfire_grace_time=300,
              coalesce=True, max_instances=1, next_run_time=None)  # fmt: skip
    with engine(app).begin() as conn:
        conn.execute(insert(jobs_table).values(id="planted", next_run_time=None, version=1,
                                               job_state=pickle.dumps(job.__getstate__(), 5)))  # fmt: skip
    assert app.test_client().post("/scheduler/jobs/planted/run").status_code == 200
    [run] = finished_runs(app, "planted")
    assert run.status == "failed" and OUTSIDE in run.error and "not run" in run.error
    assert not witness.exists()
