"""The tables the service keeps. Alembic migrations in `migrations/` create them.

Plain SQLAlchemy Core, with a MetaData of the service's own: jobservice never takes the
Flask-SQLAlchemy instance (or the Alembic environment) of the app it runs in, and never
imports the ORM (5.6 MiB more in every worker, for statements that are all Core).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Double,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    Unicode,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator, TypeEngine

# Named constraints, so Alembic can alter them the same way on every database.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
metadata = MetaData(naming_convention=NAMING_CONVENTION)

MYSQL = ("mysql", "mariadb")
#: Job ids are case- and space-sensitive, as in APScheduler; MySQL's default
#: collations would make "Report" and "report " the same key.
MYSQL_TABLE_ARGS = {"mysql_charset": "utf8mb4", "mysql_collate": "utf8mb4_bin"}

# Run status values (DESIGN.md, "Every run"). A run is `running`, and `overrunning` once it
# outlasts its job's interval (or RUN_OVERRUN_SECONDS); it ends `succeeded` or `failed`. A fire
# that never started is `missed` (too late, or its job was paused or removed first) or
# `skipped` (max_instances runs of its job were still going).
RUNNING, OVERRUNNING = "running", "overrunning"
SUCCEEDED, FAILED, MISSED, SKIPPED = "succeeded", "failed", "missed", "skipped"
STATUSES = (RUNNING, OVERRUNNING, SUCCEEDED, FAILED, MISSED, SKIPPED)
#: A run in one of these has not ended.
ACTIVE = (RUNNING, OVERRUNNING)
# How a run came about.
SCHEDULED, MANUAL = "scheduled", "manual"


def utcnow() -> datetime:
    """The current time as an aware UTC datetime; used as a per-row callable default."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC in Python, naive UTC in the database, microseconds kept on MySQL too."""

    impl = DateTime
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name in MYSQL:
            # Plain DATETIME drops fractions of a second, and fire times need them.
            return dialect.type_descriptor(mysql.DATETIME(fsp=6))
        return dialect.type_descriptor(DateTime())

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("UTCDateTime needs an aware datetime")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


#: APScheduler's job table, plus `version` for optimistic concurrency between processes.
jobs_table = Table(
    "apscheduler_jobs",
    metadata,
    # 191 = max key length in MySQL for InnoDB/utf8mb4 tables (as in APScheduler).
    Column("id", Unicode(191), primary_key=True),
    Column("next_run_time", Double, index=True),
    # A MySQL BLOB stops at 64 KB; a job with large args must still fit.
    Column("job_state", LargeBinary().with_variant(mysql.LONGBLOB(), *MYSQL), nullable=False),
    Column("version", Integer, nullable=False, server_default=text("1")),
    #: 'module:function', as in the job's JSON: what the dashboard searches by function.
    Column("func_ref", Unicode(255)),
    **MYSQL_TABLE_ARGS,
)


#: One fire of a job: claimed before it starts, so each fire time runs at most once.
runs_table = Table(
    "jobservice_runs",
    metadata,
    Column("id", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True),
    Column("job_id", Unicode(191), nullable=False),
    Column("trigger", String(16), nullable=False),
    Column("scheduled_at", UTCDateTime, nullable=False),
    #: 1 for the fire itself, then one more for each retry (a row each, same scheduled_at).
    Column("attempt", Integer, nullable=False, default=1, server_default=text("1")),
    #: A retry may not start before this.
    Column("not_before", UTCDateTime),
    Column("status", String(16), nullable=False),
    Column("claim", String(16), index=True),
    Column("fence", BigInteger),
    Column("worker", String(255)),
    Column("started_at", UTCDateTime),
    Column("finished_at", UTCDateTime),
    Column("error", Text().with_variant(mysql.MEDIUMTEXT(), *MYSQL)),
    Column("prevented", Integer, nullable=False, default=0, server_default=text("0")),
    Column("created_at", UTCDateTime, nullable=False, default=utcnow),
    #: Also the heartbeat of a run in progress: its process touches it every half lease.
    Column("updated_at", UTCDateTime, nullable=False, default=utcnow, onupdate=utcnow),
    #: The job's definition (pickled, as in the job table), kept with the claim of its last
    #: fire: the store deletes the job when that fire is claimed, and an adopter needs it.
    Column("job_state", LargeBinary().with_variant(mysql.LONGBLOB(), *MYSQL)),
    UniqueConstraint("job_id", "trigger", "scheduled_at", "attempt", name="uq_jobservice_runs_claim"),
    Index("ix_jobservice_runs_job_id_id", "job_id", "id"),
    Index("ix_jobservice_runs_status_started_at", "status", "started_at"),
    Index("ix_jobservice_runs_status_finished_at", "status", "finished_at"),
    # The dashboard's time window of runs, and a job's count of duplicate claims prevented.
    Index("ix_jobservice_runs_scheduled_at", "scheduled_at"),
    Index("ix_jobservice_runs_job_id_prevented", "job_id", "prevented"),
    **MYSQL_TABLE_ARGS,
)


#: One row: the cluster's identity, and whether processing is paused or shut down everywhere.
cluster_table = Table(
    "jobservice_cluster",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("cluster_id", String(36), nullable=False),
    Column("paused", Boolean, nullable=False, default=False),
    #: Shut down (Flask-APScheduler's `running` false); a paused cluster is still running.
    Column("stopped", Boolean, nullable=False, default=False, server_default=text("0")),
    #: The highest fencing number handed out: a floor for the next one.
    Column("fence", BigInteger, nullable=False, default=0, server_default=text("0")),
    #: When that fence was recorded: from then on the database refuses lower fences.
    Column("fence_at", UTCDateTime),
    #: When the leader last finished a pass over due jobs.
    Column("last_pass_at", UTCDateTime),
    Column("updated_at", UTCDateTime, nullable=False, default=utcnow, onupdate=utcnow),
    **MYSQL_TABLE_ARGS,
)

#: Jobs that come from JOBS in config.py, with a fingerprint of their definition.
declared_table = Table(
    "jobservice_declared_jobs",
    metadata,
    Column("job_id", Unicode(191), primary_key=True),
    Column("fingerprint", String(64), nullable=False),
    Column("updated_at", UTCDateTime, nullable=False, default=utcnow, onupdate=utcnow),
    **MYSQL_TABLE_ARGS,
)


def force_index(query: Any, table: Table, index: str) -> Any:
    """`query` with MySQL/MariaDB told to read `table` through `index`. Where a LIMIT and an
    ORDER BY id meet a selective filter, their optimizer can prefer walking the primary key
    (every row of a ten-million-row history) to the index that holds exactly those rows."""
    for dialect in MYSQL:
        query = query.with_hint(table, f"FORCE INDEX ({index})", dialect_name=dialect)
    return query


def ignore_jobservice_tables(name: str | None, type_: str, parent_names: Any) -> bool:
    """For an app's own Alembic autogenerate (`Migrate(app, db, include_name=...)`): leave
    jobservice's tables out, which its own migrations look after."""
    return not (type_ == "table" and name is not None and (name in OWN_TABLES or name.startswith(OWN_PREFIX)))


OWN_TABLES = ("apscheduler_jobs", "jobservice_alembic_version")
OWN_PREFIX = "jobservice_"
