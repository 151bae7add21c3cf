"""The schema: migrations (also from several processes at once), MySQL types, timestamps."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.exc import OperationalError

from jobservice import create_app
from jobservice.database import HEAD_REVISION, MIGRATIONS_DIR, SchemaOutOfDate, make_engine
from jobservice.models import utcnow
from tests.conftest import close_app, engine, session, settings
from tests.orm import JobRun

ROOT = Path(__file__).resolve().parent.parent
HEAD = ScriptDirectory(MIGRATIONS_DIR).get_current_head()


def child_env(database_url: str) -> dict[str, str]:
    return {
        **os.environ,
        "JOBSERVICE_ENV": "testing",
        "DATABASE_URL": database_url,
        "SCHEDULER_AUTOSTART": "false",
        "JOB_PACKAGES": "jobs,tests.jobfuncs",
    }


def test_mysql_column_types_hold_real_jobs(mariadb_url: str) -> None:
    app = create_app(settings(mariadb_url))
    with engine(app).connect() as conn:
        columns = dict(
            conn.execute(
                text(
                    "SELECT CONCAT(table_name, '.', column_name), column_type FROM information_schema.columns "
                    "WHERE table_schema = DATABASE()"
                )
            ).all()
        )
        collation = conn.execute(
            text(
                "SELECT collation_name FROM information_schema.columns WHERE table_schema = DATABASE() "
                "AND table_name = 'apscheduler_jobs' AND column_name = 'id'"
            )
        ).scalar_one()
    close_app(app)
    assert columns["apscheduler_jobs.next_run_time"] == "double"
    assert columns["apscheduler_jobs.job_state"] == "longblob"  # a BLOB stops at 64 KB
    assert columns["jobservice_runs.scheduled_at"] == "datetime(6)"
    assert collation == "utf8mb4_bin"


def test_job_larger_than_64kb_round_trips(client: object) -> None:
    payload = "x" * 200_000
    body = {
        "id": "big",
        "func": "tests.jobfuncs:record",
        "args": [payload],
        "trigger": "interval",
        "hours": 1,
    }
    assert client.post("/scheduler/jobs", json=body).status_code == 200  # type: ignore[attr-defined]
    assert client.get("/scheduler/jobs/big").json["args"] == [payload]  # type: ignore[attr-defined]


def test_ids_are_case_sensitive_and_never_padded(client: object) -> None:
    def post(job_id: str) -> int:
        body = {"id": job_id, "func": "tests.jobfuncs:noop", "trigger": "interval", "hours": 1}
        return client.post("/scheduler/jobs", json=body).status_code  # type: ignore[attr-defined]

    assert post("Report") == 200 and post("report") == 200  # two jobs, on MySQL too
    assert post("report ") == 400  # MySQL would treat it as "report"
    assert len(client.get("/scheduler/jobs").json) == 2  # type: ignore[attr-defined]


def test_timestamps_are_set_per_row_in_utc(app: Flask) -> None:
    with app.app_context(), session(app) as db_session:
        first = JobRun(job_id="a", trigger="manual", scheduled_at=utcnow(), status="running")
        db_session.add(first)
        db_session.commit()
        time.sleep(0.01)
        second = JobRun(job_id="b", trigger="manual", scheduled_at=utcnow(), status="running")
        db_session.add(second)
        db_session.commit()
        assert second.created_at > first.created_at  # a callable default, not a value fixed at import
        assert first.created_at.utcoffset().total_seconds() == 0
        created = first.created_at
        time.sleep(0.01)
        first.status = "succeeded"
        db_session.commit()
        assert first.updated_at > created and first.created_at == created


def test_workers_starting_together_migrate_once(database_url: str) -> None:
    code = "from config import load_config; from jobservice import create_app; create_app(load_config())"
    children = [
        subprocess.Popen(
            [sys.executable, "-c", code], cwd=ROOT, env=child_env(database_url), stderr=subprocess.PIPE
        )
        for _ in range(4)
    ]
    for child in children:
        _, err = child.communicate(timeout=120)
        assert child.returncode == 0, err.decode()[-2000:]
    engine = create_engine(database_url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM jobservice_alembic_version")).scalars().all() == [
            HEAD
        ]
        assert conn.execute(text("SELECT COUNT(*) FROM jobservice_cluster")).scalar_one() == 1
    engine.dispose()


def test_flask_db_upgrade_command(database_url: str) -> None:
    env = {**child_env(database_url), "DB_AUTO_UPGRADE": "false"}
    flask = [sys.executable, "-m", "flask", "--app", "run", "db"]
    upgrade = subprocess.run(
        [*flask, "upgrade"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert upgrade.returncode == 0, upgrade.stderr[-2000:]
    current = subprocess.run(
        [*flask, "current"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert f"{HEAD} (head)" in current.stdout


def test_existing_apscheduler_table_is_adopted(make_app: Callable[..., Flask], database_url: str) -> None:
    """A deployment moving from plain Flask-APScheduler keeps its jobs."""
    plain_engine = create_engine(database_url)
    store = SQLAlchemyJobStore(engine=plain_engine)
    plain = BackgroundScheduler(jobstores={"default": store}, timezone="UTC")
    plain.start(paused=True)
    plain.add_job("tests.jobfuncs:noop", "interval", minutes=7, id="legacy")
    plain.shutdown()
    plain_engine.dispose()
    app = make_app()
    job = app.test_client().get("/scheduler/jobs/legacy").json
    assert job["id"] == "legacy" and job["minutes"] == 7
    assert app.test_client().post("/scheduler/jobs/legacy/pause").status_code == 200
    with engine(app).connect() as conn:
        assert (
            conn.execute(select(func.max(text("version"))).select_from(text("apscheduler_jobs"))).scalar()
            == 2
        )


def test_serving_on_an_unmigrated_database_says_what_to_run(database_url: str) -> None:
    with pytest.raises(SchemaOutOfDate, match="flask jobservice db upgrade"):
        create_app(settings(database_url, JOBSERVICE_DB_AUTO_UPGRADE=False, SCHEDULER_AUTOSTART=True))


def test_head_revision_constant_is_alembics_head() -> None:
    """Serving processes check the schema against this constant instead of importing Alembic."""
    assert HEAD_REVISION == HEAD


def test_mysql_connections_share_one_default_tls_context(mariadb_url: str) -> None:
    """PyMySQL's default (preferred, unverified) TLS context is built once, not per pooled
    connection, and the connections keep PyMySQL's meaning of it: TLS if offered, not required."""
    app = create_app(settings(mariadb_url.replace("mysql+mysqldb:", "mysql+pymysql:")))
    try:
        with engine(app).connect() as first, engine(app).connect() as second:
            raw = [c.connection.dbapi_connection for c in (first, second)]
            assert raw[0] is not raw[1]
            assert raw[0].ctx is raw[1].ctx
            assert all(r.ssl and not r._ssl_required for r in raw)
            assert first.execute(text("SELECT 1")).scalar() == 1
            assert second.execute(text("SELECT 2")).scalar() == 2
    finally:
        close_app(app)


def test_mysql_pool_rolls_back_only_open_transactions(mariadb_url: str) -> None:
    """No ROLLBACK after a COMMIT (one round trip less per transaction), but a connection
    returned inside a transaction is still rolled back before anyone reuses it."""
    engine = make_engine(mariadb_url, lease_s=2, pool_use_lifo=True)
    try:
        used: set[int] = set()

        def rollbacks() -> int:
            """This session's ROLLBACK count (LIFO: the connection just returned)."""
            with engine.connect() as conn:
                used.add(id(conn.connection.dbapi_connection))
                return int(conn.execute(text("SHOW SESSION STATUS LIKE 'Com_rollback'")).one()[1])

        with engine.begin() as conn:
            conn.execute(text("SELECT 1"))
        before = rollbacks()
        with engine.begin() as conn:
            used.add(id(conn.connection.dbapi_connection))
            conn.execute(text("SELECT 1"))
        assert rollbacks() == before + 1  # rollbacks()'s own close of its read, nothing else
        raw = engine.raw_connection()
        raw.cursor().execute("SELECT 1")  # opens a transaction; returned without ending it
        raw.close()
        with engine.connect() as conn:
            dbapi = conn.connection.dbapi_connection
            used.add(id(dbapi))
            if hasattr(dbapi, "server_status"):  # PyMySQL: the server's own word
                assert not dbapi.server_status & 1
            else:  # mysqlclient: it was rolled back when returned
                assert dbapi.in_transaction is False
        assert len(used) == 1, "the checks must all have run on one session"
    finally:
        engine.dispose()


def test_only_the_services_own_sessions_end_idle_write_transactions(mariadb_url: str) -> None:
    """A leader frozen inside a fenced write must not hold its locks (and the next leader's
    fence) until it thaws: MariaDB ends the service's idle write transactions after a lease.
    The app's own sessions (its Flask-SQLAlchemy `db`, which jobs use) may stay in a
    transaction as long as they like."""
    app = create_app(
        settings(mariadb_url, JOBSERVICE_LEADER_LEASE_SECONDS=1.5, SQLALCHEMY_DATABASE_URI=mariadb_url)
    )
    apps_db = SQLAlchemy()
    apps_db.init_app(app)
    try:
        service = app.extensions["jobservice"]
        with service.engine.connect() as conn:
            assert conn.execute(text("SELECT @@SESSION.idle_write_transaction_timeout")).scalar() == 2
        with app.app_context(), apps_db.engine.connect() as conn:
            assert conn.execute(text("SELECT @@SESSION.idle_write_transaction_timeout")).scalar() == 0
        with service.engine.connect() as conn:
            now = utcnow()
            conn.execute(  # a write: from here the transaction is a write transaction
                JobRun.__table__.insert().values(
                    job_id="w",
                    trigger="manual",
                    scheduled_at=now,
                    status="running",
                    created_at=now,
                    updated_at=now,
                )
            )
            time.sleep(3)
            with pytest.raises(OperationalError):
                conn.commit()
        with app.app_context(), session(app) as db_session:
            assert db_session.execute(select(func.count()).select_from(JobRun)).scalar_one() == 0
    finally:
        close_app(app)
        with app.app_context():
            apps_db.engine.dispose()


def test_the_connection_pool_is_sized_as_the_readme_says(mariadb_url: str) -> None:
    """Per worker, at most 40 connections in the service's own pool (the jobs' are the app's)."""
    app = create_app(settings(mariadb_url))
    try:
        pool = engine(app).pool
        assert pool.size() + pool._max_overflow == 40
    finally:
        close_app(app)


def test_a_serving_process_never_imports_the_orm(tmp_path: Path) -> None:
    """The service's statements are all Core: the ORM would cost every worker 5.6 MiB (M1)."""
    env = {**os.environ, "JOBSERVICE_ENV": "testing", "DATABASE_URL": f"sqlite:///{tmp_path}/j.sqlite3"}
    code = "import sys, run; assert run.app; print(sorted(m for m in sys.modules if m.startswith('sqlalchemy.orm')))"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
