"""A cluster that was shut down (POST /scheduler/shutdown, or the Python shutdown()), apart
from one that is paused: Flask-APScheduler's `running` is true while paused.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("jobservice_cluster") as batch:
        batch.add_column(sa.Column("stopped", sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade():
    with op.batch_alter_table("jobservice_cluster") as batch:
        batch.drop_column("stopped")
