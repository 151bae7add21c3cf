"""Outcomes of runs, written in batches off the job threads.

A finished run is queued here and written with others in one transaction a few
times a second, so a burst of short jobs costs a handful of commits, not one
each. Nothing is dropped while the database is down: the queue is kept and
retried (up to MAX_PENDING outcomes), and `stop()` flushes it.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from .ledger import RunKey, runs
from .models import utcnow

logger = logging.getLogger(__name__)

FLUSH_INTERVAL_S = 0.05
MAX_PENDING = 100_000
#: Longer tracebacks are cut: they would only bloat the table.
MAX_ERROR_CHARS = 60_000


class Recorder:
    """Queues run outcomes and writes them in batches from one thread."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._pending: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._flushing = threading.Lock()
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def finished(self, key: RunKey, status: str, finished_at: datetime, error: str | None = None) -> None:
        """Queue the outcome of a run that started."""
        if error is not None and len(error) > MAX_ERROR_CHARS:
            error = error[:MAX_ERROR_CHARS] + "\n[truncated]"
        row = {
            "b_job": key.job_id,
            "b_trigger": key.trigger,
            "b_at": key.scheduled_at,
            "status": status,
            "finished_at": finished_at,
            "error": error,
        }
        with self._lock:
            self._pending.append(row)
            if len(self._pending) > MAX_PENDING:
                del self._pending[0]
                logger.error("Run history backlog over %d; dropped the oldest outcome", MAX_PENDING)

    def start(self) -> None:
        self._stopped.clear()
        self._thread = threading.Thread(target=self._loop, name="jobservice-recorder", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread and write what is queued."""
        self._stopped.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.flush()

    def flush(self) -> bool:
        """Write queued outcomes now; False if the database refused them (they stay queued)."""
        with self._flushing:
            with self._lock:
                batch, self._pending = self._pending, []
            if not batch:
                return True
            update = (
                runs.update()
                .where(
                    runs.c.job_id == bindparam("b_job"),
                    runs.c.trigger == bindparam("b_trigger"),
                    runs.c.scheduled_at == bindparam("b_at"),
                )
                .values(updated_at=utcnow())
            )
            try:
                with self.engine.begin() as conn:
                    conn.execute(update, batch)
            except SQLAlchemyError as exc:
                with self._lock:
                    self._pending[:0] = batch
                logger.warning("Could not record %d run outcomes yet: %s", len(batch), exc.__class__.__name__)
                return False
            return True

    def _loop(self) -> None:
        backoff_s = FLUSH_INTERVAL_S
        while not self._stopped.is_set():
            self._wake.wait(backoff_s)
            self._wake.clear()
            backoff_s = FLUSH_INTERVAL_S if self.flush() else min(backoff_s * 2, 5.0)
