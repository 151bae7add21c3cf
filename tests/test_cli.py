"""The command line: same store and rules as the API, exit codes scripts can trust."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import Result
from flask import Flask

from tests.conftest import finished_runs, leading_app, wait_for

ROOT = Path(__file__).resolve().parent.parent
JOB = {"id": "nightly", "func": "tests.jobfuncs:noop", "trigger": "cron", "hour": 2, "minute": 30}


def cli(app: Flask, *args: str, input: str | None = None) -> Result:
    return app.test_cli_runner().invoke(args=list(args), input=input)


def test_add_list_show_and_remove(app: Flask) -> None:
    added = cli(app, "jobs", "add", json.dumps(JOB))
    assert added.exit_code == 0, added.output
    assert "next_run_time" in added.output and "02:30:00" in added.output
    listed = cli(app, "jobs", "list")
    header, row = listed.output.splitlines()
    assert header.split() == ["ID", "FUNC", "TRIGGER", "NEXT", "RUN", "LAST", "RUN"]
    assert row.startswith("nightly") and "cron[hour='2', minute='30']" in row
    as_json = json.loads(cli(app, "jobs", "list", "--json").output)
    assert as_json == app.test_client().get("/scheduler/jobs").json  # the API's JSON
    shown = json.loads(cli(app, "jobs", "show", "nightly", "--json").output)
    assert shown["minute"] == "30"
    assert cli(app, "jobs", "remove", "nightly").exit_code == 0
    assert app.test_client().get("/scheduler/jobs/nightly").status_code == 404


def test_pause_resume_and_run_now(app: Flask) -> None:
    cli(app, "jobs", "add", json.dumps(JOB))
    assert cli(app, "jobs", "pause", "nightly").exit_code == 0
    assert app.test_client().get("/scheduler/jobs/nightly").json["next_run_time"] is None
    assert cli(app, "jobs", "resume", "nightly").exit_code == 0
    assert app.test_client().get("/scheduler/jobs/nightly").json["next_run_time"] is not None
    assert cli(app, "jobs", "run", "nightly").exit_code == 0
    [run] = app.test_client().get("/scheduler/jobs/nightly/runs").json
    assert run["trigger"] == "manual"
    runs = cli(app, "runs", "--job", "nightly")
    assert runs.exit_code == 0 and "manual" in runs.output and "running" in runs.output


@pytest.mark.parametrize(
    ("args", "code", "fragment"),
    [
        (["jobs", "add", json.dumps({**JOB, "func": "os:system"})], 2, "outside the job packages"),
        (["jobs", "add", "{not json"], 2, "not valid JSON"),
        (["jobs", "add", json.dumps({**JOB, "minute": 99})], 2, "minute"),
        (["jobs", "show", "ghost"], 3, "ghost"),
        (["jobs", "pause", "ghost"], 3, "ghost"),
        (["jobs", "run", "ghost"], 3, "ghost"),
        (["jobs", "remove", "ghost"], 3, "ghost"),
        (["runs", "--status", "exploded"], 2, "exploded"),
        (["jobs", "list", "--limit", "0"], 2, "limit"),
    ],
)
def test_refusals_have_exit_codes_and_change_nothing(
    app: Flask, args: list[str], code: int, fragment: str
) -> None:
    before = app.test_client().get("/scheduler/jobs").json
    result = cli(app, *args)
    assert result.exit_code == code, result.output
    assert fragment in result.output
    assert app.test_client().get("/scheduler/jobs").json == before


def test_duplicate_id_is_exit_4(app: Flask) -> None:
    cli(app, "jobs", "add", json.dumps(JOB))
    assert cli(app, "jobs", "add", json.dumps(JOB)).exit_code == 4


def test_add_from_a_file_and_from_stdin(app: Flask, tmp_path: Path) -> None:
    path = tmp_path / "job.json"
    path.write_text(json.dumps(JOB))
    assert cli(app, "jobs", "add", f"@{path}").exit_code == 0
    assert cli(app, "jobs", "add", "-", input=json.dumps({**JOB, "id": "second"})).exit_code == 0
    assert {j["id"] for j in app.test_client().get("/scheduler/jobs").json} == {"nightly", "second"}


def test_export_and_import(app: Flask, tmp_path: Path) -> None:
    cli(app, "jobs", "add", json.dumps(JOB))
    path = tmp_path / "jobs.json"
    assert cli(app, "jobs", "export", "-o", str(path)).exit_code == 0
    assert json.loads(path.read_text())["jobs"][0]["id"] == "nightly"
    refused = cli(app, "jobs", "import", str(path))
    assert refused.exit_code == 4 and "already exists" in refused.output
    cli(app, "jobs", "remove", "nightly")
    imported = cli(app, "jobs", "import", str(path))
    assert imported.exit_code == 0 and "imported 1 jobs" in imported.output


def test_scheduler_status_and_cluster_pause(app: Flask) -> None:
    status = json.loads(cli(app, "scheduler", "status", "--json").output)
    assert status["state"] == "running" and status["leader"] is None
    assert cli(app, "scheduler", "pause").exit_code == 0
    assert json.loads(cli(app, "scheduler", "status", "--json").output)["state"] == "paused"
    assert "state" in cli(app, "scheduler", "status").output
    assert cli(app, "scheduler", "resume").exit_code == 0


def test_a_real_cli_process_wakes_the_leader_and_never_leads(
    make_app: Callable[..., Flask], database_url: str, redis_url: str
) -> None:
    app = leading_app(make_app, JOBSERVICE_REDIS_URL=redis_url)
    leader = app.extensions["jobservice"].leader()
    run_date = (datetime.now(UTC) + timedelta(seconds=1)).isoformat()
    body = {"id": "from-cli", "func": "tests.jobfuncs:record", "run_date": run_date}
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "JOB_PACKAGES": "jobs,tests.jobfuncs",
    }
    flask = [sys.executable, "-m", "flask", "--app", "run"]
    added = subprocess.run(
        [*flask, "jobs", "add", json.dumps(body)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert added.returncode == 0, added.stderr
    [run] = finished_runs(app, "from-cli")
    assert run.status == "succeeded" and run.worker == leader.worker
    assert (run.started_at - run.scheduled_at).total_seconds() < 0.5  # woken at once, not at a timer
    status = subprocess.run(
        [*flask, "scheduler", "status", "--json"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert json.loads(status.stdout)["leader"] == leader.worker
    missing = subprocess.run(
        [*flask, "jobs", "show", "ghost"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert missing.returncode == 3 and "ghost" in missing.stderr
    wait_for(lambda: app.extensions["jobservice"].leader().worker == leader.worker)
