"""Fencing at the database, runs that keep their job's definition, and heartbeats.

* `jobservice_cluster.fence_at`: when the current fence was recorded (a newer leader records
  its fence before its first write; writes under a lower fence are refused from then on).
* `jobservice_runs.job_state`: the job's definition, kept with the claim of its last fire
  (a date job, or the end of an interval or cron job), so a run adopted after its leader died
  can still start although the store no longer has the job.
* An index on (status, finished_at): /health looks for recently skipped fires.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

MYSQL = ("mysql", "mariadb")


def upgrade():
    with op.batch_alter_table("jobservice_cluster") as batch:
        batch.add_column(sa.Column("fence_at", sa.DateTime().with_variant(mysql.DATETIME(fsp=6), *MYSQL)))
    with op.batch_alter_table("jobservice_runs") as batch:
        batch.add_column(sa.Column("job_state", sa.LargeBinary().with_variant(mysql.LONGBLOB(), *MYSQL)))
    op.create_index("ix_jobservice_runs_status_finished_at", "jobservice_runs", ["status", "finished_at"])


def downgrade():
    op.drop_index("ix_jobservice_runs_status_finished_at", "jobservice_runs")
    with op.batch_alter_table("jobservice_runs") as batch:
        batch.drop_column("job_state")
    with op.batch_alter_table("jobservice_cluster") as batch:
        batch.drop_column("fence_at")
