"""The database: the service's engine, per-backend options, migrations, a start-up lock between processes."""

from __future__ import annotations

import fcntl
import functools
import logging
import math
import os
import threading
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event, inspect, text
from sqlalchemy.engine import Connection, Engine, make_url

from .models import MYSQL

logger = logging.getLogger(__name__)

MIGRATIONS_DIR = str(Path(__file__).parent / "migrations")
#: Our own Alembic version table, so a Flask app's own migrations can share the database.
VERSION_TABLE = "jobservice_alembic_version"
#: The newest migration (a test keeps it equal to Alembic's head). Knowing it lets a
#: serving process check the schema without importing Alembic (10 MiB per worker).
HEAD_REVISION = "0007"
STARTUP_LOCK_TIMEOUT_S = 120
#: Connections beyond the job threads: scheduler, recorder, start gate, API threads.
SPARE_CONNECTIONS = 10
#: The server's "a transaction is open" flag in every reply (MySQL protocol).
SERVER_STATUS_IN_TRANS = 1


def make_engine(url: str, lease_s: float, threads: int = SPARE_CONNECTIONS, **options: Any) -> Engine:
    """The service's own engine, for the job store, the run history and the cluster state.

    Jobs use their app's own database session (its Flask-SQLAlchemy `db`, if it has one),
    whose transactions may stay open as long as the job likes. The service's never do: on
    MariaDB a session of this engine that leaves a write transaction idle for a lease is
    ended by the server, so a leader frozen in the middle of a fenced write (SIGSTOP, a
    paused VM) cannot hold its row locks, and with them the next leader's fence, until it
    thaws.
    """
    engine = create_engine(url, **{**engine_options(url, threads), **options})
    configure_engine(engine)
    if engine.dialect.name in MYSQL:
        limit_s = max(1, math.ceil(lease_s))
        event.listen(engine, "connect", functools.partial(_end_idle_writes, limit_s))
    return engine


def default_sqlite_url(instance_path: str) -> str:
    """The embedded default: a SQLite file in the app's instance folder."""
    os.makedirs(instance_path, exist_ok=True)
    return f"sqlite:///{os.path.join(instance_path, 'jobservice.sqlite3')}"


def prepare_schema(engine: Engine, instance_path: str, auto_upgrade: bool) -> None:
    """Bring the schema up to date if asked and needed, once across processes starting together."""
    if auto_upgrade and current_revision(engine) != HEAD_REVISION:
        with startup_lock(engine, instance_path):
            if current_revision(engine) != HEAD_REVISION:  # another worker may have done it
                upgrade(engine)


def configure_engine(engine: Engine) -> None:
    """Per-backend connection set-up of the service's engine."""
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    if engine.dialect.name in MYSQL:
        event.listen(engine, "reset", _rollback_if_in_transaction)
    if engine.dialect.driver == "pymysql":
        event.listen(engine, "do_connect", _pymysql_connect)
    if engine.dialect.driver == "mysqldb":
        event.listen(engine, "do_connect", _mysqldb_connect)


def engine_options(url: str, threads: int = 20) -> dict[str, Any]:
    """Pool settings that survive an idle night and keep one connection per thread that
    uses the database (`threads`: job threads, or the service's own).

    A new PyMySQL connection costs ~25 ms of CPU (it builds a TLS context, even for a
    server without TLS), so connections must be reused, not opened per run.
    """
    backend = make_url(url).get_backend_name()
    pool = {"pool_size": threads + SPARE_CONNECTIONS, "max_overflow": 20}
    if backend in MYSQL:
        return {
            "pool_pre_ping": True,
            # Below MySQL's wait_timeout and the idle limits of most proxies.
            "pool_recycle": 1800,
            **pool,
            # Claims and adoptions read what other processes just committed.
            "isolation_level": "READ COMMITTED",
            # SQLAlchemy sends a ROLLBACK whenever a connection goes back to the pool, even
            # after a COMMIT: one more round trip per transaction. The reset event below
            # rolls back only a connection the server says is inside a transaction.
            "pool_reset_on_return": None,
            "connect_args": {"connect_timeout": 5, "charset": "utf8mb4"},
        }
    if backend == "postgresql":
        return {"pool_pre_ping": True, "pool_recycle": 1800, **pool}
    return {"connect_args": {"timeout": 30}}


def alembic_config(connection: Connection) -> Any:
    """Alembic's configuration for the service's own migrations, on this connection.

    Not Flask-Migrate, and not the app's own Alembic environment: the service's tables have
    a version table of their own, so an app's migrations and these never meet.
    """
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", MIGRATIONS_DIR)
    config.attributes["connection"] = connection
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Apply the shipped migrations (`flask jobservice db upgrade`)."""
    from alembic import command

    with engine.begin() as conn:
        command.upgrade(alembic_config(conn), revision)


def current_revision(engine: Engine) -> str | None:
    """The schema's revision, read without Alembic (None before the first migration)."""
    with engine.connect() as conn:
        if not inspect(conn).has_table(VERSION_TABLE):
            return None
        return conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar()


def check_schema(engine: Engine) -> None:
    """Refuse to serve on a schema older than this release's migrations, saying what to run."""
    current, head = current_revision(engine), HEAD_REVISION
    if current != head:
        raise SchemaOutOfDate(
            f"the database schema is at {current or 'nothing'}, this release needs {head}: "
            "run `flask jobservice db upgrade`, or set JOBSERVICE_DB_AUTO_UPGRADE (DB_AUTO_UPGRADE)"
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


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """WAL and a busy timeout let several workers of one host share the SQLite file."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _end_idle_writes(limit_s: int, dbapi_connection: Any, _record: Any) -> None:
    """MariaDB ends a session whose write transaction is idle for `limit_s` (MySQL has no
    such setting: there a frozen leader's locks are held until it thaws or its connection dies)."""
    if "mariadb" in dbapi_connection.get_server_info().lower():
        with dbapi_connection.cursor() as cursor:
            cursor.execute(f"SET SESSION idle_write_transaction_timeout = {int(limit_s)}")


def _rollback_if_in_transaction(dbapi_connection: Any, record: Any, state: Any) -> None:
    """Pool reset on MySQL/MariaDB: roll back only a transaction that may still be open (one
    SQLAlchemy did not end, which PyMySQL tells from the server's status; mysqlclient cannot)."""
    if state.terminate_only or state.transaction_was_reset:
        return
    if isinstance(getattr(dbapi_connection, "in_transaction", None), bool):  # mysqlclient, below
        if dbapi_connection.in_transaction:
            dbapi_connection.rollback()
        return
    status = getattr(dbapi_connection, "server_status", None)
    if status is None or status & SERVER_STATUS_IN_TRANS:
        dbapi_connection.rollback()


def _mysqldb_connect(dialect: Any, record: Any, cargs: Any, cparams: dict[str, Any]) -> Any:
    """A mysqlclient connection that knows whether it may be inside a transaction."""
    return _tracked_connection_class()(*cargs, **cparams)


@functools.cache
def _tracked_connection_class() -> type:
    """mysqlclient's Connection, noting whether a statement ran since the last commit or
    rollback: it cannot ask the server (PyMySQL reads that from every reply), and without
    knowing, every return to the pool would cost a ROLLBACK round trip."""
    from MySQLdb.connections import Connection

    class TrackedConnection(Connection):  # type: ignore[misc]
        in_transaction = False

        def query(self, query: Any) -> None:
            self.in_transaction = True  # autocommit is off: any statement may open one
            super().query(query)

        def commit(self) -> None:
            super().commit()
            self.in_transaction = False

        def rollback(self) -> None:
            super().rollback()
            self.in_transaction = False

    return TrackedConnection


def _pymysql_connect(dialect: Any, record: Any, cargs: Any, cparams: dict[str, Any]) -> Any:
    """A PyMySQL connection that shares one TLS context with the others (see below)."""
    return _shared_tls_connection_class()(*cargs, **cparams)


@functools.cache
def _shared_tls_connection_class() -> type:
    """PyMySQL's Connection, building its default "preferred TLS" context once.

    Without TLS settings, PyMySQL 2.2 builds a fresh context for every connection and
    loads the system CAs into it (which that mode never verifies against): 18 ms of CPU
    and 0.8 MiB per connection, even to a server without TLS. That context is the same
    every time, so it is built once; explicit TLS settings are left to PyMySQL.
    """
    from pymysql.connections import Connection

    lock = threading.Lock()
    shared: list[Any] = []

    class SharedTLSConnection(Connection):  # type: ignore[misc]
        def _create_ssl_ctx(self, sslp: Any) -> Any:
            if sslp:
                return super()._create_ssl_ctx(sslp)
            with lock:
                if not shared:
                    shared.append(super()._create_ssl_ctx(sslp))
            return shared[0]

    return SharedTLSConnection
