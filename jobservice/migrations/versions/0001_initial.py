"""Job table, run history, cluster state and declared jobs.

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

import uuid
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

MYSQL = ("mysql", "mariadb")
# Naive UTC with microseconds (plain MySQL DATETIME would drop them).
UTC_DATETIME = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), *MYSQL)
JOB_STATE = sa.LargeBinary().with_variant(mysql.LONGBLOB(), *MYSQL)
# Job ids are case- and space-sensitive: binary collation on MySQL/MariaDB.
TABLE_ARGS = {"mysql_charset": "utf8mb4", "mysql_collate": "utf8mb4_bin"}


def upgrade():
    if "apscheduler_jobs" in sa.inspect(op.get_bind()).get_table_names():
        _adopt_apscheduler_table()
    else:
        op.create_table(
            "apscheduler_jobs",
            sa.Column("id", sa.Unicode(191), primary_key=True),
            sa.Column("next_run_time", sa.Double(), index=True),
            sa.Column("job_state", JOB_STATE, nullable=False),
            sa.Column("version", sa.Integer(), nullable=False, server_default=sa.text("1")),
            **TABLE_ARGS,
        )

    op.create_table(
        "jobservice_runs",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
        sa.Column("job_id", sa.Unicode(191), nullable=False),
        sa.Column("trigger", sa.String(16), nullable=False),
        sa.Column("scheduled_at", UTC_DATETIME, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("claim", sa.String(16), index=True),
        sa.Column("fence", sa.BigInteger()),
        sa.Column("worker", sa.String(255)),
        sa.Column("started_at", UTC_DATETIME),
        sa.Column("finished_at", UTC_DATETIME),
        sa.Column("error", sa.Text().with_variant(mysql.MEDIUMTEXT(), *MYSQL)),
        sa.Column("prevented", sa.Integer(), nullable=False, server_default=sa.text("0")),
        sa.Column("created_at", UTC_DATETIME, nullable=False),
        sa.Column("updated_at", UTC_DATETIME, nullable=False),
        sa.UniqueConstraint("job_id", "trigger", "scheduled_at", name="uq_jobservice_runs_claim"),
        **TABLE_ARGS,
    )
    op.create_index("ix_jobservice_runs_job_id_id", "jobservice_runs", ["job_id", "id"])
    op.create_index("ix_jobservice_runs_status_started_at", "jobservice_runs", ["status", "started_at"])

    cluster = op.create_table(
        "jobservice_cluster",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("cluster_id", sa.String(36), nullable=False),
        sa.Column("paused", sa.Boolean(), nullable=False),
        sa.Column("updated_at", UTC_DATETIME, nullable=False),
        **TABLE_ARGS,
    )
    now = datetime.now(UTC).replace(tzinfo=None)
    op.bulk_insert(cluster, [{"id": 1, "cluster_id": str(uuid.uuid4()), "paused": False, "updated_at": now}])

    op.create_table(
        "jobservice_declared_jobs",
        sa.Column("job_id", sa.Unicode(191), primary_key=True),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("updated_at", UTC_DATETIME, nullable=False),
        **TABLE_ARGS,
    )


def _adopt_apscheduler_table():
    """Take over the table a plain APScheduler/Flask-APScheduler deployment left behind."""
    columns = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("apscheduler_jobs")}
    if op.get_bind().dialect.name in MYSQL:
        op.execute("ALTER TABLE apscheduler_jobs CONVERT TO CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
    with op.batch_alter_table("apscheduler_jobs") as batch:
        if "version" not in columns:
            batch.add_column(sa.Column("version", sa.Integer(), nullable=False, server_default=sa.text("1")))
        if op.get_bind().dialect.name in MYSQL:
            batch.alter_column("job_state", type_=mysql.LONGBLOB(), existing_nullable=False)
            batch.alter_column("next_run_time", type_=sa.Double(), existing_nullable=True)


def downgrade():
    op.drop_table("jobservice_declared_jobs")
    op.drop_table("jobservice_cluster")
    op.drop_index("ix_jobservice_runs_status_started_at", "jobservice_runs")
    op.drop_index("ix_jobservice_runs_job_id_id", "jobservice_runs")
    op.drop_table("jobservice_runs")
    op.drop_table("apscheduler_jobs")
