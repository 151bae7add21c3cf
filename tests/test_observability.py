"""What operators see: log lines, metrics, retention, and no secret anywhere in them."""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pymysql
import pytest
from flask import Flask
from sqlalchemy import func, insert, select

from jobservice import create_app, maintenance, metrics
from jobservice import runs as runs_module
from jobservice.ledger import RunKey
from jobservice.logs import JsonFormatter
from tests.conftest import (
    MARIADB,
    changed_settings,
    close_app,
    finished_runs,
    leading_app,
    mysql_url,
    session,
    settings,
    soon,
    wait_for,
)
from tests.netproxy import TcpProxy
from tests.orm import JobRun

TOKEN = "metrics-token-0123456789abcdef"


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text format (0 if absent)."""
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        match = re.fullmatch(r"([a-z_]+)(?:\{(.*)\})? (\S+)", line)
        if match and match[1] == name and ",".join(sorted((match[2] or "").split(","))) == wanted:
            return float(match[3])
    return 0.0


def scrape(app: Flask, **headers: str) -> str:
    response = app.test_client().get("/metrics", headers=headers)
    assert response.status_code == 200, response.data[:300]
    return response.get_data(as_text=True)


def scrape_until(app: Flask, name: str, **labels: str) -> str:
    """Scrape until the sample is there (outcomes are written a moment after a run)."""

    def scraped() -> str | None:
        text = scrape(app)
        return text if sample(text, name, **labels) else None

    return wait_for(scraped)


# Logs -----------------------------------------------------------------------------------


def test_json_log_lines_carry_the_fields() -> None:
    record = logging.LogRecord("jobservice.executor", logging.INFO, __file__, 1, "Run of %s", ("x",), None)
    record.job_id, record.fence = "x", 7
    line = json.loads(JsonFormatter().format(record))
    assert (
        line["message"] == "Run of x" and line["level"] == "INFO" and line["logger"] == "jobservice.executor"
    )
    assert line["job_id"] == "x" and line["fence"] == 7 and "time" in line and "pid" in line


def test_one_line_per_run_and_per_leadership_change(
    make_app: Callable[..., Flask], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="jobservice")
    app = leading_app(make_app)
    app.test_client().post(
        "/scheduler/jobs", json={"id": "logged", "func": "tests.jobfuncs:noop", "run_date": soon()}
    )
    finished_runs(app, "logged")
    wait_for(lambda: [r for r in caplog.records if getattr(r, "job_id", None) == "logged"])
    [run_line] = [
        r for r in caplog.records if getattr(r, "job_id", None) == "logged" and hasattr(r, "lateness_s")
    ]
    assert run_line.status == "succeeded" and run_line.fence >= 1
    assert run_line.lateness_s >= 0 and run_line.duration_s >= 0
    assert "Run of logged" in run_line.getMessage()
    acquired = [r for r in caplog.records if r.getMessage().startswith("Leadership acquired")]
    assert acquired and acquired[0].fence >= 1


def test_json_format_is_chosen_by_setting(make_app: Callable[..., Flask]) -> None:
    root = logging.getLogger()
    handler = logging.StreamHandler()
    root.addHandler(handler)
    formatters = {h: h.formatter for h in root.handlers}
    try:
        make_app(LOG_FORMAT="json")
        assert isinstance(handler.formatter, JsonFormatter)
    finally:
        root.removeHandler(handler)
        for h, formatter in formatters.items():
            h.setFormatter(formatter)


# Secrets --------------------------------------------------------------------------------


@pytest.fixture
def password_user(mariadb_url: str) -> Iterator[tuple[str, str]]:
    """A MariaDB user with a password, allowed on this test's database only."""
    database = mariadb_url.rsplit("/", 1)[1]
    user, password = f"js_{secrets.token_hex(4)}", f"hunter2-{secrets.token_hex(6)}"
    with pymysql.connect(**MARIADB) as conn, conn.cursor() as cur:
        cur.execute(f"CREATE USER '{user}'@'127.0.0.1' IDENTIFIED BY '{password}'")
        cur.execute(f"GRANT ALL ON `{database}`.* TO '{user}'@'127.0.0.1'")
    yield user, password
    with pymysql.connect(**MARIADB) as conn, conn.cursor() as cur:
        cur.execute(f"DROP USER '{user}'@'127.0.0.1'")


def test_no_token_or_database_password_in_logs_errors_health_or_metrics(
    mariadb_url: str, password_user: tuple[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    user, password = password_user
    proxy = TcpProxy("127.0.0.1", 3306)
    database = mariadb_url.rsplit("/", 1)[1]
    url = mysql_url(database, proxy.port, f"{user}:{password}")
    app = create_app(settings(url, SCHEDULER_API_TOKEN=TOKEN, SCHEDULER_AUTOSTART=True))
    try:
        client = app.test_client()
        auth = {"Authorization": f"Bearer {TOKEN}"}
        seen = [
            client.get("/health").get_data(as_text=True),
            client.get("/metrics", headers=auth).get_data(as_text=True),
        ]
        seen.append(
            client.get("/scheduler", headers={"Authorization": "Bearer wrong-token"}).get_data(as_text=True)
        )
        proxy.cut()  # the database goes away
        for path in ("/health", "/scheduler/jobs", "/scheduler", "/scheduler/runs"):
            response = client.get(path, headers=auth)
            assert response.status_code == 503
            seen.append(response.get_data(as_text=True))
        body = {"id": "x", "func": "tests.jobfuncs:noop", "trigger": "interval", "hours": 1}
        seen.append(client.post("/scheduler/jobs", json=body, headers=auth).get_data(as_text=True))
    finally:
        proxy.restore()
        close_app(app)
        proxy.close()
    logged = "\n".join(logging.Formatter().format(r) for r in caplog.records)
    for text in [*seen, logged]:
        assert password not in text and TOKEN not in text


# Metrics --------------------------------------------------------------------------------


def test_metrics_count_runs_lateness_and_leadership(make_app: Callable[..., Flask]) -> None:
    app = leading_app(make_app)
    job_id = f"m-{secrets.token_hex(3)}"
    before = scrape(app)
    for name, func_ref in ((job_id, "tests.jobfuncs:noop"), (job_id + "-bad", "tests.jobfuncs:fail")):
        app.test_client().post("/scheduler/jobs", json={"id": name, "func": func_ref, "run_date": soon()})
    finished_runs(app, job_id)
    finished_runs(app, job_id + "-bad")
    after = scrape_until(app, "jobservice_runs_total", job_id=job_id + "-bad", status="failed")
    assert sample(after, "jobservice_runs_total", job_id=job_id, status="succeeded") == 1
    for histogram, labels in (
        ("jobservice_run_lateness_seconds_count", {}),
        ("jobservice_run_duration_seconds_count", {"trigger": "scheduled"}),
    ):  # not by job (unbounded label values): both runs of this test are in them
        assert sample(after, histogram, **labels) - sample(before, histogram, **labels) == 2
    assert sample(after, "jobservice_leadership_changes_total", change="acquired") >= sample(
        before, "jobservice_leadership_changes_total", change="acquired"
    )
    assert sample(after, "jobservice_jobs") == 1  # the maintenance job; the date jobs are done
    assert sample(after, "jobservice_leader_fence") >= 1
    assert 0 <= sample(after, "jobservice_seconds_since_last_pass") < 4
    assert re.search(r'^jobservice_leader\{pid="\d+"\} 1\.0$', after, re.M)


def test_refused_claims_are_counted(make_app: Callable[..., Flask]) -> None:
    app = leading_app(make_app)
    job_id = f"dup-{secrets.token_hex(3)}"
    due = datetime.now(UTC) + timedelta(seconds=1)
    with app.app_context(), session(app) as db_session:  # another leader already claimed this fire time
        db_session.execute(
            insert(JobRun).values(
                job_id=job_id, trigger="scheduled", scheduled_at=RunKey(job_id, "scheduled", due).scheduled_at,
                status="succeeded", claim="someone-else", fence=99,
            )
        )  # fmt: skip
        db_session.commit()
    body = {"id": job_id, "func": "tests.jobfuncs:noop", "run_date": due.isoformat()}
    app.test_client().post("/scheduler/jobs", json=body)
    text = scrape_until(app, "jobservice_claims_refused_total", job_id=job_id)
    assert sample(text, "jobservice_claims_refused_total", job_id=job_id) == 1
    with app.app_context(), session(app) as db_session:
        prevented = db_session.execute(select(JobRun.prevented).where(JobRun.job_id == job_id)).scalar_one()
    assert prevented == 1


def test_metrics_need_the_token_when_one_is_set(make_app: Callable[..., Flask]) -> None:
    app = make_app(SCHEDULER_API_TOKEN=TOKEN)
    assert app.test_client().get("/metrics").status_code == 401
    scrape(app, Authorization=f"Bearer {TOKEN}")
    with changed_settings(app, metrics_require_token=False):
        scrape(app)


def test_metrics_can_be_turned_off(make_app: Callable[..., Flask]) -> None:
    assert make_app(JOBSERVICE_METRICS_ENABLED=False).test_client().get("/metrics").status_code == 404


# Retention ------------------------------------------------------------------------------


def add_runs(app: Flask, job_id: str, ages_days: list[float], status: str = "succeeded") -> None:
    now = datetime.now(UTC)
    with app.app_context(), session(app) as db_session:
        db_session.add_all(
            JobRun(
                job_id=job_id,
                trigger="scheduled",
                scheduled_at=now - timedelta(days=age, seconds=n),
                status=status,
            )
            for n, age in enumerate(ages_days)
        )
        db_session.commit()


def count_runs(app: Flask, job_id: str) -> int:
    with app.app_context(), session(app) as db_session:
        return db_session.execute(select(func.count()).where(JobRun.job_id == job_id)).scalar_one()


def test_maintenance_purges_by_age_and_by_count_per_job(make_app: Callable[..., Flask]) -> None:
    app = make_app(JOBSERVICE_RUN_RETENTION_DAYS=30, JOBSERVICE_RUN_RETENTION_PER_JOB=5)
    add_runs(app, "old", [40, 35, 1])
    add_runs(app, "busy", [0.01] * 8)
    add_runs(app, "running", [45], status="running")  # never purged while it runs
    with app.app_context():
        removed = maintenance.purge_run_history()
    assert removed == {"by_age": 2, "by_count": 3}
    assert (count_runs(app, "old"), count_runs(app, "busy"), count_runs(app, "running")) == (1, 5, 1)
    newest = app.test_client().get("/scheduler/jobs/busy/runs").json
    assert len(newest) == 5 and newest == sorted(newest, key=lambda r: r["id"], reverse=True)


def test_a_large_purge_rests_between_batches(
    make_app: Callable[..., Flask], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A purge of a million old runs, back to back, starved the leader's passes (S7): it
    deletes a batch, then rests as long as that batch took (at most PURGE_MAX_PAUSE_S)."""
    monkeypatch.setattr(runs_module, "PURGE_BATCH", 10)
    rests: list[float] = []
    monkeypatch.setattr(runs_module, "_rest", rests.append)
    app = make_app(JOBSERVICE_RUN_RETENTION_DAYS=30)
    add_runs(app, "old", [40] * 25)
    with app.app_context():
        assert runs_module.purge_runs() == 25
    assert len(rests) == 3  # after each of the three batches (10, 10, 5)
    assert all(0 < rest <= runs_module.PURGE_MAX_PAUSE_S for rest in rests)


def test_maintenance_job_is_declared_by_the_service(make_app: Callable[..., Flask]) -> None:
    app = make_app(SCHEDULER_AUTOSTART=True)
    job = app.test_client().get(f"/scheduler/jobs/{maintenance.JOB_ID}").json
    assert job["func"] == "jobservice.maintenance:purge_run_history" and job["minutes"] == 10


def test_example_report_job_counts_yesterdays_runs(make_app: Callable[..., Flask]) -> None:
    from jobs.reports import daily_run_summary

    app = make_app()
    midnight = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    rows = [("a", midnight - timedelta(hours=12), "succeeded"), ("b", midnight - timedelta(hours=1), "succeeded"),
            ("c", midnight - timedelta(hours=2), "failed"), ("d", midnight - timedelta(hours=30), "failed"),
            ("e", midnight + timedelta(minutes=1), "failed")]  # fmt: skip
    with app.app_context(), session(app) as db_session:
        db_session.add_all(
            JobRun(job_id=j, trigger="scheduled", scheduled_at=at, status=st) for j, at, st in rows
        )
        db_session.commit()
        assert daily_run_summary() == {"succeeded": 2, "failed": 1}


def test_dead_processes_live_gauges_are_dropped_once_without_a_race(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Workers starting together find the same dead files; whoever removes one second
    must not fail (a worker failing to boot stops its whole gunicorn master)."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    alive = os.getpid()
    for pid in (dead.pid, alive):
        for mode in ("liveall", "livesum"):
            (tmp_path / f"gauge_{mode}_{pid}.db").write_bytes(b"")
    (tmp_path / "counter_123.db").write_bytes(b"")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    monkeypatch.setattr(metrics, "_tidied", False)
    monkeypatch.setattr(metrics.atexit, "register", lambda *_: None)

    found = sorted(tmp_path.glob(f"gauge_live*_{dead.pid}.db"))
    found[0].unlink()  # another worker got there first
    metrics.drop_files(found)
    assert not list(tmp_path.glob(f"gauge_live*_{dead.pid}.db"))

    (tmp_path / f"gauge_liveall_{dead.pid}.db").write_bytes(b"")
    metrics.forget_dead_processes()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "counter_123.db", f"gauge_liveall_{alive}.db", f"gauge_livesum_{alive}.db",
    ]  # fmt: skip


def test_metrics_answer_during_a_database_outage(proxied_app: tuple[Flask, TcpProxy]) -> None:
    """The outage itself must show: what cannot be read is absent, database_up says why."""
    app, proxy = proxied_app
    assert sample(scrape(app), "jobservice_database_up") == 1
    proxy.cut()
    response = app.test_client().get("/metrics")
    assert response.status_code == 200
    text = response.get_data(as_text=True)
    assert re.search(r"^jobservice_database_up 0\.0$", text, re.M)
    assert not re.search(r"^jobservice_jobs ", text, re.M)  # unknown, not a stale zero
    assert re.search(r"^jobservice_leadership_changes_total|^# HELP jobservice_runs_total", text, re.M)
    proxy.restore()
    wait_for(lambda: sample(scrape(app), "jobservice_database_up") == 1)


def test_metrics_answer_during_a_redis_outage(make_app: Callable[..., Flask]) -> None:
    from tests.cluster import free_port

    app = make_app(JOBSERVICE_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    response = app.test_client().get("/metrics")
    assert response.status_code == 200
    text = response.get_data(as_text=True)
    assert re.search(r"^jobservice_redis_up 0\.0$", text, re.M)
    assert sample(text, "jobservice_database_up") == 1


METRICS_DIR_PROBE = """
import os
from jobservice import metrics

class NoCluster:
    def collect(self):
        return iter(())

print(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
metrics.run_ended("probe", "succeeded", "manual", None, 0.001)
payload, _ = metrics.exposition(NoCluster())
print('jobservice_runs_total{job_id="probe",status="succeeded"} 1.0' in payload.decode())
"""


def _metrics_dir_in(cwd: Path) -> list[str]:
    """What a fresh process started in `cwd`, with no PROMETHEUS_MULTIPROC_DIR, uses and shows."""
    env = {key: value for key, value in os.environ.items() if key != "PROMETHEUS_MULTIPROC_DIR"}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parent.parent)
    done = subprocess.run(
        [sys.executable, "-c", METRICS_DIR_PROBE],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.split()


def test_metrics_files_default_to_instance_prometheus_where_the_app_starts(tmp_path: Path) -> None:
    """As the README's configuration table says: not inside the installed package."""
    assert _metrics_dir_in(tmp_path) == [str(tmp_path / "instance" / "prometheus"), "True"]
    assert (tmp_path / "instance" / "prometheus").is_dir()


def test_without_a_directory_each_process_keeps_its_own_metrics(tmp_path: Path) -> None:
    (tmp_path / "instance").write_text("a file where the directory would go")
    assert _metrics_dir_in(tmp_path) == ["None", "True"]
