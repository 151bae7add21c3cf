"""Outcomes of runs, written in batches off the job threads.

A finished run is queued here and written with others in one transaction a few
times a second, so a burst of short jobs costs a handful of commits, not one
each. Nothing is dropped while the database is down: the queue is kept and
retried (up to MAX_PENDING outcomes), and `stop()` flushes it. An outcome only
lands on a run that is still open: one the leader already closed (its heartbeat
had stopped for longer than the bound) keeps that verdict. A failure with retries
left gets its next attempt's row in the same transaction (and only if it landed).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import bindparam, or_
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from .ledger import Claim, add_retry, runs
from .models import ACTIVE, MYSQL

logger = logging.getLogger(__name__)

FLUSH_INTERVAL_S = 0.05
MAX_PENDING = 100_000
#: Longer tracebacks are cut: they would only bloat the table.
MAX_ERROR_CHARS = 60_000
#: Outcomes per UPDATE statement on MySQL; a statement also carries at most about
#: MAX_ERROR_CHARS of tracebacks, to stay far below any max_allowed_packet.
MAX_ROWS_PER_STATEMENT = 200


class Recorder:
    """Queues run outcomes and writes them in batches from one thread."""

    def __init__(self, engine: Engine, on_retry: Callable[[], None] = lambda: None) -> None:
        self.engine = engine
        #: Told when next attempts were added: the leader should look at them.
        self.on_retry = on_retry
        self._pending: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._flushing = threading.Lock()
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def finished(
        self,
        claim: Claim,
        status: str,
        finished_at: datetime,
        error: str | None = None,
        retry_at: datetime | None = None,
    ) -> None:
        """Queue the outcome of a run that started; `retry_at`: when its next attempt may start."""
        if error is not None and len(error) > MAX_ERROR_CHARS:
            error = error[:MAX_ERROR_CHARS] + "\n[truncated]"
        row = {"id": claim.run_id, "status": status, "finished_at": finished_at, "error": error}
        if retry_at is not None:
            row["retry_at"] = retry_at
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
            try:
                with self.engine.begin() as conn:
                    retries = _write(conn, batch)
            except SQLAlchemyError as exc:
                with self._lock:
                    self._pending[:0] = batch
                logger.warning("Could not record %d run outcomes yet: %s", len(batch), exc.__class__.__name__)
                return False
        if retries:
            self.on_retry()
        return True

    def _loop(self) -> None:
        backoff_s = FLUSH_INTERVAL_S
        while not self._stopped.is_set():
            self._wake.wait(backoff_s)
            self._wake.clear()
            backoff_s = FLUSH_INTERVAL_S if self.flush() else min(backoff_s * 2, 5.0)


def _write(conn: Connection, batch: list[dict[str, Any]]) -> int:
    """Write outcomes by primary key: one UPDATE ... JOIN for the batch on MySQL/MariaDB.

    PyMySQL sends an executemany of UPDATE as one statement per row; here the batch is
    a derived table joined on the key, its values given as plain parameters (no
    SQLAlchemy type processing per row, one datetime each). Failures to retry are written
    one by one: their next attempt is added only where the outcome landed. Returns how
    many next attempts were added.
    """
    retried = [row for row in batch if "retry_at" in row]
    added = 0
    if retried:
        batch = [row for row in batch if "retry_at" not in row]
        for row in retried:
            params = {f"b_{name}": row[name] for name in ("id", "status", "finished_at", "error")}
            if conn.execute(_OUTCOME, params).rowcount == 1:
                add_retry(conn, row["id"], row["retry_at"])
                added += 1
    if not batch:
        return added
    if conn.dialect.name in MYSQL:
        for chunk in _chunks(batch):
            _update_join(conn, chunk)
        return added
    conn.execute(_OUTCOME, [{f"b_{name}": value for name, value in row.items()} for row in batch])
    return added


_OUTCOME = (
    runs.update()
    # Not IN with a list: an expanding IN cannot be part of an executemany.
    .where(runs.c.id == bindparam("b_id"), or_(*(runs.c.status == status for status in ACTIVE)))
    .values(
        status=bindparam("b_status"),
        finished_at=bindparam("b_finished_at"),
        error=bindparam("b_error"),
        updated_at=bindparam("b_finished_at"),
    )
)


def _chunks(batch: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    """Slices of at most MAX_ROWS_PER_STATEMENT rows and about MAX_ERROR_CHARS of errors."""
    chunk: list[dict[str, Any]] = []
    size = 0
    for row in batch:
        length = len(row["error"] or "")
        if chunk and (len(chunk) == MAX_ROWS_PER_STATEMENT or size + length > MAX_ERROR_CHARS):
            yield chunk
            chunk, size = [], 0
        chunk.append(row)
        size += length
    if chunk:
        yield chunk


def _update_join(conn: Connection, rows: list[dict[str, Any]]) -> None:
    first = "SELECT %s AS id, %s AS status, %s AS finished_at, %s AS error"
    values = " UNION ALL ".join([first] + ["SELECT %s, %s, %s, %s"] * (len(rows) - 1))
    params: list[Any] = []
    for row in rows:
        finished = row["finished_at"].astimezone(UTC).replace(tzinfo=None)
        params += (row["id"], row["status"], finished, row["error"])
    active = ", ".join(f"'{status}'" for status in ACTIVE)
    conn.exec_driver_sql(
        f"UPDATE {runs.name} AS r JOIN ({values}) AS v ON r.id = v.id "
        "SET r.status = v.status, r.finished_at = v.finished_at, r.error = v.error, "
        f"r.updated_at = v.finished_at WHERE r.status IN ({active})",
        tuple(params),
    )
