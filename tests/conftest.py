"""Fixtures: real SQLite and MariaDB (a fresh database per test), real Redis, app factories."""

from __future__ import annotations

import dataclasses
import os
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pymysql
import pytest
import redis
from flask import Flask
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

import config

# Tests never read a developer's .env or shell settings: every variable is set
# (empty means "use the default"), and each test passes what it needs.
for _name in config.VARIABLES:
    os.environ[_name] = ""
os.environ["JOBSERVICE_ENV"] = "testing"

from jobservice import create_app  # noqa: E402
from tests import jobfuncs  # noqa: E402
from tests.netproxy import TcpProxy  # noqa: E402
from tests.orm import JobRun  # noqa: E402

#: `browser` and `page_for`: a real headless Chromium (Debian's), for the dashboard's tests.
pytest_plugins = ["tests.browser"]

MARIADB = {"host": "127.0.0.1", "port": 3306, "user": "root", "password": ""}
#: The driver the service uses in the MariaDB tests: `make test` runs them with PyMySQL, then
#: again with mysqlclient (JOBSERVICE_TEST_MYSQL_DRIVER=mysqldb, `make test-mysqlclient`).
MYSQL_DRIVER = os.environ.get("JOBSERVICE_TEST_MYSQL_DRIVER") or "pymysql"
if MYSQL_DRIVER not in ("pymysql", "mysqldb"):
    raise ValueError(f"JOBSERVICE_TEST_MYSQL_DRIVER must be pymysql or mysqldb, not {MYSQL_DRIVER!r}")
REDIS_URL = "redis://127.0.0.1:6379/0"
START_MARIADB = "start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd"
START_REDIS = (
    'redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" '
    "--appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log"
)
TEST_JOB_PACKAGES = ("jobs", "tests.jobfuncs")


#: Fixtures through which a test's service runs on MariaDB.
MARIADB_FIXTURES = {"mariadb_server", "mariadb_url", "private_mariadb"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the tests whose service runs on MariaDB (`-m mariadb`: what runs on both drivers)."""
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        uses = MARIADB_FIXTURES & set(getattr(item, "fixturenames", ()))
        if uses or "mariadb" in params.values():
            item.add_marker(pytest.mark.mariadb)


def unavailable(what: str, how: str) -> None:
    """Under CI=true a missing service fails the run; elsewhere the test is skipped."""
    message = f"{what} is not reachable; start it with: {how}"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def wait_for(predicate: Callable[[], Any], timeout_s: float = 10.0, interval_s: float = 0.05) -> Any:
    """Poll until predicate() is truthy; return its value or fail after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s}s")
        time.sleep(interval_s)


@pytest.fixture(scope="session")
def mariadb_server() -> dict[str, Any]:
    if MYSQL_DRIVER == "mysqldb":
        try:
            import MySQLdb  # noqa: F401
        except ImportError:
            unavailable("mysqlclient (MySQLdb)", "make install-dev")
    try:
        pymysql.connect(**MARIADB, connect_timeout=3).close()
    except pymysql.Error:
        unavailable("MariaDB at 127.0.0.1:3306", START_MARIADB)
    return MARIADB


def mysql_url(database: str, port: int = 3306, auth: str = "root") -> str:
    """The service's URL for a database on a MariaDB of 127.0.0.1, with the driver under test."""
    return f"mysql+{MYSQL_DRIVER}://{auth}@127.0.0.1:{port}/{database}"


def new_mariadb_database() -> str:
    name = f"jobservice_test_{os.getpid()}_{secrets.token_hex(4)}"
    with pymysql.connect(**MARIADB) as conn, conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
    return name


def drop_mariadb_database(name: str) -> None:
    with pymysql.connect(**MARIADB) as conn, conn.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS `{name}`")


@pytest.fixture
def mariadb_url(mariadb_server: dict[str, Any]) -> Iterator[str]:
    """A database of this test's own, dropped afterwards."""
    name = new_mariadb_database()
    yield mysql_url(name)
    drop_mariadb_database(name)


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The shared Redis; keys are namespaced by each test database's cluster id."""
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except redis.RedisError:
        unavailable("Redis at 127.0.0.1:6379", START_REDIS)
    return REDIS_URL


@pytest.fixture(params=["sqlite", "mariadb"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/jobservice.sqlite3"
    return request.getfixturevalue("mariadb_url")


def settings(database_url: str, **overrides: Any) -> dict[str, Any]:
    """The standalone service's testing config on this database, with `overrides` (app.config keys)."""
    testing = config.load_config({"JOBSERVICE_ENV": "testing"})
    return {
        **{key: getattr(testing, key) for key in dir(testing) if key.isupper()},
        "JOBSERVICE_DATABASE_URL": database_url,
        "JOBSERVICE_REDIS_URL": None,
        "SCHEDULER_AUTOSTART": False,
        "JOBSERVICE_JOB_PACKAGES": TEST_JOB_PACKAGES,
        **overrides,
    }


def engine(app: Flask) -> Engine:
    """The service's own engine (its tables, and the jobs' `test_fires` on the same database)."""
    return app.extensions["jobservice"].engine


@contextmanager
def changed_settings(app: Flask, **changes: Any) -> Iterator[None]:
    """The app's settings (read once at start-up) with these fields changed, for one test."""
    runtime = app.extensions["jobservice"]
    before = runtime.settings
    runtime.settings = dataclasses.replace(before, **changes)
    try:
        yield
    finally:
        runtime.settings = before


def session(app: Flask) -> Session:
    """An ORM session on the service's engine, for reading and planting rows in tests."""
    return Session(engine(app))


def close_app(app: Flask) -> None:
    service = app.extensions["jobservice"]
    service.close()
    jobfuncs.dispose(app.config.get("JOBSERVICE_DATABASE_URL", ""))
    for path in Path(app.instance_path).glob(f"*{service.cluster.cluster_id}*"):
        path.unlink(missing_ok=True)


@pytest.fixture
def make_app(database_url: str) -> Iterator[Callable[..., Flask]]:
    """Build apps on this test's database; each is closed at the end of the test."""
    apps: list[Flask] = []

    def make(**overrides: Any) -> Flask:
        app = create_app(settings(database_url, **overrides))
        apps.append(app)
        return app

    yield make
    for app in reversed(apps):
        close_app(app)


@pytest.fixture
def proxied_app(mariadb_url: str) -> Iterator[tuple[Flask, TcpProxy]]:
    """An app whose MariaDB connection runs through a proxy the test can cut."""
    proxy = TcpProxy("127.0.0.1", 3306)
    url = mariadb_url.replace("127.0.0.1:3306", f"127.0.0.1:{proxy.port}")
    app = create_app(settings(url))
    yield app, proxy
    proxy.restore()
    close_app(app)
    proxy.close()


@pytest.fixture
def app(make_app: Callable[..., Flask]) -> Flask:
    return make_app()


@pytest.fixture
def client(app: Flask) -> Any:
    return app.test_client()


# Apps that lead, and what their runs did ----------------------------------------------


def leading_app(make_app: Callable[..., Flask], **overrides: Any) -> Flask:
    """An app that joins the election (it is alone, so it leads) with the jobs' table ready."""
    app = make_app(SCHEDULER_AUTOSTART=True, **overrides)
    jobfuncs.metadata.create_all(engine(app))
    wait_for(lambda: app.extensions["jobservice"].role == "leader")
    return app


def fires(app: Flask) -> list[Any]:
    with engine(app).connect() as conn:
        return list(conn.execute(select(jobfuncs.fires).order_by(jobfuncs.fires.c.id)))


def runs(app: Flask, job_id: str) -> list[JobRun]:
    query = select(JobRun).where(JobRun.job_id == job_id).order_by(JobRun.id)
    with session(app) as db_session:
        return list(db_session.execute(query).scalars())


def finished_runs(app: Flask, job_id: str, count: int = 1) -> list[JobRun]:
    def done() -> list[JobRun] | None:
        rows = [r for r in runs(app, job_id) if r.status not in ("running", "overrunning")]
        return rows if len(rows) >= count else None

    return wait_for(done)


def soon(seconds: float = 0.3) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat()
