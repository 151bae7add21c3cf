"""Run options with the thread executor: retries with backoff, timeouts (flagged, not stopped),
max_instances counted across the cluster, and dead runs given their next attempt.
On SQLite and MariaDB; the RQ executor's side is in test_rq.py."""

from __future__ import annotations

import importlib.util
import re
import secrets
from collections.abc import Callable
from datetime import timedelta

import pytest
from flask import Flask

from jobservice.errors import ConfigError
from jobservice.models import utcnow
from jobservice.options import RetryPolicy
from tests.conftest import engine, finished_runs, leading_app, runs, session, soon, wait_for
from tests.jobfuncs import fires, metadata
from tests.orm import JobRun


def add(app: Flask, **fields: object) -> dict:
    response = app.test_client().post("/scheduler/jobs", json={"trigger": "date", **fields})
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def test_job_json_has_the_options_with_their_defaults(make_app: Callable[..., Flask]) -> None:
    app = make_app()
    body = add(app, id="plain", func="tests.jobfuncs:noop", run_date="2999-01-01T00:00:00+00:00")
    assert {k: body[k] for k in ("timeout_s", "retries", "retry_delay_s", "queue")} == {
        "timeout_s": None,
        "retries": 0,
        "retry_delay_s": 10,
        "queue": "default",
    }
    client = app.test_client()
    changed = client.patch("/scheduler/jobs/plain", json={"retries": 2, "timeout_s": 30, "queue": "heavy"})
    assert changed.status_code == 200
    assert (changed.get_json()["retries"], changed.get_json()["timeout_s"], changed.get_json()["queue"]) == (
        2,
        30,
        "heavy",
    )
    assert client.get("/scheduler/jobs/plain").get_json()["retries"] == 2  # stored, read back


def test_defaults_come_from_scheduler_job_defaults(make_app: Callable[..., Flask]) -> None:
    app = make_app(SCHEDULER_JOB_DEFAULTS={"retries": 4, "retry_delay_s": 1.5, "timeout_s": 60})
    body = add(app, id="d", func="tests.jobfuncs:noop", run_date="2999-01-01T00:00:00+00:00")
    assert (body["retries"], body["retry_delay_s"], body["timeout_s"]) == (4, 1.5, 60)
    explicit = add(app, id="e", func="tests.jobfuncs:noop", run_date="2999-01-01T00:00:00+00:00", retries=0)
    assert explicit["retries"] == 0


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("retries", -1),
        ("retries", 1.5),
        ("retries", True),
        ("retries", 101),
        ("timeout_s", 0),
        ("timeout_s", "10"),
        ("retry_delay_s", -1),
        ("queue", ""),
        ("queue", "a b"),
        ("queue", "x" * 65),
    ],
)
def test_bad_options_are_refused_naming_the_field(
    make_app: Callable[..., Flask], field: str, value: object
) -> None:
    app = make_app()
    client = app.test_client()
    job = {
        "id": "bad",
        "func": "tests.jobfuncs:noop",
        "trigger": "date",
        "run_date": "2999-01-01T00:00:00+00:00",
    }
    response = client.post("/scheduler/jobs", json={**job, field: value})
    assert response.status_code == 400
    assert field in response.get_json()["error_message"]
    assert client.get("/scheduler/jobs/bad").status_code == 404  # nothing stored
    add(app, **job)
    patched = client.patch("/scheduler/jobs/bad", json={field: value})
    assert patched.status_code == 400 and field in patched.get_json()["error_message"]


@pytest.mark.parametrize(
    "defaults", [{"retries": -1}, {"queue": "no spaces"}, {"timeout_s": 0}, {"retry_delay_s": "1"}]
)
def test_bad_option_defaults_stop_start_up(make_app: Callable[..., Flask], defaults: dict) -> None:
    with pytest.raises(ConfigError, match="SCHEDULER_JOB_DEFAULTS"):
        make_app(SCHEDULER_JOB_DEFAULTS=defaults)


def test_executor_setting_is_checked(make_app: Callable[..., Flask]) -> None:
    with pytest.raises(ConfigError, match="SCHEDULER_EXECUTOR must be one of threads, rq"):
        make_app(SCHEDULER_EXECUTOR="celery")
    with pytest.raises(ConfigError, match="needs Redis"):
        make_app(SCHEDULER_EXECUTOR="rq")


def test_spreading_runs_is_checked(make_app: Callable[..., Flask], redis_url: str) -> None:
    with pytest.raises(ConfigError, match="JOBSERVICE_SPREAD_RUNS needs Redis"):
        make_app(JOBSERVICE_SPREAD_RUNS=True)
    with pytest.raises(ConfigError, match="JOBSERVICE_SPREAD_RUNS spreads the thread executor's runs"):
        make_app(JOBSERVICE_SPREAD_RUNS=True, SCHEDULER_EXECUTOR="rq", JOBSERVICE_REDIS_URL=redis_url)
    with pytest.raises(ConfigError, match="JOBSERVICE_SPREAD_RUNS"):
        make_app(JOBSERVICE_SPREAD_RUNS="sometimes", JOBSERVICE_REDIS_URL=redis_url)


def test_the_rq_executor_without_rq_installed_says_what_to_install(
    make_app: Callable[..., Flask], monkeypatch: pytest.MonkeyPatch
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "rq" else real(name, *a)
    )
    with pytest.raises(ConfigError, match=r"needs the rq package: pip install 'jobservice\[rq\]'"):
        make_app(SCHEDULER_EXECUTOR="rq", JOBSERVICE_REDIS_URL="redis://127.0.0.1:6379/0")


def test_backoff_doubles_and_is_capped() -> None:
    policy = RetryPolicy(retries=5, delay_s=2, cap_s=10)
    assert [policy.delay(attempt) for attempt in range(1, 7)] == [2, 4, 8, 10, 10, None]
    assert RetryPolicy(0, 2, 10).delay(1) is None


def test_failing_twice_then_succeeding_gives_three_attempts_with_the_delays(
    make_app: Callable[..., Flask],
) -> None:
    app = leading_app(make_app)
    job_id = f"flaky-{secrets.token_hex(3)}"  # metrics are per process: one id per test
    add(app, id=job_id, func="tests.jobfuncs:flaky", args=[2], run_date=soon(), retries=3, retry_delay_s=0.5)
    rows = finished_runs(app, job_id, 3)
    wait_for(lambda: len(runs(app, job_id)) == 3 and all(r.status != "running" for r in runs(app, job_id)))
    rows = runs(app, job_id)
    assert [(r.attempt, r.status) for r in rows] == [(1, "failed"), (2, "failed"), (3, "succeeded")]
    assert len({r.scheduled_at for r in rows}) == 1  # one fire time, three attempts
    assert "failing attempt 1 of 2" in rows[0].error
    first_gap = (rows[1].started_at - rows[0].finished_at).total_seconds()
    second_gap = (rows[2].started_at - rows[1].finished_at).total_seconds()
    assert 0.5 <= first_gap < 0.5 + 1.5, first_gap  # retry_delay_s
    assert 1.0 <= second_gap < 1.0 + 1.5, second_gap  # doubled
    assert [f.note for f in _fires(app, job_id)] == ["attempt 1", "attempt 2", "attempt 3"]
    text = app.test_client().get("/metrics").get_data(as_text=True)
    assert re.search(rf'^jobservice_retries_total\{{job_id="{job_id}"\}} 2\.0$', text, re.M), text


def test_retry_delays_are_capped_by_retry_max_delay_seconds(make_app: Callable[..., Flask]) -> None:
    app = leading_app(make_app, JOBSERVICE_RETRY_MAX_DELAY_SECONDS=0.5)
    add(app, id="capped", func="tests.jobfuncs:flaky", args=[1], run_date=soon(), retries=1, retry_delay_s=60)
    wait_for(lambda: [r.status for r in runs(app, "capped")] == ["failed", "succeeded"], timeout_s=15)
    failed, retry = runs(app, "capped")
    assert (retry.not_before - failed.finished_at).total_seconds() == pytest.approx(0.5, abs=0.05)


def test_the_last_failure_is_final_and_run_now_retries_too(make_app: Callable[..., Flask]) -> None:
    app = leading_app(make_app)
    add(app, id="hopeless", func="tests.jobfuncs:flaky", args=[99], run_date="2999-01-01T00:00:00+00:00")
    app.test_client().patch("/scheduler/jobs/hopeless", json={"retries": 1, "retry_delay_s": 0})
    assert app.test_client().post("/scheduler/jobs/hopeless/run").status_code == 200
    wait_for(lambda: [r.status for r in runs(app, "hopeless")] == ["failed", "failed"], timeout_s=15)
    rows = runs(app, "hopeless")
    assert [(r.trigger, r.attempt) for r in rows] == [("manual", 1), ("manual", 2)]
    assert len(_fires(app, "hopeless")) == 2  # no third attempt


def test_a_timeout_with_threads_flags_the_run_without_stopping_it(make_app: Callable[..., Flask]) -> None:
    app = leading_app(make_app, JOBSERVICE_LEADER_LEASE_SECONDS=1.0)
    job_id = f"long-{secrets.token_hex(3)}"
    add(app, id=job_id, func="tests.jobfuncs:sleepy", args=[2.5], run_date=soon(), timeout_s=0.5)
    wait_for(lambda: [r.status for r in runs(app, job_id)] == ["overrunning"], timeout_s=10)
    (row,) = finished_runs(app, job_id)
    assert row.status == "succeeded"  # a thread cannot be stopped: flagged, then it finished
    assert [f.note for f in _fires(app, job_id)] == ["start", "end"]
    text = app.test_client().get("/metrics").get_data(as_text=True)
    assert re.search(rf'^jobservice_overruns_total\{{job_id="{job_id}"\}} 1\.0$', text, re.M)


def test_max_instances_counts_runs_going_on_in_other_processes(make_app: Callable[..., Flask]) -> None:
    app = leading_app(make_app)
    add(app, id="single", func="tests.jobfuncs:record", run_date="2999-01-01T00:00:00+00:00")
    now = utcnow()
    with session(app) as db:  # a run of it going on in another process (an RQ worker, an old leader)
        db.add(_running("single", now, "otherhost:1"))
        db.commit()
    app.test_client().post("/scheduler/jobs/single/run")
    skipped = wait_for(lambda: [r for r in runs(app, "single") if r.status == "skipped"] or None)
    assert "already running in the cluster" in skipped[0].error
    assert _fires(app, "single") == []


def test_a_dead_run_is_retried_when_it_has_attempts_left(make_app: Callable[..., Flask]) -> None:
    app = leading_app(make_app, JOBSERVICE_LEADER_LEASE_SECONDS=0.5)
    add(
        app,
        id="revive",
        func="tests.jobfuncs:record",
        run_date="2999-01-01T00:00:00+00:00",
        retries=1,
        retry_delay_s=0,
    )
    long_ago = utcnow() - timedelta(minutes=5)
    with session(app) as db:  # started by a process that died: its heartbeat stopped
        db.add(_running("revive", long_ago, "gone:4242"))
        db.commit()
    wait_for(lambda: [r.status for r in runs(app, "revive")] == ["failed", "succeeded"], timeout_s=20)
    dead, retry = runs(app, "revive")
    assert "worker gone:4242 stopped" in dead.error
    assert (retry.attempt, retry.scheduled_at) == (2, dead.scheduled_at)
    assert len(_fires(app, "revive")) == 1


def _running(job_id: str, at: object, worker: str) -> JobRun:
    return JobRun(
        job_id=job_id,
        trigger="scheduled",
        scheduled_at=at,
        attempt=1,
        status="running",
        claim="0" * 16,
        fence=1,
        worker=worker,
        started_at=at,
        prevented=0,
        created_at=at,
        updated_at=at,
    )


def _fires(app: Flask, job_id: str) -> list:
    metadata.create_all(engine(app))
    with engine(app).connect() as conn:
        return list(conn.execute(fires.select().where(fires.c.job_id == job_id).order_by(fires.c.id)))
