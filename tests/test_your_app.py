"""An app of its own with jobservice added, as README's "Add it to your own app" writes it.

The files are taken from the README's code blocks (`# myapp/...`, `# wsgi.py`) as they are
written, so the README cannot drift from what works. The app has its own Flask-SQLAlchemy
`db`, models and (in one test) Flask-Migrate migrations; its job reads and writes through
its own `db.session` and `current_app`.
"""

from __future__ import annotations

import importlib
import re
import secrets
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import create_engine, inspect, select, text

from tests.cluster import Server, free_port
from tests.conftest import close_app, wait_for

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
BLOCK = re.compile(r"```python\n# (?P<path>(?:myapp/)?[\w]+\.py)\n(?P<code>.*?)```", re.S)


def readme_files() -> dict[str, str]:
    """The README's files of the example app, path -> source."""
    files = {m["path"]: m["code"] for m in BLOCK.finditer(README.read_text())}
    assert {"myapp/__init__.py", "myapp/models.py", "myapp/tasks.py", "myapp/views.py", "wsgi.py"} <= set(
        files
    )
    return files


def write_app(directory: Path) -> Path:
    for path, code in readme_files().items():
        target = directory / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(code)
    return directory


@pytest.fixture
def myapp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """The README's `myapp` package, importable for this test only."""
    monkeypatch.syspath_prepend(str(write_app(tmp_path / "src")))
    for name in [n for n in sys.modules if n == "myapp" or n.startswith("myapp.")]:
        del sys.modules[name]
    module = importlib.import_module("myapp")
    importlib.import_module("myapp.models")
    yield module
    for name in [n for n in sys.modules if n == "myapp" or n.startswith("myapp.")]:
        del sys.modules[name]


@pytest.fixture
def your_app(myapp: ModuleType, database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Flask]:
    monkeypatch.setenv("FLASK_SQLALCHEMY_DATABASE_URI", database_url)
    monkeypatch.setenv("FLASK_CURRENCY", "CNY")
    app = myapp.create_app()
    with app.app_context():
        myapp.db.create_all()  # the app's own tables; jobservice migrated its own at init_app
    yield app
    close_app(app)
    with app.app_context():
        myapp.db.engine.dispose()


def test_the_readme_app_runs_its_job_in_its_own_context(your_app: Flask, myapp: ModuleType) -> None:
    models = sys.modules["myapp.models"]
    with your_app.app_context():
        myapp.db.session.add_all(
            [models.Order(region="emea", amount=5), models.Order(region="emea", amount=7)]
        )
        myapp.db.session.commit()
    runtime = your_app.extensions["jobservice"]
    assert runtime.settings.job_packages == ("myapp", "jobs")  # from app.import_name
    wait_for(lambda: runtime.role == "leader")
    scheduler = your_app.apscheduler  # type: ignore[attr-defined]
    scheduler.add_job(id="emea", func="myapp.tasks:region_totals", args=["emea"], trigger="interval", hours=1)
    scheduler.run_job("emea")

    def total() -> Any:
        with your_app.app_context():
            return myapp.db.session.execute(select(models.Total)).scalar_one_or_none()

    row = wait_for(total)
    assert (row.region, row.amount, row.currency) == ("emea", 12, "CNY")  # its db.session, its config
    history = your_app.test_client().get("/totals/emea").json  # its own blueprint reads it back
    assert [(t["amount"], t["currency"]) for t in history] == [(12, "CNY")]
    with your_app.app_context():
        assert "jobservice_runs" in inspect(myapp.db.engine).get_table_names()  # beside the app's own


def test_jobservice_adds_no_routes_and_takes_no_slot_unless_asked(your_app: Flask, myapp: ModuleType) -> None:
    rules = {rule.rule for rule in your_app.url_map.iter_rules()}
    assert rules == {
        "/static/<path:filename>",
        "/totals/<region>",
    }  # the app's own: no API, /health, /metrics
    assert your_app.extensions["sqlalchemy"] is myapp.db  # the app's own Flask-SQLAlchemy
    assert "migrate" not in your_app.extensions
    assert your_app.test_client().get("/nowhere").mimetype == "text/html"  # its error pages are its own
    commands = your_app.cli.list_commands(None)  # type: ignore[arg-type]
    assert "jobservice" in commands and "db" not in commands and "jobs" not in commands


def test_without_a_factory(myapp: ModuleType, database_url: str) -> None:
    from jobservice import JobService

    app = Flask("myapp")
    app.config.update(SQLALCHEMY_DATABASE_URI=database_url, SCHEDULER_API_ENABLED=True)
    JobService(app)
    try:
        job = {
            "id": "t",
            "func": "myapp.tasks:region_totals",
            "args": ["emea"],
            "trigger": "interval",
            "hours": 1,
        }
        assert app.test_client().post("/scheduler/jobs", json=job).status_code == 200
        refused = app.test_client().post("/scheduler/jobs", json={**job, "id": "x", "func": "os:system"})
        assert refused.status_code == 400 and refused.json["field"] == "func"
    finally:
        close_app(app)


# Flask-Migrate's own env.py template still calls Flask-SQLAlchemy's deprecated get_engine().
@pytest.mark.filterwarnings("ignore:'get_engine' is deprecated:DeprecationWarning")
def test_the_apps_own_migrations_live_beside_jobservices(
    myapp: ModuleType, database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The app's Flask-Migrate autogenerate, given ignore_jobservice_tables, sees only its own
    tables; both version tables stand side by side."""
    import flask_migrate

    from jobservice import ignore_jobservice_tables

    monkeypatch.setenv("FLASK_SQLALCHEMY_DATABASE_URI", database_url)
    app = myapp.create_app()
    flask_migrate.Migrate(
        app, myapp.db, directory=str(tmp_path / "migrations"), include_name=ignore_jobservice_tables
    )
    try:
        with app.app_context():
            flask_migrate.init(directory=str(tmp_path / "migrations"))
            flask_migrate.migrate(directory=str(tmp_path / "migrations"), message="orders")
            flask_migrate.upgrade(directory=str(tmp_path / "migrations"))
            [revision] = (tmp_path / "migrations" / "versions").glob("*.py")
            source = revision.read_text()
            assert "create_table('order'" in source and "create_table('total'" in source
            assert "jobservice" not in source and "apscheduler_jobs" not in source  # nothing of ours
            tables = set(inspect(myapp.db.engine).get_table_names())
            assert {"alembic_version", "jobservice_alembic_version", "order", "total"} <= tables
    finally:
        close_app(app)
        with app.app_context():
            myapp.db.engine.dispose()


@pytest.mark.processes
@pytest.mark.parametrize("executor", ["threads", "rq"])
def test_under_gunicorn_w_4_on_mariadb_each_fire_time_runs_once(
    tmp_path: Path, mariadb_url: str, redis_url: str, executor: str
) -> None:
    """The done-when of the extension: the README's app, gunicorn -w 4, MariaDB and Redis,
    a 1 s job writing through the app's own db.session: one run per fire time. With rq, the
    runs happen in an RQ worker started as the README says, in the same app's context."""
    app_dir = write_app(tmp_path / "src")
    engine = create_engine(mariadb_url)
    sys.path.insert(0, str(app_dir))
    try:
        for name in [n for n in sys.modules if n == "myapp" or n.startswith("myapp.")]:
            del sys.modules[name]
        myapp = importlib.import_module("myapp")
        importlib.import_module("myapp.models")
        myapp.db.metadata.create_all(engine)
    finally:
        sys.path.remove(str(app_dir))
        for name in [n for n in sys.modules if n == "myapp" or n.startswith("myapp.")]:
            del sys.modules[name]
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO `order` (region, amount) VALUES ('emea', 3), ('emea', 4)"))
    jobs = '[{"id": "emea", "func": "myapp.tasks:region_totals", "args": ["emea"], "trigger": "interval", "seconds": 1}]'
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": f"{app_dir}:{ROOT}",
        "PYTHONUNBUFFERED": "1",
        "FLASK_SQLALCHEMY_DATABASE_URI": mariadb_url,
        "FLASK_JOBSERVICE_REDIS_URL": redis_url,
        "FLASK_JOBSERVICE_HEALTH_ENABLED": "true",
        "FLASK_CURRENCY": "CNY",
        "FLASK_JOBS": jobs,
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prometheus"),
        "FLASK_SCHEDULER_EXECUTOR": executor,
        "FLASK_JOBSERVICE_RQ_QUEUE_PREFIX": f"yourapp-{secrets.token_hex(4)}-",
    }
    (tmp_path / "prometheus").mkdir()
    port = free_port()
    argv = [sys.executable, "-m", "gunicorn", "-w", "4", "--bind", f"127.0.0.1:{port}", "wsgi:app"]
    server = Server("yourapp", argv, env, port, tmp_path / "gunicorn.log", cwd=app_dir).start()
    worker = None
    if executor == "rq":  # as the README starts one: flask --app <your app> jobservice worker
        argv = [sys.executable, "-m", "flask", "--app", "wsgi", "jobservice", "worker"]
        worker = Server("rqworker", argv, env, 0, tmp_path / "rqworker.log", cwd=app_dir).start()
    try:
        server.wait_ready()
        time.sleep(7)
        with engine.connect() as conn:
            totals = conn.execute(text("SELECT fire_time, amount FROM total ORDER BY fire_time")).all()
            statuses = conn.execute(
                text("SELECT status, COUNT(*) FROM jobservice_runs WHERE job_id = 'emea' GROUP BY status")
            ).all()
        assert len(totals) >= 5, server.log()
        assert len({t.fire_time for t in totals}) == len(totals)  # (the table's unique key says so too)
        assert {t.amount for t in totals} == {7}
        status, history = server.get("/totals/emea")  # the app's own blueprint, on any worker
        assert status == 200 and len(history) >= len(totals)
        assert {(t["amount"], t["currency"]) for t in history} == {(7, "CNY")}
        assert dict(statuses).get("failed", 0) == 0, server.log()
        with engine.connect() as conn:
            pids = {int(w.rsplit(":", 1)[1]) for (w,) in conn.execute(text(
                "SELECT worker FROM jobservice_runs WHERE job_id = 'emea' AND started_at IS NOT NULL"
            ))}  # fmt: skip
        ran_in_gunicorn = bool(pids & set(server.children()))
        assert ran_in_gunicorn == (executor == "threads"), (pids, server.children())
        print(
            f"\n[measured] README app under gunicorn -w 4 ({executor}): fires={len(totals)}, duplicates=0, "
            f"statuses={dict(statuses)}"
        )
    finally:
        if worker is not None:
            worker.stop()
        server.stop()
        engine.dispose()
