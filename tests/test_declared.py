"""JOBS from config.py across restarts: never duplicated, never moved, pauses kept."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import func, select

from config import ConfigError
from jobservice import maintenance
from jobservice.models import jobs_table
from tests.conftest import close_app, engine

HOURLY = {"id": "hourly", "func": "tests.jobfuncs:noop", "trigger": "interval", "hours": 1}
NIGHTLY = {"id": "nightly", "func": "tests.jobfuncs:noop", "trigger": "cron", "hour": 2, "minute": 30}


def restart(make_app: Callable[..., Flask], previous: Flask | None, jobs: list[dict[str, Any]]) -> Flask:
    """Stop the previous process and start a new one with these JOBS (it reconciles them)."""
    if previous is not None:
        close_app(previous)
    return make_app(SCHEDULER_AUTOSTART=True, JOBS=jobs)


def stored(app: Flask) -> dict[str, dict[str, Any]]:
    """The jobs in the store, leaving out the service's own maintenance job."""
    jobs = {job["id"]: job for job in app.test_client().get("/scheduler/jobs").json}
    assert jobs.pop(maintenance.JOB_ID)["func"] == "jobservice.maintenance:purge_run_history"
    return jobs


def row_count(app: Flask) -> int:
    with engine(app).connect() as conn:
        return conn.execute(select(func.count()).select_from(jobs_table)).scalar_one() - 1


def test_declared_jobs_are_added_once(make_app: Callable[..., Flask]) -> None:
    app = restart(make_app, None, [HOURLY, NIGHTLY])
    jobs = stored(app)
    assert set(jobs) == {"hourly", "nightly"}
    assert jobs["nightly"]["hour"] == "2" and jobs["nightly"]["minute"] == "30"


def test_restart_with_same_definition_changes_nothing(make_app: Callable[..., Flask]) -> None:
    app = restart(make_app, None, [HOURLY, NIGHTLY])
    before = stored(app)
    app = restart(make_app, app, [HOURLY, NIGHTLY])
    app = restart(make_app, app, [HOURLY, NIGHTLY])
    assert stored(app) == before  # next_run_time included: it did not move
    assert row_count(app) == 2


def test_changed_definition_is_applied(make_app: Callable[..., Flask]) -> None:
    app = restart(make_app, None, [HOURLY])
    before = stored(app)["hourly"]
    app = restart(make_app, app, [{**HOURLY, "hours": 3, "name": "every three hours"}])
    after = stored(app)["hourly"]
    assert after["hours"] == 3 and after["name"] == "every three hours"
    assert after["next_run_time"] != before["next_run_time"]


def test_job_paused_through_the_api_stays_paused(make_app: Callable[..., Flask]) -> None:
    app = restart(make_app, None, [HOURLY])
    assert app.test_client().post("/scheduler/jobs/hourly/pause").status_code == 200
    app = restart(make_app, app, [HOURLY])
    assert stored(app)["hourly"]["next_run_time"] is None
    app = restart(make_app, app, [{**HOURLY, "hours": 2}])  # changed while paused
    job = stored(app)["hourly"]
    assert job["hours"] == 2 and job["next_run_time"] is None


def test_removed_declared_job_is_removed_and_api_jobs_are_left_alone(make_app: Callable[..., Flask]) -> None:
    app = restart(make_app, None, [HOURLY, NIGHTLY])
    api_job = {"id": "from-api", "func": "tests.jobfuncs:noop", "trigger": "interval", "minutes": 5}
    assert app.test_client().post("/scheduler/jobs", json=api_job).status_code == 200
    app = restart(make_app, app, [HOURLY])
    assert set(stored(app)) == {"hourly", "from-api"}
    app = restart(make_app, app, [])
    assert set(stored(app)) == {"from-api"}


def test_processes_starting_together_do_not_duplicate(make_app: Callable[..., Flask]) -> None:
    apps = [make_app(SCHEDULER_AUTOSTART=True, JOBS=[HOURLY, NIGHTLY]) for _ in range(3)]
    assert row_count(apps[-1]) == 2


@pytest.mark.parametrize(
    ("jobs", "fragment"),
    [
        ([{**HOURLY, "func": "os:system"}], "JOBS[0] ('hourly'): field 'func'"),
        ([HOURLY, {**NIGHTLY, "minute": 61}], "JOBS[1] ('nightly'): field 'minute'"),
        ([HOURLY, HOURLY], "declared twice"),
        (["not a dict"], "JOBS[0]"),
    ],
)
def test_invalid_declared_job_stops_start_up_naming_it(
    make_app: Callable[..., Flask], jobs: list[Any], fragment: str
) -> None:
    with pytest.raises(ConfigError) as excinfo:
        make_app(JOBS=jobs)
    assert fragment in str(excinfo.value)
