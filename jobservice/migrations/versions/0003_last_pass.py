"""When the leader last finished a pass: /health turns degraded when it is too long ago.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("jobservice_cluster") as batch:
        batch.add_column(
            sa.Column("last_pass_at", sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb"))
        )


def downgrade():
    with op.batch_alter_table("jobservice_cluster") as batch:
        batch.drop_column("last_pass_at")
