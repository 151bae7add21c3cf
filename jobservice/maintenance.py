"""The built-in maintenance job: keeps the run history within its retention limits.

Declared by the service itself (id `jobservice-maintenance`), beside the JOBS of
config.py, and reconciled the same way.
"""

from __future__ import annotations

import logging

from .runs import purge_runs, trim_runs

logger = logging.getLogger(__name__)

JOB_ID = "jobservice-maintenance"
#: How the service declares it; every ten minutes keeps the per-job limit close.
DEFINITION = {
    "id": JOB_ID,
    "name": "Run history retention",
    "func": "jobservice.maintenance:purge_run_history",
    "trigger": "interval",
    "minutes": 10,
}


def purge_run_history() -> dict[str, int]:
    """Delete runs older than RUN_RETENTION_DAYS and beyond RUN_RETENTION_PER_JOB per job."""
    removed = {"by_age": purge_runs(), "by_count": trim_runs()}
    if any(removed.values()):
        logger.info("Run history purged: %d by age, %d by count", removed["by_age"], removed["by_count"])
    return removed
