"""Retries: each attempt of a fire is a run of its own.

* `jobservice_runs.attempt`: 1 for the fire itself, 2 and on for its retries; the claim key
  becomes (job_id, trigger, scheduled_at, attempt), so every attempt is claimed once.
* `jobservice_runs.not_before`: a retry waits until then before it may start.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

MYSQL = ("mysql", "mariadb")
CLAIM = "uq_jobservice_runs_claim"


def upgrade():
    with op.batch_alter_table("jobservice_runs") as batch:
        batch.add_column(sa.Column("attempt", sa.Integer(), nullable=False, server_default=sa.text("1")))
        batch.add_column(sa.Column("not_before", sa.DateTime().with_variant(mysql.DATETIME(fsp=6), *MYSQL)))
        batch.drop_constraint(CLAIM, type_="unique")
        batch.create_unique_constraint(CLAIM, ["job_id", "trigger", "scheduled_at", "attempt"])


def downgrade():
    with op.batch_alter_table("jobservice_runs") as batch:
        batch.drop_constraint(CLAIM, type_="unique")
        batch.create_unique_constraint(CLAIM, ["job_id", "trigger", "scheduled_at"])
        batch.drop_column("not_before")
        batch.drop_column("attempt")
