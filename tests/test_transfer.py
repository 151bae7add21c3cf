"""Export and import: every job in the API's own form, imported all or none."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flask import Flask
from flask.testing import FlaskClient

from jobservice import create_app
from tests.conftest import close_app, settings
from tests.test_api import snapshot

CRON = {
    "id": "paris",
    "func": "tests.jobfuncs:noop",
    "trigger": "cron",
    "hour": 7,
    "timezone": "Europe/Paris",
    "jitter": 5,
}
EVERY = {"id": "every", "func": "tests.jobfuncs:needs_two", "args": [1, 2], "trigger": "interval", "minutes": 15,
         "start_date": "2026-01-01T00:00:00+00:00", "name": "quarter-hourly", "max_instances": 3}  # fmt: skip
ONCE = {
    "id": "once",
    "func": "tests.jobfuncs:noop",
    "trigger": "date",
    "run_date": "2099-05-01T10:00:00+00:00",
}


def seed(client: FlaskClient) -> None:
    for body in (CRON, EVERY, ONCE):
        assert client.post("/scheduler/jobs", json=body).status_code == 200
    client.post("/scheduler/jobs/once/pause")


def jobs(client: FlaskClient) -> dict[str, dict[str, Any]]:
    """Jobs without the service's own and without last_run, keyed by id."""
    listed = client.get("/scheduler/jobs").json
    return {
        j["id"]: {k: v for k, v in j.items() if k != "last_run"}
        for j in listed
        if j["id"] != "jobservice-maintenance"
    }


def test_export_is_a_file_of_api_job_definitions(client: FlaskClient) -> None:
    seed(client)
    response = client.get("/scheduler/jobs/export")
    assert response.status_code == 200
    assert response.headers["Content-Disposition"].startswith('attachment; filename="jobs-')
    document = response.json
    assert document["version"] == 1 and document["timezone"] == "UTC"
    by_id = {job["id"]: job for job in document["jobs"]}
    assert set(by_id) == {"paris", "every", "once"}
    assert by_id["paris"]["timezone"] == "Europe/Paris" and by_id["paris"]["jitter"] == 5
    assert (
        by_id["every"]["start_date"] == "2026-01-01T00:00:00+00:00" and by_id["every"]["max_instances"] == 3
    )
    assert by_id["once"]["next_run_time"] is None  # paused
    assert "next_run_time" not in by_id["every"]


def test_round_trip_into_another_database(client: FlaskClient, tmp_path: Path) -> None:
    seed(client)
    exported = client.get("/scheduler/jobs/export").get_data()
    other = create_app(settings(f"sqlite:///{tmp_path}/other.sqlite3"))
    try:
        target = other.test_client()
        upload = {"file": (io.BytesIO(exported), "jobs.json")}
        response = target.post("/scheduler/jobs/import", data=upload, content_type="multipart/form-data")
        assert response.status_code == 200 and response.json["imported"] == 3
        assert sorted(response.json["ids"]) == ["every", "once", "paris"]
        imported, original = jobs(target), jobs(client)
        # Jitter draws each fire time anew: the rest must match exactly.
        assert imported["paris"].pop("next_run_time")[:16] == original["paris"].pop("next_run_time")[:16]
        assert imported == original  # next run times, interval anchors, pause and all
    finally:
        close_app(other)


def test_import_accepts_a_json_body_or_a_bare_list(client: FlaskClient) -> None:
    assert client.post("/scheduler/jobs/import", json={"jobs": [CRON]}).json["imported"] == 1
    assert client.post("/scheduler/jobs/import", json=[EVERY, ONCE]).json["ids"] == ["every", "once"]


def test_import_is_all_or_none_with_an_error_per_job(app: Flask, client: FlaskClient) -> None:
    client.post("/scheduler/jobs", json=ONCE)
    before = snapshot(app)
    bad = [
        CRON,
        {**EVERY, "func": "os:system"},
        ONCE,
        {"id": "x", "func": "tests.jobfuncs:noop", "hours": 1},
        CRON,
    ]
    response = client.post("/scheduler/jobs/import", json={"version": 1, "jobs": bad})
    assert response.status_code == 400
    assert "nothing was imported" in response.json["error_message"]
    errors = [(e["index"], e["id"], e["field"]) for e in response.json["errors"]]
    assert errors == [(1, "every", "func"), (2, "once", "id"), (3, "x", "hours"), (4, "paris", "id")]
    assert all(e["error_message"] for e in response.json["errors"])
    assert snapshot(app) == before


def test_conflicts_only_are_409_and_replace_overwrites(client: FlaskClient) -> None:
    client.post("/scheduler/jobs", json={**ONCE, "name": "old"})
    response = client.post("/scheduler/jobs/import", json=[CRON, ONCE])
    assert response.status_code == 409 and response.json["errors"][0]["id"] == "once"
    response = client.post("/scheduler/jobs/import?replace=true", json=[CRON, {**ONCE, "name": "new"}])
    assert response.status_code == 200
    assert jobs(client)["once"]["name"] == "new" and "paris" in jobs(client)


def test_bad_import_requests(client: FlaskClient) -> None:
    cases: list[tuple[dict[str, Any], int, str]] = [
        (
            {"data": b"{not json", "content_type": "application/json"},
            400,
            "the request body is not valid JSON",
        ),
        ({"json": {"version": 2, "jobs": []}}, 400, "version"),
        ({"json": {"jobs": {"id": "x"}}}, 400, "jobs"),
        (
            {"data": {"other": (io.BytesIO(b"[]"), "x.json")}, "content_type": "multipart/form-data"},
            400,
            "file",
        ),
        (
            {"data": {"file": (io.BytesIO(b"nope"), "x.json")}, "content_type": "multipart/form-data"},
            400,
            "file",
        ),
    ]
    for kwargs, status, fragment in cases:
        response = client.post("/scheduler/jobs/import", **kwargs)
        assert response.status_code == status and fragment in json.dumps(response.json), response.json
    assert client.post("/scheduler/jobs/import?replace=maybe", json=[]).json["field"] == "replace"


def test_the_id_export_is_reserved(client: FlaskClient) -> None:
    response = client.post("/scheduler/jobs", json={**ONCE, "id": "export"})
    assert response.status_code == 400 and response.json["field"] == "id"


def test_make_app_fixture_still_has_a_store(make_app: Callable[..., Flask]) -> None:
    assert make_app().test_client().get("/scheduler/jobs/export").json["jobs"] == []
