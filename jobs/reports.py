"""Reports: a daily summary of yesterday's runs, by status."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from jobservice import run_counts

logger = logging.getLogger(__name__)


def daily_run_summary() -> dict[str, int]:
    """Log how yesterday's runs (UTC) ended; a failure count above zero is logged as a warning."""
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    counts = run_counts(since=today - timedelta(days=1), until=today)
    level = logging.WARNING if counts.get("failed") else logging.INFO
    logger.log(level, "Runs scheduled yesterday: %s", counts or "none")
    return counts
