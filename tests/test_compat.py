"""Code written for Flask-APScheduler's Python interface keeps working on the cluster."""

from __future__ import annotations

from flask import Flask
from sqlalchemy import select

from tests.conftest import session
from tests.orm import JobRun


def test_app_apscheduler_reaches_the_shared_store(app: Flask) -> None:
    scheduler = app.apscheduler  # type: ignore[attr-defined]
    scheduler.add_job(id="py", func="tests.jobfuncs:noop", trigger="interval", minutes=5)
    assert [job.id for job in scheduler.get_jobs()] == ["py"]  # declared: stored at start()
    assert app.test_client().get("/scheduler/jobs/py").status_code == 404
    scheduler.start()
    assert app.test_client().get("/scheduler/jobs/py").json["minutes"] == 5  # same store as the API
    scheduler.pause_job("py")
    assert scheduler.get_job("py").next_run_time is None
    scheduler.resume_job("py")
    scheduler.modify_job("py", name="renamed")
    assert app.test_client().get("/scheduler/jobs/py").json["name"] == "renamed"
    scheduler.remove_job("py")
    assert scheduler.get_job("py") is None
    scheduler.add_job(id="later", func="tests.jobfuncs:noop", trigger="interval", minutes=5)
    assert app.test_client().get("/scheduler/jobs/later").status_code == 200  # after start: at once


def test_run_job_is_queued_for_the_leader_and_pause_is_cluster_wide(app: Flask) -> None:
    scheduler = app.apscheduler  # type: ignore[attr-defined]
    scheduler.start(paused=True)
    scheduler.add_job(id="py", func="tests.jobfuncs:noop", trigger="interval", minutes=5)
    scheduler.run_job("py")  # upstream calls the function in the request; here the leader runs it
    with session(app) as db_session:
        run = db_session.execute(select(JobRun).where(JobRun.job_id == "py")).scalar_one()
    assert (run.job_id, run.trigger) == ("py", "manual")  # a run-now runs while paused, as upstream
    assert app.test_client().get("/scheduler").json["state"] == "paused"
    scheduler.resume()
    assert app.test_client().get("/scheduler").json["state"] == "running"
