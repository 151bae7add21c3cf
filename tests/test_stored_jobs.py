"""What is in the store is safe: the service's own jobs cannot be taken away, and a row
that cannot be read back never breaks the API, the pass or the export."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import insert, select

from jobservice.errors import ProtectedJob
from jobservice.models import jobs_table
from tests.conftest import engine, finished_runs, leading_app, soon

MAINTENANCE = "jobservice-maintenance"
NOOP = {"func": "tests.jobfuncs:noop", "trigger": "interval", "hours": 1}


@pytest.fixture
def declared(app: Flask) -> Flask:
    """The app with its declared jobs in the store, as a serving process has them."""
    with app.app_context():
        app.extensions["jobservice"].reconcile()
    return app


# The service's own jobs ---------------------------------------------------------------


def test_the_service_job_can_be_paused_and_resumed_not_changed_or_removed(declared: Flask) -> None:
    client = declared.test_client()
    original = client.get(f"/scheduler/jobs/{MAINTENANCE}").json
    assert client.post(f"/scheduler/jobs/{MAINTENANCE}/pause").json["next_run_time"] is None
    assert client.post(f"/scheduler/jobs/{MAINTENANCE}/resume").json["next_run_time"] is not None
    for method, body in (
        ("DELETE", None),
        ("PATCH", {"minutes": 1, "trigger": "interval"}),
        ("PATCH", {"args": []}),
    ):
        response = client.open(f"/scheduler/jobs/{MAINTENANCE}", method=method, json=body)
        assert response.status_code == 403, (method, body)
        assert "service's own jobs" in response.json["error_message"]
    after = client.get(f"/scheduler/jobs/{MAINTENANCE}").json
    assert {k: v for k, v in after.items() if k != "next_run_time"} == {
        k: v for k, v in original.items() if k != "next_run_time"
    }


def test_import_cannot_replace_the_service_job(declared: Flask) -> None:
    client = declared.test_client()
    body = {"jobs": [{"id": MAINTENANCE, "func": "tests.jobfuncs:noop", "trigger": "interval", "hours": 1}]}
    response = client.post("/scheduler/jobs/import?replace=true", json=body)
    assert response.status_code == 400
    [error] = response.json["errors"]
    assert error["field"] == "id" and "reserved" in error["error_message"]
    assert (
        client.get(f"/scheduler/jobs/{MAINTENANCE}").json["func"]
        == "jobservice.maintenance:purge_run_history"
    )


def test_the_python_interface_cannot_remove_it_either(declared: Flask) -> None:
    scheduler = declared.apscheduler  # type: ignore[attr-defined]
    with declared.app_context():
        with pytest.raises(ProtectedJob):
            scheduler.remove_job(MAINTENANCE)
        with pytest.raises(ProtectedJob):
            scheduler.modify_job(MAINTENANCE, name="mine")
        scheduler.add_job(id="mine", **NOOP)
        scheduler.remove_all_jobs()
        assert [job.id for job in scheduler.get_jobs()] == [MAINTENANCE]


def test_the_cli_refuses_with_exit_5(declared: Flask) -> None:
    result = declared.test_cli_runner().invoke(args=["jobs", "remove", MAINTENANCE])
    assert result.exit_code == 5 and "service's own jobs" in result.output
    assert declared.test_cli_runner().invoke(args=["jobs", "pause", MAINTENANCE]).exit_code == 0


# Rows that cannot be read back ---------------------------------------------------------


def put_row(app: Flask, job_id: str, next_run_time: float | None, job_state: bytes) -> None:
    """Write a row as older code, or a hand, could have left it."""
    with engine(app).begin() as conn:
        conn.execute(
            insert(jobs_table).values(id=job_id, next_run_time=next_run_time, job_state=job_state, version=1)
        )


def valid_state(client: FlaskClient, job_id: str) -> bytes:
    client.post("/scheduler/jobs", json={"id": job_id, **NOOP})
    app = client.application
    with engine(app).begin() as conn:
        state = conn.execute(select(jobs_table.c.job_state).where(jobs_table.c.id == job_id)).scalar_one()
        conn.execute(jobs_table.delete().where(jobs_table.c.id == job_id))
    return state


@pytest.fixture
def broken(app: Flask) -> Flask:
    """One row that does not unpickle, one due in year 10000 (what a date of
    9999-12-31T23:59:59.999999 became), and a good job."""
    client = app.test_client()
    state = valid_state(client, "template")
    put_row(app, "garbage", 1.0, b"not a pickle")
    put_row(app, "year-10000", 253402300800.0, state)
    put_row(app, "unknown-class", None, b"cno_such_module\nThing\n)\x81.")  # a class that is gone
    client.post("/scheduler/jobs", json={"id": "good", **NOOP})
    return app


def test_unreadable_rows_are_listed_with_their_error(broken: Flask) -> None:
    client = broken.test_client()
    response = client.get("/scheduler/jobs")
    assert response.status_code == 200
    by_id = {job["id"]: job for job in response.json}
    assert set(by_id) == {"garbage", "year-10000", "unknown-class", "good"}
    for job_id in ("garbage", "year-10000", "unknown-class"):
        assert by_id[job_id]["error"].startswith("this job cannot be read"), by_id[job_id]
        assert "func" not in by_id[job_id]
    assert "error" not in by_id["good"]
    assert client.get("/scheduler/jobs?limit=10").status_code == 200
    assert client.get("/scheduler/jobs/year-10000").json["error"]


def test_an_unreadable_row_can_be_removed_not_changed(broken: Flask) -> None:
    client = broken.test_client()
    for method, path, body in (
        ("PATCH", "/scheduler/jobs/garbage", {"name": "x"}),
        ("POST", "/scheduler/jobs/garbage/pause", None),
        ("POST", "/scheduler/jobs/garbage/run", None),
    ):
        response = client.open(path, method=method, json=body)
        assert response.status_code == 409, (path, response.json)
        assert "cannot be read" in response.json["error_message"]
    assert client.delete("/scheduler/jobs/garbage").status_code == 204
    assert client.get("/scheduler/jobs/garbage").status_code == 404


def test_export_lists_unreadable_rows_apart(broken: Flask) -> None:
    document = json.loads(broken.test_client().get("/scheduler/jobs/export").get_data())
    assert [job["id"] for job in document["jobs"]] == ["good"]
    assert sorted(entry["id"] for entry in document["unreadable"]) == [
        "garbage",
        "unknown-class",
        "year-10000",
    ]


def test_the_leader_runs_other_jobs_past_unreadable_due_rows(make_app: Callable[..., Flask]) -> None:
    app = leading_app(make_app)
    client = app.test_client()
    put_row(app, "garbage", 1.0, b"not a pickle")  # due since 1970, for ever
    client.post(
        "/scheduler/jobs", json={"id": "later", "func": "tests.jobfuncs:record", "run_date": soon(0.5)}
    )
    [run] = finished_runs(app, "later")
    assert run.status == "succeeded"
    service = app.extensions["jobservice"]
    # It waits for the next real fire time, not for the row it cannot read (no busy loop).
    assert service.store.get_next_run_time() is None or service.store.get_next_run_time().year > 1970
    assert client.get("/health").json["status"] == "ok"


def test_cli_lists_an_unreadable_row(broken: Flask) -> None:
    result = broken.test_cli_runner().invoke(args=["jobs", "list"])
    assert result.exit_code == 0
    assert any(line.startswith("garbage") and "cannot be read" in line for line in result.output.splitlines())
