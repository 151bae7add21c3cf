"""Run history: queries over `jobservice_runs` for the API, the CLI and maintenance."""

from __future__ import annotations

from datetime import timedelta

from flask import current_app
from sqlalchemy import delete, select

from .models import RUNNING, JobRun, utcnow

runs = JobRun.__table__
PURGE_BATCH = 5000


def purge_runs(older_than_days: int | None = None) -> int:
    """Delete finished runs older than this many days (default RUN_RETENTION_DAYS).

    Deletes in batches so a large purge never holds long locks. Call inside an app context.
    """
    days = older_than_days if older_than_days is not None else current_app.config["RUN_RETENTION_DAYS"]
    cutoff = utcnow() - timedelta(days=days)
    engine = current_app.extensions["jobservice"].engine
    total = 0
    while True:
        ids = (
            select(runs.c.id).where(runs.c.scheduled_at < cutoff, runs.c.status != RUNNING).limit(PURGE_BATCH)
        )
        with engine.begin() as conn:
            batch = [row[0] for row in conn.execute(ids)]
            if not batch:
                return total
            conn.execute(delete(runs).where(runs.c.id.in_(batch)))
        total += len(batch)
