"""Runs go through the executor: app context pushed and popped, claimed, and recorded."""

from __future__ import annotations

import importlib
import sys
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from apscheduler.events import EVENT_JOB_ERROR, JobExecutionEvent
from flask import Flask, g, has_app_context

from jobservice.identity import worker_id
from jobservice.runner import resolve
from tests.conftest import engine, finished_runs, fires, leading_app, runs, soon, wait_for
from tests.lostcommit import LostCommitAnswers


def test_job_reads_config_and_writes_the_database_and_succeeds(make_app: Callable[..., Flask]) -> None:
    app = leading_app(make_app, REPORT_TITLE="weekly numbers")
    client = app.test_client()
    response = client.post(
        "/scheduler/jobs",
        json={
            "id": "cfg",
            "func": "tests.jobfuncs:record_config",
            "args": ["REPORT_TITLE"],
            "run_date": soon(),
        },
    )
    assert response.status_code == 200
    [run] = finished_runs(app, "cfg")
    [fire] = fires(app)
    assert fire.note == "weekly numbers"  # read through current_app.config, written to its database
    assert run.status == "succeeded" and run.error is None
    assert run.trigger == "scheduled" and run.fence is not None and run.worker == worker_id()
    assert run.scheduled_at <= run.started_at <= run.finished_at
    assert fire.scheduled_at == run.scheduled_at
    assert client.get("/scheduler/jobs/cfg").status_code == 404  # a date job is gone after its run


def test_failing_job_records_failed_with_its_traceback(make_app: Callable[..., Flask]) -> None:
    app = leading_app(make_app)
    body = {
        "id": "bad",
        "func": "tests.jobfuncs:fail",
        "kwargs": {"message": "disk full"},
        "run_date": soon(),
    }
    app.test_client().post("/scheduler/jobs", json=body)
    [run] = finished_runs(app, "bad")
    assert run.status == "failed"
    assert "Traceback" in run.error and "RuntimeError: disk full" in run.error
    assert run.finished_at >= run.started_at


def test_app_context_is_pushed_for_the_run_and_popped_after(make_app: Callable[..., Flask]) -> None:
    app = leading_app(make_app)
    torn_down: list[str] = []

    @app.teardown_appcontext
    def note_teardown(exc: BaseException | None) -> None:
        # Runs when an app context is popped; the run's own context carries its info in g.
        run = g.get("jobservice_run")
        if run is not None:
            torn_down.append(run.job_id)

    app.test_client().post(
        "/scheduler/jobs", json={"id": "ctx", "func": "tests.jobfuncs:record", "run_date": soon()}
    )
    [run] = finished_runs(app, "ctx")
    assert run.status == "succeeded"  # record() used g and current_app: the context was there
    assert wait_for(lambda: torn_down) == ["ctx"]  # and it was popped after the run
    assert not has_app_context()


def test_run_now_goes_through_the_executor_without_blocking(make_app: Callable[..., Flask]) -> None:
    app = leading_app(make_app)
    client = app.test_client()
    body = {"id": "slow", "func": "tests.jobfuncs:slow", "args": [3], "trigger": "interval", "hours": 1}
    client.post("/scheduler/jobs", json=body)
    response = client.post("/scheduler/jobs/slow/run")
    assert response.status_code == 200 and response.json["id"] == "slow"
    # The response came back before the job finished: nothing has finished yet.
    assert all(r.finished_at is None for r in runs(app, "slow"))
    wait_for(lambda: [f for f in fires(app) if f.note == "start"])
    [run] = finished_runs(app, "slow")
    assert run.trigger == "manual" and run.status == "succeeded"
    start, end = fires(app)
    assert start.trigger == "manual" and end.note == "end"
    assert response.json["next_run_time"]  # the schedule itself is untouched


def test_missed_run_is_recorded_and_not_run(make_app: Callable[..., Flask]) -> None:
    app = leading_app(make_app)
    past = (datetime.now(UTC) - timedelta(minutes=10)).isoformat()
    body = {"id": "late", "func": "tests.jobfuncs:record", "run_date": past, "misfire_grace_time": 5}
    app.test_client().post("/scheduler/jobs", json=body)
    [run] = finished_runs(app, "late")
    assert run.status == "missed" and run.started_at is None
    assert "missed" in run.error
    assert fires(app) == []


def test_a_date_in_the_past_within_the_grace_time_runs_at_once(make_app: Callable[..., Flask]) -> None:
    """As upstream: a past run_date is accepted, and runs if it is within misfire_grace_time."""
    app = leading_app(make_app)
    past = (datetime.now(UTC) - timedelta(seconds=30)).isoformat()
    body = {"id": "recent", "func": "tests.jobfuncs:record", "run_date": past}
    assert app.test_client().post("/scheduler/jobs", json=body).status_code == 200
    [run] = finished_runs(app, "recent")
    assert run.status == "succeeded" and len(fires(app)) == 1


def test_max_instances_skips_overlapping_runs(make_app: Callable[..., Flask]) -> None:
    app = leading_app(make_app)
    body = {"id": "busy", "func": "tests.jobfuncs:slow", "args": [2.5], "trigger": "interval", "seconds": 1}
    app.test_client().post("/scheduler/jobs", json=body)
    skipped = wait_for(lambda: [r for r in runs(app, "busy") if r.status == "skipped"], timeout_s=10)
    assert "instance" in skipped[0].error
    app.test_client().post("/scheduler/jobs/busy/pause")
    rows = fires(app)
    starts = [f for f in rows if f.note == "start"]
    ends = [f for f in rows if f.note == "end"]
    # Never two at once: each start comes after the previous run's end.
    for previous_end, next_start in zip(ends, starts[1:], strict=False):
        assert next_start.started_at >= previous_end.started_at


def test_listener_events_carry_job_and_scheduled_time(make_app: Callable[..., Flask]) -> None:
    app = leading_app(make_app)
    events: list[JobExecutionEvent] = []
    app.apscheduler.add_listener(events.append, EVENT_JOB_ERROR)  # type: ignore[attr-defined]
    app.test_client().post(
        "/scheduler/jobs", json={"id": "ev", "func": "tests.jobfuncs:fail", "run_date": soon()}
    )
    [event] = wait_for(lambda: events)
    assert event.job_id == "ev" and isinstance(event.exception, RuntimeError)
    assert "RuntimeError" in event.traceback


def test_a_run_finds_its_function_while_another_thread_is_still_importing_its_module(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first runs of a burst start together: a module half-way through its import (in
    sys.modules, its functions not yet defined) must be waited for, not looked into."""
    package = tmp_path / "slowjobs_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "slow.py").write_text("import time\ntime.sleep(0.5)\n\ndef job():\n    return 'ran'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    importer = threading.Thread(target=importlib.import_module, args=("slowjobs_pkg.slow",))
    importer.start()
    wait_for(lambda: "slowjobs_pkg.slow" in sys.modules, timeout_s=5, interval_s=0.001)
    try:
        assert resolve("slowjobs_pkg.slow:job")() == "ran"
    finally:
        importer.join()
        sys.modules.pop("slowjobs_pkg.slow", None)
        sys.modules.pop("slowjobs_pkg", None)


def test_resolving_a_missing_function_says_what_apscheduler_says() -> None:
    with pytest.raises(LookupError, match="could not import module"):
        resolve("tests.no_such_module:job")
    with pytest.raises(LookupError, match="error looking up object"):
        resolve("tests.jobfuncs:no_such_function")


@pytest.mark.parametrize("landed", [True, False], ids=["commit-landed", "commit-not-landed"])
def test_a_run_whose_start_got_no_answer_runs_once(make_app: Callable[..., Flask], landed: bool) -> None:
    """The database dies as it commits the start: whether the commit landed or not, the run
    runs once and succeeds (not started with nobody running it, then swept as failed)."""
    app = leading_app(make_app)
    lost = LostCommitAnswers(engine(app), landed)
    try:
        body = {"id": "doubt", "func": "tests.jobfuncs:record", "run_date": soon()}
        assert app.test_client().post("/scheduler/jobs", json=body).status_code == 200
        [run] = finished_runs(app, "doubt")
    finally:
        lost.close()
    assert lost.lost == 1
    assert run.status == "succeeded" and run.error is None
    assert len(fires(app)) == 1
