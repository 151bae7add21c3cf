"""Flask-APScheduler 1.13.1's own tests (tests/test_api.py and tests/test_scheduler.py),
case by case, through `from jobservice import APScheduler`.

Only their set-up differs: each test gets a database of its own (upstream keeps jobs in
memory) and is closed at the end. Where jobservice differs on purpose, the test says so
and asserts what jobservice does instead:

* bodies must be sent as application/json (upstream posts `data=json.dumps(...)` with no
  type): 415, and the same body as JSON is accepted;
* bad input is a JSON 400 naming the field (upstream: a 500);
* only public module-level functions of the job packages run: nested functions, as
  upstream's scheduler tests use, are refused;
* SCHEDULER_JOBSTORES with another store than one shared SQL store is refused;
* a scheduler needs an app before it starts (its jobs live in the app's database).
"""

from __future__ import annotations

import base64
import socket
from collections.abc import Iterator
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pytest
from apscheduler.jobstores.memory import MemoryJobStore
from flask import Flask, url_for
from flask.testing import FlaskClient
from flask_apscheduler import utils
from flask_apscheduler.auth import HTTPBasicAuth
from werkzeug.routing import BuildError

from jobservice import STATE_PAUSED, STATE_RUNNING, STATE_STOPPED, APScheduler, ConfigError, JobService
from tests.conftest import close_app

JOB1 = "tests.test_flask_apscheduler:job1"


def job1(x: int = 0) -> None:
    print(x)


def decorated_job() -> None:
    """A module-level function for the decorator cases (upstream nests them in the tests)."""


def decorated_job2() -> None:
    """The second one."""


@pytest.fixture
def new_app(database_url: str, tmp_path: Path) -> Iterator[Any]:
    """Upstream's `Flask(__name__)`, with a database of the test's own."""
    apps: list[Flask] = []

    def make() -> Flask:
        app = Flask(__name__, instance_path=str(tmp_path / f"instance{len(apps)}"))
        app.config["JOBSERVICE_DATABASE_URL"] = database_url
        apps.append(app)
        return app

    yield make
    for app in apps:
        if "jobservice" in app.extensions:
            close_app(app)


class Api:
    """Upstream's TestAPI set-up: API on, initialised, started."""

    def __init__(self, app: Flask, prefix: str | None = None, endpoint_prefix: str | None = None) -> None:
        self.app = app
        self.scheduler = APScheduler()
        self.scheduler.api_enabled = True
        if prefix is not None:
            self.scheduler.api_prefix = prefix
        if endpoint_prefix is not None:
            self.scheduler.endpoint_prefix = endpoint_prefix
        self.scheduler.init_app(app)
        self.scheduler.start()
        self.client: FlaskClient = app.test_client()
        self.prefix = self.scheduler.api_prefix

    def add_job(self) -> dict[str, Any]:
        job = {"id": "job1", "func": JOB1, "trigger": "interval", "minutes": 10}
        return self.client.post(self.prefix + "/jobs", json=job).json


@pytest.fixture
def api(new_app: Any) -> Api:
    return Api(new_app())


def next_year() -> tuple[datetime, str]:
    today = date.today()
    test_date = datetime(today.year + 1, today.month, today.day)
    return test_date, str(test_date.astimezone().isoformat())


# tests/test_api.py: TestAPI ---------------------------------------------------------------


def test_scheduler_info(api: Api) -> None:
    response = api.client.get(api.prefix)
    assert response.status_code == 200
    info = response.json
    assert info["current_host"] is not None
    assert info["allowed_hosts"] == ["*"]
    assert info["running"] is True


def test_pause_scheduler(api: Api) -> None:
    assert api.client.post(api.prefix + "/pause").status_code == 204
    assert api.scheduler.state == STATE_PAUSED


def test_pause_scheduler_already_paused(api: Api) -> None:
    api.scheduler.pause()
    assert api.scheduler.state == STATE_PAUSED
    assert api.client.post(api.prefix + "/pause").status_code == 204
    assert api.scheduler.state == STATE_PAUSED


def test_resume_scheduler(api: Api) -> None:
    api.scheduler.pause()
    assert api.scheduler.state == STATE_PAUSED
    assert api.client.post(api.prefix + "/resume").status_code == 204
    assert api.scheduler.state == STATE_RUNNING


def test_resume_scheduler_already_running(api: Api) -> None:
    assert api.client.post(api.prefix + "/resume").status_code == 204
    assert api.scheduler.state == STATE_RUNNING


def test_start_scheduler(api: Api) -> None:
    api.scheduler.shutdown()
    assert api.scheduler.state == STATE_STOPPED
    assert api.client.post(api.prefix + "/start").status_code == 204
    assert api.scheduler.state == STATE_RUNNING


def test_start_scheduler_already_running(api: Api) -> None:
    assert api.client.post(api.prefix + "/start").status_code == 400


def test_shutdown_scheduler(api: Api) -> None:
    assert api.client.post(api.prefix + "/shutdown").status_code == 204
    assert api.scheduler.state == STATE_STOPPED


def test_shutdown_scheduler_already_stopped(api: Api) -> None:
    api.scheduler.shutdown()
    assert api.scheduler.state == STATE_STOPPED
    assert api.client.post(api.prefix + "/shutdown").status_code == 400


def test_force_shutdown_scheduler(api: Api) -> None:
    assert api.client.post(api.prefix + "/shutdown", json={"wait": False}).status_code == 204
    assert api.scheduler.state == STATE_STOPPED


def test_force_shutdown_scheduler_already_stopped(api: Api) -> None:
    api.scheduler.shutdown()
    assert api.scheduler.state == STATE_STOPPED
    assert api.client.post(api.prefix + "/shutdown", json={"wait": False}).status_code == 400


def test_add_job(api: Api) -> None:
    _, iso_date = next_year()
    job = {"id": "job1", "func": JOB1, "trigger": "date", "run_date": iso_date}
    # Upstream posts data=json.dumps(job), without a content type: refused here on purpose.
    assert api.client.post(api.prefix + "/jobs", data=str(job)).status_code == 415
    response = api.client.post(api.prefix + "/jobs", json=job)
    assert response.status_code == 200
    job2 = response.json
    assert job.get("id") == job2.get("id")
    assert job.get("func") == job2.get("func")
    assert job.get("trigger") == job2.get("trigger")
    assert job.get("run_date") == job2.get("run_date")


def test_add_conflicted_job(api: Api) -> None:
    _, iso_date = next_year()
    job = {"id": "job1", "func": JOB1, "trigger": "date", "run_date": iso_date}
    assert api.client.post(api.prefix + "/jobs", json=job).status_code == 200
    assert api.client.post(api.prefix + "/jobs", json=job).status_code == 409


def test_add_invalid_job(api: Api) -> None:
    response = api.client.post(api.prefix + "/jobs", json={"id": None})
    assert response.status_code == 400  # upstream: 500
    assert response.json["field"] == "id"


def test_delete_job(api: Api) -> None:
    api.add_job()
    assert api.client.delete(api.prefix + "/jobs/job1").status_code == 204
    assert api.client.get(api.prefix + "/jobs/job1").status_code == 404


def test_delete_job_not_found(api: Api) -> None:
    assert api.client.delete(api.prefix + "/jobs/job1").status_code == 404


def test_get_job(api: Api) -> None:
    job = api.add_job()
    response = api.client.get(api.prefix + "/jobs/job1")
    assert response.status_code == 200
    job2 = response.json
    for key in ("id", "func", "trigger", "minutes"):
        assert job.get(key) == job2.get(key)


def test_get_job_not_found(api: Api) -> None:
    assert api.client.get(api.prefix + "/jobs/job1").status_code == 404


def test_get_all_jobs(api: Api) -> None:
    job = api.add_job()
    response = api.client.get(api.prefix + "/jobs")
    assert response.status_code == 200
    jobs = [j for j in response.json if not j["id"].startswith("jobservice-")]  # the service's own
    assert len(jobs) == 1
    for key in ("id", "func", "trigger", "minutes"):
        assert job.get(key) == jobs[0].get(key)


def test_update_job(api: Api) -> None:
    job = api.add_job()
    test_date, iso_date = next_year()
    data_to_update = {"args": [1], "trigger": "cron", "minute": "*/1", "start_date": str(test_date.date())}
    response = api.client.patch(api.prefix + "/jobs/job1", json=data_to_update)
    assert response.status_code == 200
    job2 = response.json
    assert job.get("id") == job2.get("id")
    assert job.get("func") == job2.get("func")
    assert data_to_update.get("args") == job2.get("args")
    assert data_to_update.get("trigger") == job2.get("trigger")
    assert iso_date == job2.get("start_date")
    assert iso_date == job2.get("next_run_time")


def test_update_job_not_found(api: Api) -> None:
    test_date, _ = next_year()
    data_to_update = {"args": [1], "trigger": "cron", "minute": "*/1", "start_date": str(test_date.date())}
    assert api.client.patch(api.prefix + "/jobs/job1", json=data_to_update).status_code == 404


def test_update_invalid_job(api: Api) -> None:
    api.add_job()
    response = api.client.patch(api.prefix + "/jobs/job1", json={"trigger": "invalid_trigger"})
    assert response.status_code == 400  # upstream: 500
    assert response.json["field"] == "trigger"


def test_pause_and_resume_job(api: Api) -> None:
    api.add_job()
    response = api.client.post(api.prefix + "/jobs/job1/pause")
    assert response.status_code == 200 and response.json.get("next_run_time") is None
    response = api.client.post(api.prefix + "/jobs/job1/resume")
    assert response.status_code == 200 and response.json.get("next_run_time") is not None


def test_pause_and_resume_job_not_found(api: Api) -> None:
    assert api.client.post(api.prefix + "/jobs/job1/pause").status_code == 404
    assert api.client.post(api.prefix + "/jobs/job1/resume").status_code == 404


def test_run_job(api: Api) -> None:
    api.add_job()
    response = api.client.post(api.prefix + "/jobs/job1/run")
    assert response.status_code == 200 and response.json.get("next_run_time") is not None


def test_run_job_not_found(api: Api) -> None:
    assert api.client.post(api.prefix + "/jobs/job1/run").status_code == 404


# TestAPIPrefix, TestEndpointPrefix, TestHTTPBasicAuth ---------------------------------------


def test_api_prefix(new_app: Any) -> None:
    api = Api(new_app(), prefix="/api")
    assert api.client.get(api.prefix + "/jobs").status_code == 200


def test_invalid_api_prefix(new_app: Any) -> None:
    api = Api(new_app(), prefix="/api")
    assert api.client.get("/invalidapi/jobs").status_code == 404


def test_endpoint_prefix(new_app: Any) -> None:
    api = Api(new_app(), endpoint_prefix="api.")
    with api.scheduler.app.test_request_context():  # type: ignore[union-attr]
        assert url_for(api.scheduler.endpoint_prefix + "get_scheduler_info")


def test_invalid_endpoint_prefix(new_app: Any) -> None:
    api = Api(new_app(), endpoint_prefix="api.")
    with api.scheduler.app.test_request_context(), pytest.raises(BuildError):  # type: ignore[union-attr]
        url_for("get_scheduler_info")


@pytest.fixture
def basic(new_app: Any) -> Api:
    """Upstream's TestHTTPBasicAuth set-up: auth set as an attribute, the callback after start."""
    app = new_app()
    scheduler = APScheduler()
    scheduler.auth = HTTPBasicAuth()
    scheduler.api_enabled = True
    scheduler.init_app(app)
    scheduler.start()
    scheduler.authenticate(lambda auth: auth["username"] == "test" and auth["password"] == "test")
    api = Api.__new__(Api)
    api.app, api.scheduler, api.client, api.prefix = app, scheduler, app.test_client(), scheduler.api_prefix
    return api


def basic_header(credentials: bytes) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(credentials).decode("ascii")}


def test_valid_credentials(basic: Api) -> None:
    assert basic.client.get(basic.prefix, headers=basic_header(b"test:test")).status_code == 200


@pytest.mark.parametrize(
    "headers",
    [basic_header(b"guest:guest"), {"Authorization": "Basic 1231234"}, {}],
    ids=["invalid_credentials", "invalid_header_format", "missing_credentials"],
)
def test_refused_credentials(basic: Api, headers: dict[str, str]) -> None:
    response = basic.client.get(basic.prefix, headers=headers)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Basic realm="Authentication Required"'
    assert response.is_json  # upstream: the text "Access Denied"


def test_basic_auth_guards_every_route_and_changes_nothing(basic: Api) -> None:
    job = {"id": "job1", "func": JOB1, "trigger": "interval", "minutes": 10}
    assert basic.client.post(basic.prefix + "/jobs", json=job).status_code == 401
    assert basic.client.post(basic.prefix + "/pause").status_code == 401
    assert basic.scheduler.state == STATE_RUNNING
    good = basic_header(b"test:test")
    assert basic.client.get(basic.prefix + "/jobs/job1", headers=good).status_code == 404


# tests/test_scheduler.py: TestScheduler ---------------------------------------------------


def test_running(new_app: Any) -> None:
    scheduler = APScheduler()
    assert not scheduler.running
    with pytest.raises(RuntimeError, match="init_app"):  # upstream starts without an app
        scheduler.start()
    scheduler.init_app(new_app())
    scheduler.start()
    assert scheduler.running


@pytest.mark.parametrize(
    "hosts", [["any_server_name"], []], ids=["with_allowed_hosts", "without_allowed_hosts"]
)
def test_start_with_allowed_hosts(new_app: Any, hosts: list[str]) -> None:
    app = new_app()
    app.config["SCHEDULER_ALLOWED_HOSTS"] = hosts
    scheduler = APScheduler()
    scheduler.init_app(app)
    scheduler.start()
    assert not scheduler.running
    assert app.extensions["jobservice"].elector is None  # it never campaigned for the lease


def test_an_allowed_host_starts(new_app: Any) -> None:
    app = new_app()
    app.config["SCHEDULER_ALLOWED_HOSTS"] = [socket.gethostname().upper()]
    scheduler = APScheduler(app=app)
    scheduler.start()
    assert scheduler.running


def test_settings_changed_after_the_app_was_initialised_are_refused(new_app: Any) -> None:
    """Upstream's setUp initialises the app once (`APScheduler(app=self.app)`) and its
    allowed-hosts cases then change the config and init_app again: each upstream instance
    reads the config anew. Here an app has one Runtime, read at its first init_app, so a
    change made after it would silently not apply: it is refused, naming the key."""
    app = new_app()
    APScheduler(app=app)
    APScheduler().init_app(app)  # nothing changed: the same Runtime
    JobService(app)
    app.config["SCHEDULER_ALLOWED_HOSTS"] = ["any_server_name"]
    app.config["JOBS"] = [{"id": "job1", "func": JOB1, "trigger": "interval", "seconds": 10}]
    with pytest.raises(ConfigError, match="SCHEDULER_ALLOWED_HOSTS, JOBS") as refused:
        APScheduler().init_app(app)
    assert "any_server_name" not in str(refused.value)  # keys only: values may be secrets
    with pytest.raises(ConfigError, match="SCHEDULER_ALLOWED_HOSTS"):
        JobService(app)


def test_shutdown(new_app: Any) -> None:
    scheduler = APScheduler()
    scheduler.init_app(new_app())
    scheduler.start()
    assert scheduler.running
    scheduler.shutdown()
    assert not scheduler.running


def test_load_jobs_from_config(new_app: Any) -> None:
    app = new_app()
    app.config["JOBS"] = [{"id": "job1", "func": JOB1, "trigger": "interval", "seconds": 10}]
    app.config["SCHEDULER_EXECUTORS"] = {"default": {"type": "threadpool"}}
    app.config["SCHEDULER_JOB_DEFAULTS"] = {"coalesce": True}
    app.config["SCHEDULER_TIMEZONE"] = "UTC"
    scheduler = APScheduler()
    scheduler.init_app(app=app)
    scheduler.start()
    assert scheduler.get_job("job1") is not None
    app2 = new_app()
    app2.config["SCHEDULER_JOBSTORES"] = {"default": MemoryJobStore()}  # not shared: refused
    with pytest.raises(ConfigError, match="SCHEDULER_JOBSTORES"):
        APScheduler().init_app(app2)


def test_task_decorator() -> None:
    scheduler = APScheduler()
    scheduler.task("interval", seconds=10, id="job1")(decorated_job)
    assert scheduler.get_job("job1") is not None


def test_task_decorator_refuses_a_nested_function(new_app: Any) -> None:
    scheduler = APScheduler()

    @scheduler.task("interval", seconds=10, id="job1")
    def nested() -> None:
        pass

    scheduler.init_app(new_app())
    with pytest.raises(ConfigError, match="is not a module-level function"):
        scheduler.start()


def test_state_prop(new_app: Any) -> None:
    scheduler = APScheduler()
    scheduler.init_app(new_app())
    scheduler.start()
    assert scheduler.state
    scheduler.shutdown()
    assert not scheduler.state


def test_scheduler_prop(new_app: Any) -> None:
    scheduler = APScheduler()
    scheduler.init_app(new_app())
    scheduler.start()
    assert scheduler.scheduler is not None
    scheduler.shutdown()
    assert not scheduler.running


def test_pause_resume(new_app: Any) -> None:
    scheduler = APScheduler()
    scheduler.init_app(new_app())
    scheduler.start()
    assert scheduler.running
    scheduler.pause()
    assert scheduler.state == 2
    scheduler.resume()
    assert scheduler.state == 1
    scheduler.shutdown()
    assert not scheduler.running


def test_add_listener(new_app: Any) -> None:
    scheduler = APScheduler()
    scheduler.init_app(new_app())
    scheduler.start()
    assert scheduler.running
    scheduler.add_listener(None)  # type: ignore[arg-type]
    scheduler.remove_listener(None)  # type: ignore[arg-type]
    scheduler.shutdown()
    assert not scheduler.running


def test_add_remove_job(new_app: Any) -> None:
    scheduler = APScheduler()
    scheduler.task("interval", seconds=10, id="job1")(decorated_job)
    scheduler.init_app(new_app())
    scheduler.start()
    assert scheduler.get_job("job1") is not None
    scheduler.remove_job("job1")
    assert not scheduler.get_job("job1")
    scheduler.shutdown()
    assert not scheduler.running


def test_add_remove_all_jobs(new_app: Any) -> None:
    scheduler = APScheduler()
    scheduler.task("interval", hours=1, id="job1")(decorated_job)
    scheduler.task("interval", hours=1, id="job2")(decorated_job2)
    scheduler.init_app(new_app())
    scheduler.start()
    jobs = [job for job in scheduler.get_jobs() if not job.id.startswith("jobservice-")]
    assert len(jobs) == 2
    scheduler.remove_all_jobs()
    assert not scheduler.get_job("job1")
    assert not scheduler.get_job("job2")
    scheduler.shutdown()
    assert not scheduler.running


def test_job_to_dict(new_app: Any) -> None:
    # Upstream gives end_date=now, a trigger that never fires: refused here, so a day ahead.
    end = datetime(date.today().year + 1, 1, 1)
    scheduler = APScheduler()
    scheduler.task("interval", hours=1, id="job1", end_date=end, weeks=1, days=1, seconds=99)(decorated_job)
    scheduler.init_app(new_app())
    scheduler.start()
    job = scheduler.get_job("job1")
    assert job is not None
    assert len(utils.job_to_dict(job))
    scheduler.remove_job("job1")
    assert not scheduler.get_job("job1")
    scheduler.shutdown()
    assert not scheduler.running


# Beyond upstream's tests: the rules hold at the Python door -------------------------------------


def test_add_job_refuses_functions_outside_the_job_packages(api: Api) -> None:
    with pytest.raises(ValueError, match="outside the job packages"):
        api.scheduler.add_job(id="pwn", func="os:system", args=["id"])
    import os

    with pytest.raises(ValueError, match="outside the job packages"):
        api.scheduler.add_job(id="pwn", func=os.system, args=["id"])
    assert api.scheduler.get_job("pwn") is None


def test_add_job_takes_a_function_object_and_stores_its_reference(api: Api) -> None:
    job = api.scheduler.add_job(id="obj", func=job1, trigger="interval", minutes=5, args=[3])
    assert job.func_ref == JOB1
    assert api.client.get(api.prefix + "/jobs/obj").json["func"] == JOB1
