"""The run options (timeout_s, retries, retry_delay_s, queue) through every door: the REST API
(test_retries), the CLI, the Python interface, JOBS in the config and an import take the
same fields, refuse the same bad values naming the field, and store nothing when they refuse."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from flask import Flask

from config import ConfigError
from jobservice.options import options_of

GOOD = {"id": "opts", "func": "tests.jobfuncs:noop", "trigger": "interval", "hours": 1, "retries": 2,
        "retry_delay_s": 1.5, "timeout_s": 30, "queue": "heavy"}  # fmt: skip
BAD = {**GOOD, "retries": -1}
STORED = {"retries": 2, "retry_delay_s": 1.5, "timeout_s": 30, "queue": "heavy"}


def stored(app: Flask) -> dict | None:
    job = app.extensions["jobservice"].store.lookup_job("opts")
    return None if job is None else options_of(job)


def test_cli(app: Flask) -> None:
    runner = app.test_cli_runner()
    refused = runner.invoke(args=["jobservice", "jobs", "add", json.dumps(BAD)])
    assert refused.exit_code == 2 and "retries" in refused.output and stored(app) is None
    added = runner.invoke(args=["jobservice", "jobs", "add", "--json", json.dumps(GOOD)])
    assert added.exit_code == 0, added.output
    assert json.loads(added.output)["retries"] == 2 and stored(app) == STORED


def test_python_interface(app: Flask) -> None:
    scheduler = app.apscheduler  # type: ignore[attr-defined]
    scheduler.start()
    with pytest.raises(ValueError, match="retries"):
        scheduler.add_job(**BAD)
    assert stored(app) is None
    scheduler.add_job(**GOOD)
    assert stored(app) == STORED
    scheduler.modify_job("opts", retries=5)
    assert stored(app)["retries"] == 5


def test_jobs_in_the_config(make_app: Callable[..., Flask]) -> None:
    with pytest.raises(ConfigError, match="retries"):
        make_app(JOBS=[BAD])
    app = make_app(JOBS=[GOOD])
    app.extensions["jobservice"].reconcile()
    assert stored(app) == STORED


def test_import_and_export(app: Flask) -> None:
    client = app.test_client()
    refused = client.post("/scheduler/jobs/import", json={"jobs": [BAD]})
    assert refused.status_code == 400 and "retries" in json.dumps(refused.json) and stored(app) is None
    assert client.post("/scheduler/jobs/import", json={"jobs": [GOOD]}).status_code == 200
    exported = client.get("/scheduler/jobs/export").json["jobs"]
    assert {k: exported[0][k] for k in STORED} == STORED  # an export carries them back
