"""House-keeping: keep the run history from growing without bound."""

from __future__ import annotations

import logging

from jobservice import purge_runs

logger = logging.getLogger(__name__)


def purge_run_history(days: int | None = None) -> int:
    """Delete finished runs older than `days` (default: RUN_RETENTION_DAYS from config)."""
    deleted = purge_runs(days)
    logger.info("Purged %d old run records", deleted)
    return deleted
