"""Remember the highest fencing number, so fences stay monotonic across Redis restarts.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("jobservice_cluster") as batch:
        batch.add_column(sa.Column("fence", sa.BigInteger(), nullable=False, server_default=sa.text("0")))


def downgrade():
    with op.batch_alter_table("jobservice_cluster") as batch:
        batch.drop_column("fence")
