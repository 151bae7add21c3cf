"""The job table says which function each job runs, in a column the dashboard can search.

`apscheduler_jobs.func_ref` ('module:function', as in the job's JSON) is written with every
add and change of a job; rows of older releases are filled in from their pickled state
(a row that cannot be read keeps NULL, as it keeps its place in the store).

Two indexes of `jobservice_runs` for what the dashboard reads: `scheduled_at` (a time window
of runs: without it a window in the middle of a million runs walks half the table, 0.3 s)
and `(job_id, prevented)` (a job's duplicate claims prevented: 0.8 s for a job with 50 000
runs without it, 0.01 s with it; bench/dashboard.py).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

import pickle

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("apscheduler_jobs") as batch:
        batch.add_column(sa.Column("func_ref", sa.Unicode(255)))
    op.create_index("ix_jobservice_runs_scheduled_at", "jobservice_runs", ["scheduled_at"])
    op.create_index("ix_jobservice_runs_job_id_prevented", "jobservice_runs", ["job_id", "prevented"])
    jobs = sa.table("apscheduler_jobs", sa.column("id"), sa.column("job_state"), sa.column("func_ref"))
    conn = op.get_bind()
    for job_id, state in conn.execute(sa.select(jobs.c.id, jobs.c.job_state)).all():
        ref = _func_ref(state)
        if ref is not None:
            conn.execute(jobs.update().where(jobs.c.id == job_id).values(func_ref=ref))


def downgrade():
    op.drop_index("ix_jobservice_runs_job_id_prevented", table_name="jobservice_runs")
    op.drop_index("ix_jobservice_runs_scheduled_at", table_name="jobservice_runs")
    with op.batch_alter_table("apscheduler_jobs") as batch:
        batch.drop_column("func_ref")


def _func_ref(state: bytes) -> str | None:
    try:
        ref = pickle.loads(state)["func"]
    except Exception:  # a row of someone else's making: it stays as it is
        return None
    return ref[:255] if isinstance(ref, str) else None
