"""The /scheduler API: every route's success, and the table of refused requests.

Shapes are Flask-APScheduler 1.13's (paths, verbs, status codes, JSON); every error
is JSON, names the field where there is one, and leaves the store unchanged.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from jobservice import create_app
from jobservice.models import jobs_table
from tests.conftest import (
    changed_settings,
    close_app,
    drop_mariadb_database,
    engine,
    mysql_url,
    new_mariadb_database,
    session,
    settings,
)
from tests.orm import ClusterState, JobRun

TOKEN = "s3cret-token-for-tests-0123456789"
NOOP = "tests.jobfuncs:noop"
INTERVAL = {"trigger": "interval", "hours": 1}


def add(client: FlaskClient, job_id: str, **fields: Any) -> Any:
    body = {"id": job_id, "func": NOOP, **INTERVAL, **fields}
    response = client.post("/scheduler/jobs", json=body)
    assert response.status_code == 200, response.json
    return response.json


# Routes that succeed ---------------------------------------------------------------


def test_add_job_returns_flask_apscheduler_shape(client: FlaskClient) -> None:
    job = add(client, "report", args=[], kwargs={}, name="Nightly report")
    assert job["id"] == "report"
    assert job["name"] == "Nightly report"
    assert job["func"] == NOOP
    assert job["trigger"] == "interval" and job["hours"] == 1
    assert job["args"] == [] and job["kwargs"] == {}
    assert job["misfire_grace_time"] == 300 and job["max_instances"] == 1
    assert job["next_run_time"].endswith("+00:00")


def test_add_cron_job_in_the_legacy_trigger_form(client: FlaskClient) -> None:
    body = {"id": "cron", "func": NOOP, "trigger": {"type": "cron", "hour": 3, "minute": "*/15"}}
    response = client.post("/scheduler/jobs", json=body)
    assert response.status_code == 200
    assert response.json["trigger"] == "cron"
    assert response.json["hour"] == "3" and response.json["minute"] == "*/15"


def test_add_date_job(client: FlaskClient) -> None:
    body = {"id": "once", "func": NOOP, "trigger": "date", "run_date": "2099-01-01T09:00:00+00:00"}
    response = client.post("/scheduler/jobs", json=body)
    assert response.status_code == 200
    assert response.json["run_date"] == "2099-01-01T09:00:00+00:00"
    assert response.json["next_run_time"] == "2099-01-01T09:00:00+00:00"


def test_add_job_paused_with_null_next_run_time(client: FlaskClient) -> None:
    job = add(client, "paused", next_run_time=None)
    assert job["next_run_time"] is None


def test_get_job_and_list(client: FlaskClient) -> None:
    add(client, "a")
    add(client, "b")
    assert client.get("/scheduler/jobs/a").json["id"] == "a"
    assert [job["id"] for job in client.get("/scheduler/jobs").json] == ["a", "b"]


def test_list_pages_with_limit_and_offset(client: FlaskClient) -> None:
    for n in range(5):
        add(client, f"job{n}", minutes=n + 1, **{"hours": 0})
    client.post("/scheduler/jobs/job0/pause")
    first = client.get("/scheduler/jobs?limit=2")
    assert [job["id"] for job in first.json] == ["job1", "job2"]
    assert 'rel="next"' in first.headers["Link"] and "offset=2" in first.headers["Link"]
    second = client.get("/scheduler/jobs?limit=2&offset=2")
    assert [job["id"] for job in second.json] == ["job3", "job4"]
    last = client.get("/scheduler/jobs?limit=2&offset=4")
    assert [job["id"] for job in last.json] == ["job0"]  # paused jobs come last, as upstream
    assert "Link" not in last.headers
    assert client.get("/scheduler/jobs?offset=10").json == []


def test_patch_changes_fields_and_replaces_trigger(client: FlaskClient) -> None:
    add(client, "p")
    response = client.patch(
        "/scheduler/jobs/p", json={"name": "renamed", "trigger": "cron", "minute": 5, "max_instances": 2}
    )
    assert response.status_code == 200
    assert response.json["name"] == "renamed"
    assert response.json["trigger"] == "cron" and response.json["minute"] == "5"
    assert response.json["max_instances"] == 2
    assert client.get("/scheduler/jobs/p").json["name"] == "renamed"


def test_patch_keeps_a_paused_job_paused(client: FlaskClient) -> None:
    add(client, "p")
    client.post("/scheduler/jobs/p/pause")
    response = client.patch("/scheduler/jobs/p", json={"trigger": "interval", "minutes": 5})
    assert response.json["minutes"] == 5
    assert response.json["next_run_time"] is None


def test_patch_func_and_args(client: FlaskClient) -> None:
    add(client, "p")
    response = client.patch("/scheduler/jobs/p", json={"func": "tests.jobfuncs:needs_two", "args": [1, 2]})
    assert response.status_code == 200
    assert response.json["func"] == "tests.jobfuncs:needs_two" and response.json["args"] == [1, 2]


def test_pause_and_resume(client: FlaskClient) -> None:
    add(client, "p")
    paused = client.post("/scheduler/jobs/p/pause")
    assert paused.status_code == 200 and paused.json["next_run_time"] is None
    resumed = client.post("/scheduler/jobs/p/resume")
    assert resumed.status_code == 200 and resumed.json["next_run_time"] is not None


def test_delete(client: FlaskClient) -> None:
    add(client, "d")
    response = client.delete("/scheduler/jobs/d")
    assert response.status_code == 204 and response.data == b""
    assert client.get("/scheduler/jobs/d").status_code == 404


def test_run_now_queues_a_manual_run(app: Flask, client: FlaskClient) -> None:
    add(client, "r")
    response = client.post("/scheduler/jobs/r/run")
    assert response.status_code == 200 and response.json["id"] == "r"
    with app.app_context(), session(app) as db_session:
        row = db_session.execute(select(JobRun)).scalar_one()
    assert (row.job_id, row.trigger, row.status, row.started_at) == ("r", "manual", "running", None)


def test_scheduler_info_and_cluster_controls(client: FlaskClient) -> None:
    info = client.get("/scheduler").json
    assert info["current_host"] and info["allowed_hosts"] == ["*"]
    assert info["running"] is True and info["state"] == "running"
    assert info["role"] == "follower" and info["leader"] is None  # this app did not join the election
    assert client.post("/scheduler/pause").status_code == 204
    assert client.get("/scheduler").json["state"] == "paused"
    assert client.post("/scheduler/resume").status_code == 204
    assert client.get("/scheduler").json["running"] is True
    assert client.post("/scheduler/shutdown", json={"wait": False}).status_code == 204
    assert client.get("/scheduler").json["running"] is False
    assert client.post("/scheduler/start").status_code == 204
    assert client.get("/scheduler").json["state"] == "running"


def test_start_when_running_and_shutdown_when_stopped_are_400(client: FlaskClient) -> None:
    response = client.post("/scheduler/start")
    assert response.status_code == 400 and response.json == {"error_message": "Scheduler is already running"}
    client.post("/scheduler/shutdown")
    response = client.post("/scheduler/shutdown")
    assert response.status_code == 400 and response.json == {"error_message": "Scheduler is not running"}


def test_token_is_required_on_every_route_when_set(make_app: Callable[..., Flask]) -> None:
    client = make_app(SCHEDULER_API_TOKEN=TOKEN).test_client()
    good = {"Authorization": f"Bearer {TOKEN}"}
    assert client.get("/scheduler", headers=good).status_code == 200
    for method, path in [
        ("GET", "/scheduler"),
        ("POST", "/scheduler/pause"),
        ("GET", "/scheduler/jobs"),
        ("POST", "/scheduler/jobs"),
        ("GET", "/scheduler/jobs/x"),
        ("DELETE", "/scheduler/jobs/x"),
        ("POST", "/scheduler/jobs/x/run"),
    ]:
        response = client.open(path, method=method, headers={"Authorization": "Bearer wrong"})
        assert response.status_code == 401, (method, path)
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert TOKEN not in response.get_data(as_text=True)
    assert client.get("/health").status_code == 200  # health stays open for load balancers


def test_api_can_be_disabled(make_app: Callable[..., Flask]) -> None:
    client = make_app(SCHEDULER_API_ENABLED=False).test_client()
    response = client.get("/scheduler/jobs")
    assert response.status_code == 404 and response.is_json


def test_unknown_url_and_wrong_method_are_json(client: FlaskClient) -> None:
    response = client.get("/scheduler/nowhere")
    assert response.status_code == 404 and "error_message" in response.json
    response = client.put("/scheduler/jobs")
    assert response.status_code == 405 and "error_message" in response.json
    assert "POST" in response.headers["Allow"]


# Refused requests -------------------------------------------------------------------


def job(**fields: Any) -> dict[str, Any]:
    return {"id": "new", "func": NOOP, **INTERVAL, **fields}


def date_job(run_date: str) -> dict[str, Any]:
    return {"id": "new", "func": NOOP, "trigger": "date", "run_date": run_date}


def cron_job(**fields: Any) -> dict[str, Any]:
    return {"id": "new", "func": NOOP, "trigger": "cron", **fields}


def without(key: str) -> dict[str, Any]:
    body = job()
    body.pop(key)
    return body


# fmt: off
BAD_REQUESTS: list[tuple[str, str, str, Any, int, str | None]] = [
    # (case, method, path, body, status, field the message must name)
    ("not-json", "POST", "/scheduler/jobs", b"{not json", 400, None),
    ("empty-body", "POST", "/scheduler/jobs", b"", 400, None),
    ("invalid-utf8", "POST", "/scheduler/jobs", b'{"id": "\xff"}', 400, None),
    ("deeply-nested", "POST", "/scheduler/jobs", b"[" * 100_000, 400, None),
    ("json-array", "POST", "/scheduler/jobs", [job()], 400, None),
    ("json-string", "POST", "/scheduler/jobs", "a job", 400, None),
    ("json-null", "POST", "/scheduler/jobs", b"null", 400, None),
    ("missing-id", "POST", "/scheduler/jobs", without("id"), 400, "id"),
    ("missing-func", "POST", "/scheduler/jobs", without("func"), 400, "func"),
    ("func-os-system", "POST", "/scheduler/jobs", job(func="os:system", args=["id"]), 400, "func"),
    ("func-builtins-eval", "POST", "/scheduler/jobs", job(func="builtins:eval", args=["1"]), 400, "func"),
    (
        "func-subprocess-run",
        "POST",
        "/scheduler/jobs",
        job(func="subprocess:run", args=[["id"]]),
        400,
        "func",
    ),
    ("func-private", "POST", "/scheduler/jobs", job(func="tests.jobfuncs:_private"), 400, "func"),
    ("func-prefix-trick", "POST", "/scheduler/jobs", job(func="jobsx.evil:run"), 400, "func"),
    ("func-private-module", "POST", "/scheduler/jobs", job(func="jobs._secret:run"), 400, "func"),
    ("func-missing-module", "POST", "/scheduler/jobs", job(func="jobs.nothere:run"), 400, "func"),
    ("func-missing-function", "POST", "/scheduler/jobs", job(func="jobs.heartbeat:nothere"), 400, "func"),
    ("func-imported-not-defined", "POST", "/scheduler/jobs", job(func="tests.jobfuncs:insert"), 400, "func"),
    (
        "func-attribute-path",
        "POST",
        "/scheduler/jobs",
        job(func="jobs.heartbeat:beat.__globals__"),
        400,
        "func",
    ),
    ("func-dotted-escape", "POST", "/scheduler/jobs", job(func="jobs.heartbeat.os:system"), 400, "func"),
    ("func-not-a-string", "POST", "/scheduler/jobs", job(func=42), 400, "func"),
    ("func-async", "POST", "/scheduler/jobs", job(func="tests.jobfuncs:coroutine"), 400, "func"),
    ("unknown-trigger", "POST", "/scheduler/jobs", {**without("hours"), "trigger": "weekly"}, 400, "trigger"),
    (
        "cron-minute-70",
        "POST",
        "/scheduler/jobs",
        {**without("hours"), "trigger": "cron", "minute": 70},
        400,
        "minute",
    ),
    (
        "cron-bad-range",
        "POST",
        "/scheduler/jobs",
        {**without("hours"), "trigger": "cron", "hour": "25-30"},
        400,
        "hour",
    ),
    (
        "cron-field-type",
        "POST",
        "/scheduler/jobs",
        {**without("hours"), "trigger": "cron", "hour": [1]},
        400,
        "hour",
    ),
    ("interval-zero", "POST", "/scheduler/jobs", job(hours=0), 400, "hours"),
    ("interval-negative", "POST", "/scheduler/jobs", job(hours=-5), 400, "hours"),
    ("interval-empty", "POST", "/scheduler/jobs", without("hours"), 400, "seconds"),
    ("interval-not-number", "POST", "/scheduler/jobs", job(hours="1"), 400, "hours"),
    (
        "interval-nan",
        "POST",
        "/scheduler/jobs",
        b'{"id":"new","func":"tests.jobfuncs:noop","trigger":"interval","hours":NaN}',
        400,
        "hours",
    ),
    (
        "run-date-unparseable",
        "POST",
        "/scheduler/jobs",
        {"id": "new", "func": NOOP, "trigger": "date", "run_date": "next tuesday"},
        400,
        "run_date",
    ),
    (
        "run-date-not-string",
        "POST",
        "/scheduler/jobs",
        {"id": "new", "func": NOOP, "trigger": "date", "run_date": 12},
        400,
        "run_date",
    ),
    (
        "end-before-start",
        "POST",
        "/scheduler/jobs",
        job(start_date="2030-01-02T00:00:00", end_date="2030-01-01T00:00:00"),
        400,
        "end_date",
    ),
    ("timezone-unknown", "POST", "/scheduler/jobs", job(timezone="Mars/Olympus_Mons"), 400, "timezone"),
    ("id-over-191", "POST", "/scheduler/jobs", job(id="x" * 192), 400, "id"),
    ("id-with-slash", "POST", "/scheduler/jobs", job(id="a/b"), 400, "id"),
    ("id-not-string", "POST", "/scheduler/jobs", job(id=7), 400, "id"),
    ("id-blank", "POST", "/scheduler/jobs", job(id="  "), 400, "id"),
    ("id-trailing-space", "POST", "/scheduler/jobs", job(id="existing "), 400, "id"),
    ("args-not-list", "POST", "/scheduler/jobs", job(args="abc"), 400, "args"),
    ("kwargs-not-object", "POST", "/scheduler/jobs", job(kwargs=[1]), 400, "kwargs"),
    (
        "args-do-not-fit",
        "POST",
        "/scheduler/jobs",
        job(func="tests.jobfuncs:needs_two", args=[1]),
        400,
        "args",
    ),
    ("kwargs-do-not-fit", "POST", "/scheduler/jobs", job(kwargs={"nope": 1}), 400, "kwargs"),
    ("unknown-field", "POST", "/scheduler/jobs", job(bogus=1), 400, "bogus"),
    (
        "field-of-other-trigger",
        "POST",
        "/scheduler/jobs",
        {"id": "new", "func": NOOP, "trigger": "date", "hours": 1},
        400,
        "hours",
    ),
    ("misfire-zero", "POST", "/scheduler/jobs", job(misfire_grace_time=0), 400, "misfire_grace_time"),
    ("max-instances-bool", "POST", "/scheduler/jobs", job(max_instances=True), 400, "max_instances"),
    ("coalesce-not-bool", "POST", "/scheduler/jobs", job(coalesce="yes"), 400, "coalesce"),
    ("next-run-time-bad", "POST", "/scheduler/jobs", job(next_run_time="soon"), 400, "next_run_time"),
    ("jobstore-other", "POST", "/scheduler/jobs", job(jobstore="memory"), 400, "jobstore"),
    ("executor-other", "POST", "/scheduler/jobs", job(executor="processpool"), 400, "executor"),
    ("name-too-long", "POST", "/scheduler/jobs", job(name="n" * 256), 400, "name"),
    ("duplicate-id", "POST", "/scheduler/jobs", job(id="existing"), 409, None),
    ("patch-unknown-field", "PATCH", "/scheduler/jobs/existing", {"bogus": 1}, 400, "bogus"),
    ("patch-id", "PATCH", "/scheduler/jobs/existing", {"id": "renamed"}, 400, "id"),
    ("patch-field-without-trigger", "PATCH", "/scheduler/jobs/existing", {"minutes": 5}, 400, "minutes"),
    ("patch-func-outside", "PATCH", "/scheduler/jobs/existing", {"func": "os:system"}, 400, "func"),
    ("patch-args-do-not-fit", "PATCH", "/scheduler/jobs/existing", {"args": [1, 2, 3]}, 400, "args"),
    ("patch-not-json", "PATCH", "/scheduler/jobs/existing", b"name=x", 400, None),
    ("patch-unknown-job", "PATCH", "/scheduler/jobs/ghost", {"name": "x"}, 404, None),
    ("get-unknown-job", "GET", "/scheduler/jobs/ghost", None, 404, None),
    ("delete-unknown-job", "DELETE", "/scheduler/jobs/ghost", None, 404, None),
    ("pause-unknown-job", "POST", "/scheduler/jobs/ghost/pause", None, 404, None),
    ("resume-unknown-job", "POST", "/scheduler/jobs/ghost/resume", None, 404, None),
    ("run-unknown-job", "POST", "/scheduler/jobs/ghost/run", None, 404, None),
    ("limit-zero", "GET", "/scheduler/jobs?limit=0", None, 400, "limit"),
    ("limit-text", "GET", "/scheduler/jobs?limit=ten", None, 400, "limit"),
    ("limit-unicode-digit", "GET", "/scheduler/jobs?limit=%C2%B2", None, 400, "limit"),
    ("offset-negative", "GET", "/scheduler/jobs?offset=-1", None, 400, "offset"),
    ("shutdown-bad-body", "POST", "/scheduler/shutdown", {"wait": "later"}, 400, "wait"),
    ("body-too-large", "POST", "/scheduler/jobs", job(args=["x" * (2 * 1024 * 1024)]), 413, None),
    # What could not be stored and read back, or would never fire, or was silently changed.
    ("run-date-year-10000-rounding", "POST", "/scheduler/jobs", date_job("9999-12-31T23:59:59.999999+00:00"), 400, "run_date"),
    ("run-date-offset-past-9999", "POST", "/scheduler/jobs", date_job("9999-12-31T23:59:59-14:00"), 400, "run_date"),
    ("run-date-before-1970", "POST", "/scheduler/jobs", date_job("1969-12-31T23:59:59+00:00"), 400, "run_date"),
    ("start-date-year-9999", "POST", "/scheduler/jobs", job(start_date="9999-12-31T12:00:00"), 400, "start_date"),
    ("interval-seconds-1e12", "POST", "/scheduler/jobs", {**without("hours"), "seconds": 1e12}, 400, "seconds"),
    ("interval-days-99999999", "POST", "/scheduler/jobs", {**without("hours"), "days": 99999999}, 400, "days"),
    ("interval-weeks-overflow", "POST", "/scheduler/jobs", {**without("hours"), "weeks": 10**12}, 400, "weeks"),
    ("interval-end-date-passed", "POST", "/scheduler/jobs", job(end_date="2020-01-01T00:00:00"), 400, "end_date"),
    ("jitter-overflow", "POST", "/scheduler/jobs", job(jitter=10**15), 400, "jitter"),
    ("misfire-overflow", "POST", "/scheduler/jobs", job(misfire_grace_time=10**18), 400, "misfire_grace_time"),
    ("trigger-a-list", "POST", "/scheduler/jobs", {**without("hours"), "trigger": [1]}, 400, "trigger"),
    ("trigger-type-a-list", "POST", "/scheduler/jobs", {"id": "new", "func": NOOP, "trigger": {"type": [1]}}, 400, "trigger"),
    ("trigger-an-object-in-an-object", "POST", "/scheduler/jobs", {"id": "new", "func": NOOP, "trigger": {"type": {}}}, 400, "trigger"),
    ("cron-dow-partly-read", "POST", "/scheduler/jobs", cron_job(day_of_week="mon-sun-fri"), 400, "day_of_week"),
    ("cron-day-partly-read", "POST", "/scheduler/jobs", cron_job(day="lastx"), 400, "day"),
    ("cron-feb-30", "POST", "/scheduler/jobs", cron_job(month=2, day=30), 400, "trigger"),
    ("cron-year-passed", "POST", "/scheduler/jobs", cron_job(year=2020), 400, "trigger"),
    ("cron-end-date-passed", "POST", "/scheduler/jobs", cron_job(hour=1, end_date="2020-01-01T00:00:00"), 400, "end_date"),
    ("cron-beyond-9999", "POST", "/scheduler/jobs", cron_job(year=9999, month=12, day=31, timezone="Etc/GMT+12"), 400, "trigger"),
    ("id-dot", "POST", "/scheduler/jobs", job(id="."), 400, "id"),
    ("id-dot-dot", "POST", "/scheduler/jobs", job(id=".."), 400, "id"),
    ("id-percent-escape", "POST", "/scheduler/jobs", job(id="a%2Fb"), 400, "id"),
    ("id-question-mark", "POST", "/scheduler/jobs", job(id="a?b"), 400, "id"),
    ("id-hash", "POST", "/scheduler/jobs", job(id="a#b"), 400, "id"),
    ("id-backslash", "POST", "/scheduler/jobs", job(id="a\\b"), 400, "id"),
    ("id-service-prefix", "POST", "/scheduler/jobs", job(id="jobservice-mine"), 400, "id"),
    ("patch-trigger-never-fires", "PATCH", "/scheduler/jobs/existing", {"trigger": "cron", "month": 2, "day": 31}, 400, "trigger"),
    ("patch-date-beyond-9999", "PATCH", "/scheduler/jobs/existing", {"trigger": "date", "run_date": "9999-12-31T23:59:59.999999Z"}, 400, "run_date"),
    # The service's own jobs: paused and resumed, never changed or removed.
    ("delete-service-job", "DELETE", "/scheduler/jobs/jobservice-maintenance", None, 403, None),
    ("patch-service-job", "PATCH", "/scheduler/jobs/jobservice-maintenance", {"name": "mine now"}, 403, None),
]
# fmt: on


@pytest.fixture(scope="module", params=["sqlite", "mariadb"])
def shared_app(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flask]:
    """One app per backend for the whole table: each case checks its own request changed nothing."""
    if request.param == "sqlite":
        url, database = f"sqlite:///{tmp_path_factory.mktemp('api')}/jobs.sqlite3", None
    else:
        request.getfixturevalue("mariadb_server")
        database = new_mariadb_database()
        url = mysql_url(database)
    app = create_app(settings(url))
    with app.app_context():
        app.extensions["jobservice"].reconcile()  # declares jobservice-maintenance, as a server would
    app.test_client().post("/scheduler/jobs", json=job(id="existing"))
    yield app
    close_app(app)
    if database:
        drop_mariadb_database(database)


def snapshot(app: Flask) -> tuple[Any, ...]:
    """Everything a request could change: the job rows, the run rows, the cluster state."""
    with engine(app).connect() as conn:
        jobs = conn.execute(select(jobs_table).order_by(jobs_table.c.id)).all()
        runs = conn.execute(select(func.count()).select_from(JobRun.__table__)).scalar_one()
        state = conn.execute(select(ClusterState.__table__.c.paused)).all()
    return tuple(jobs), runs, tuple(state)


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "field"),
    [case[1:] for case in BAD_REQUESTS],
    ids=[case[0] for case in BAD_REQUESTS],
)
def test_bad_request_is_refused_with_json_and_changes_nothing(
    shared_app: Flask, method: str, path: str, body: Any, status: int, field: str | None
) -> None:
    client = shared_app.test_client()
    before = snapshot(shared_app)
    if body is None or isinstance(body, bytes):
        response = client.open(path, method=method, data=body, content_type="application/json")
    else:
        response = client.open(path, method=method, json=body)
    assert response.status_code == status, response.get_data(as_text=True)[:500]
    assert response.mimetype == "application/json"
    payload = json.loads(response.get_data())
    assert isinstance(payload["error_message"], str) and payload["error_message"]
    if field is not None:
        assert payload["field"] == field
        assert field in payload["error_message"]
    assert snapshot(shared_app) == before


def test_bad_request_table_covers_the_issue_list() -> None:
    assert len(BAD_REQUESTS) >= 20


def test_wrong_and_missing_token_are_401_and_change_nothing(shared_app: Flask) -> None:
    with changed_settings(shared_app, api_token=TOKEN):
        client = shared_app.test_client()
        before = snapshot(shared_app)
        for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": f"Basic {TOKEN}"}):
            response = client.post("/scheduler/jobs", json=job(id="tokened"), headers=headers)
            assert response.status_code == 401 and "error_message" in response.json
            response = client.post("/scheduler/pause", headers=headers)
            assert response.status_code == 401
        assert snapshot(shared_app) == before


# Bodies a cross-site form could send ---------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "content_type", "data"),
    [
        ("POST", "/scheduler/jobs", "text/plain", json.dumps(job(id="plain"))),
        ("POST", "/scheduler/jobs", "application/x-www-form-urlencoded", "id=formed"),
        ("POST", "/scheduler/jobs", "multipart/form-data; boundary=x", "--x--"),
        ("PATCH", "/scheduler/jobs/existing", "text/plain", json.dumps({"name": "changed"})),
        ("POST", "/scheduler/jobs/existing/pause", "application/x-www-form-urlencoded", ""),
        ("POST", "/scheduler/jobs/existing/run", "text/plain", ""),
        ("POST", "/scheduler/pause", "multipart/form-data; boundary=x", "--x--"),
        ("DELETE", "/scheduler/jobs/existing", "text/plain", ""),
        ("POST", "/scheduler/jobs", "application/xml", "<job/>"),
    ],
)
def test_a_body_that_is_not_json_is_415_and_changes_nothing(
    shared_app: Flask, method: str, path: str, content_type: str, data: str
) -> None:
    client = shared_app.test_client()
    before = snapshot(shared_app)
    response = client.open(path, method=method, data=data, content_type=content_type)
    assert response.status_code == 415, response.get_data(as_text=True)[:300]
    assert response.is_json and "application/json" in response.json["error_message"]
    assert snapshot(shared_app) == before


def test_body_less_actions_need_no_content_type(client: FlaskClient) -> None:
    """Flask-APScheduler clients POST actions with no body and no type (requests.post(url))."""
    add(client, "bare")
    assert client.post("/scheduler/jobs/bare/pause").status_code == 200
    assert client.post("/scheduler/jobs/bare/resume", content_type="application/json").status_code == 200
