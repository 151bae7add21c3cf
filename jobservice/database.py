"""The database: engine options per backend, migrations, and a start-up lock between processes."""

from __future__ import annotations

import fcntl
import logging
import os
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from flask import Flask
from sqlalchemy import event, text
from sqlalchemy.engine import Engine, make_url

from .extensions import db, migrate
from .models import MYSQL

logger = logging.getLogger(__name__)

MIGRATIONS_DIR = str(Path(__file__).parent / "migrations")
#: Our own Alembic version table, so a Flask app's own migrations can share the database.
VERSION_TABLE = "jobservice_alembic_version"
STARTUP_LOCK_TIMEOUT_S = 120


def init_app(app: Flask) -> None:
    """Bind Flask-SQLAlchemy and Flask-Migrate, then bring the schema up to date if asked."""
    url = app.config.get("DATABASE_URL") or _default_sqlite_url(app)
    app.config["SQLALCHEMY_DATABASE_URI"] = url
    app.config["SQLALCHEMY_ENGINE_OPTIONS"] = {
        **engine_options(url),
        **app.config.get("SQLALCHEMY_ENGINE_OPTIONS", {}),
    }
    db.init_app(app)
    migrate.init_app(app, db, directory=MIGRATIONS_DIR)
    with app.app_context():
        if db.engine.dialect.name == "sqlite":
            event.listen(db.engine, "connect", _sqlite_pragmas)
        if app.config["DB_AUTO_UPGRADE"]:
            with startup_lock(db.engine, app.instance_path):
                upgrade()


def engine_options(url: str) -> dict[str, Any]:
    """Pool settings that survive an idle night and many worker threads."""
    backend = make_url(url).get_backend_name()
    if backend in MYSQL:
        return {
            "pool_pre_ping": True,
            # Below MySQL's wait_timeout and the idle limits of most proxies.
            "pool_recycle": 1800,
            "pool_size": 10,
            "max_overflow": 30,
            # Claims and adoptions read what other processes just committed.
            "isolation_level": "READ COMMITTED",
            "connect_args": {"connect_timeout": 5, "charset": "utf8mb4"},
        }
    if backend == "postgresql":
        return {"pool_pre_ping": True, "pool_recycle": 1800, "pool_size": 10, "max_overflow": 30}
    return {"connect_args": {"timeout": 30}}


def upgrade() -> None:
    """Apply the shipped migrations (the same as `flask db upgrade`)."""
    config = migrate.get_config(MIGRATIONS_DIR)
    command.upgrade(config, "head")


def check_schema() -> None:
    """Refuse to serve on a schema older than this release's migrations, saying what to run."""
    config = migrate.get_config(MIGRATIONS_DIR)
    head = ScriptDirectory.from_config(config).get_current_head()
    with db.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
        current = context.get_current_revision()
    if current != head:
        raise SchemaOutOfDate(
            f"the database schema is at {current or 'nothing'}, this release needs {head}: "
            "run `flask --app run db upgrade`, or set DB_AUTO_UPGRADE=true"
        )


class SchemaOutOfDate(RuntimeError):
    """The database has not been migrated to this release's schema."""


@contextmanager
def startup_lock(engine: Engine, instance_path: str) -> Iterator[None]:
    """Serialise start-up work (migrations, config jobs) between processes starting together."""
    backend = engine.dialect.name
    name = f"jobservice-start:{engine.url.database or ''}"[:64]
    if backend in MYSQL:
        with engine.connect() as conn:
            got = conn.execute(
                text("SELECT GET_LOCK(:name, :timeout)"),
                {"name": name, "timeout": STARTUP_LOCK_TIMEOUT_S},
            ).scalar()
            if got != 1:
                raise TimeoutError(f"waited {STARTUP_LOCK_TIMEOUT_S}s for the start-up lock")
            try:
                yield
            finally:
                conn.execute(text("SELECT RELEASE_LOCK(:name)"), {"name": name})
    elif backend == "postgresql":
        key = zlib.crc32(name.encode())
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": key})
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
    else:
        path = Path(engine.url.database or "").with_suffix(".startup.lock")
        if not engine.url.database or engine.url.database == ":memory:":
            path = Path(instance_path) / "startup.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock


def _default_sqlite_url(app: Flask) -> str:
    os.makedirs(app.instance_path, exist_ok=True)
    return f"sqlite:///{os.path.join(app.instance_path, 'jobservice.sqlite3')}"


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """WAL and a busy timeout let several workers of one host share the SQLite file."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()
