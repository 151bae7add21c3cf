"""Run history API: newest first, filters, a cursor that stays right while runs arrive."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import event

from jobservice import create_app
from tests.conftest import close_app, engine, session, settings
from tests.orm import JobRun

BASE = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def add_runs(app: Flask, job_id: str, statuses: list[str], start: int = 0) -> None:
    """Rows as the executor leaves them: scheduled a minute apart, started and finished."""
    with app.app_context(), session(app) as db_session:
        for n, status in enumerate(statuses, start=start):
            at = BASE + timedelta(minutes=n)
            finished = at + timedelta(milliseconds=250)
            db_session.add(
                JobRun(
                    job_id=job_id,
                    trigger="scheduled",
                    scheduled_at=at,
                    status=status,
                    fence=3,
                    worker="host:1",
                    started_at=at if status != "missed" else None,
                    finished_at=finished,
                    error="RuntimeError: boom" if status == "failed" else None,
                )
            )
        db_session.commit()


def ids(response: object) -> list[int]:
    return [run["id"] for run in response.json]  # type: ignore[attr-defined]


def test_runs_are_listed_newest_first_with_every_field(app: Flask, client: FlaskClient) -> None:
    add_runs(app, "report", ["succeeded", "failed", "missed"])
    runs = client.get("/scheduler/jobs/report/runs").json
    assert [run["status"] for run in runs] == ["missed", "failed", "succeeded"]
    failed = runs[1]
    assert set(failed) == {
        "id", "job_id", "trigger", "attempt", "status", "scheduled_at", "not_before", "started_at",
        "finished_at", "duration_ms", "error", "worker", "fence", "prevented",
    }  # fmt: skip
    assert (failed["attempt"], failed["not_before"]) == (1, None)
    assert failed["duration_ms"] == 250.0 and failed["error"] == "RuntimeError: boom"
    assert failed["scheduled_at"] == "2026-11-20T12:01:00+00:00"
    assert (failed["worker"], failed["fence"], failed["trigger"]) == ("host:1", 3, "scheduled")
    assert runs[0]["duration_ms"] is None  # a missed run never started


def test_filters_by_job_status_and_time_window(app: Flask, client: FlaskClient) -> None:
    add_runs(app, "a", ["succeeded", "failed", "succeeded", "failed"])
    add_runs(app, "b", ["failed"], start=10)
    assert len(client.get("/scheduler/runs").json) == 5
    assert {r["job_id"] for r in client.get("/scheduler/runs?status=failed").json} == {"a", "b"}
    assert len(client.get("/scheduler/runs?job_id=a&status=failed").json) == 2
    window = client.get("/scheduler/runs?since=2026-11-20T12:01:00Z&until=2026-11-20T12:03:00Z").json
    assert [r["scheduled_at"][11:16] for r in window] == ["12:02", "12:01"]


def test_cursor_pages_stay_correct_while_new_runs_arrive(app: Flask, client: FlaskClient) -> None:
    add_runs(app, "a", ["succeeded"] * 5)
    first = client.get("/scheduler/runs?limit=2")
    assert 'rel="next"' in first.headers["Link"]
    add_runs(app, "a", ["succeeded"] * 3, start=100)  # arrive between two page requests
    next_url = first.headers["Link"].split(">")[0].lstrip("<")
    second = client.get(next_url)
    third = client.get(second.headers["Link"].split(">")[0].lstrip("<"))
    seen = ids(first) + ids(second) + ids(third)
    assert len(seen) == len(set(seen)) == 5  # no repeats, nothing skipped
    assert seen == sorted(seen, reverse=True)


def test_runs_of_a_removed_job_remain_visible(app: Flask, client: FlaskClient) -> None:
    add_runs(app, "gone", ["succeeded"])
    assert client.get("/scheduler/jobs/gone").status_code == 404
    assert len(client.get("/scheduler/jobs/gone/runs").json) == 1


def test_job_json_gains_last_run(app: Flask, client: FlaskClient) -> None:
    body = {"id": "report", "func": "tests.jobfuncs:noop", "trigger": "interval", "hours": 1}
    assert client.post("/scheduler/jobs", json=body).json["last_run"] is None
    add_runs(app, "report", ["succeeded", "failed"])
    job = client.get("/scheduler/jobs/report").json
    assert job["last_run"]["status"] == "failed"
    assert job["last_run"]["scheduled_at"] == "2026-11-20T12:01:00+00:00"
    assert client.get("/scheduler/jobs").json[0]["last_run"]["status"] == "failed"


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("status=exploded", "status"),
        ("since=yesterday", "since"),
        ("until=2026-13-01", "until"),
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("cursor=abc", "cursor"),
        ("cursor=0", "cursor"),
    ],
)
def test_bad_history_parameters_are_400(client: FlaskClient, query: str, field: str) -> None:
    response = client.get(f"/scheduler/runs?{query}")
    assert response.status_code == 400 and response.json["field"] == field


def test_added_job_has_no_last_run_even_under_a_reused_id(app: Flask, client: FlaskClient) -> None:
    """The POST answers for the job it created (never run); the id's history stays readable."""
    add_runs(app, "again", ["failed"])
    body = {"id": "again", "func": "tests.jobfuncs:noop", "trigger": "interval", "hours": 1}
    assert client.post("/scheduler/jobs", json=body).json["last_run"] is None
    assert client.get("/scheduler/jobs/again").json["last_run"]["status"] == "failed"


def test_a_jobs_runs_and_the_unstarted_runs_are_read_through_their_indexes(mariadb_url: str) -> None:
    """On a history of millions MariaDB's optimizer walked the primary key for these two
    (ORDER BY id with LIMIT): a job's runs page, and the leader's look for unstarted runs in
    every pass (S7). Both name their index, and MariaDB reads them through it."""
    app = create_app(settings(mariadb_url))
    statements: list[tuple[str, Any]] = []

    def note(conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool) -> None:
        if "FORCE INDEX" in statement:
            statements.append((statement, params))

    try:
        add_runs(app, "busy", ["succeeded"] * 30)
        add_runs(app, "quiet", ["failed"] * 3, start=30)
        event.listen(engine(app), "before_cursor_execute", note)
        assert len(app.test_client().get("/scheduler/jobs/quiet/runs").json) == 3
        assert app.extensions["jobservice"].ledger.pending(fence=1) == []
        event.remove(engine(app), "before_cursor_execute", note)
        raw = engine(app).raw_connection()
        try:
            keys = []
            for statement, params in statements:
                cursor = raw.cursor()
                cursor.execute("EXPLAIN " + statement, params)
                names = [d[0] for d in cursor.description]
                keys.append(dict(zip(names, cursor.fetchone(), strict=True))["key"])
        finally:
            raw.close()
        assert keys == ["ix_jobservice_runs_job_id_id", "ix_jobservice_runs_status_started_at"]
    finally:
        close_app(app)
