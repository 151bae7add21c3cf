"""A start transaction whose COMMIT gets no answer, as when the database dies right then."""

from __future__ import annotations

import threading
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine


class LostCommitAnswers:
    """The next `count` commits of a start transaction (the one that sets started_at) get no
    answer: the driver raises 'lost connection' after the commit `landed`, or instead of it.
    The database, not a double, keeps the rows: only the answer to COMMIT is taken away."""

    def __init__(self, engine: Engine, landed: bool, count: int = 1) -> None:
        self.engine, self.landed, self.left = engine, landed, count
        self.lost = 0
        self._lock = threading.Lock()
        self._starting: set[int] = set()
        self._do_commit = engine.dialect.do_commit
        event.listen(engine, "before_cursor_execute", self._watch)
        engine.dialect.do_commit = self._commit  # type: ignore[method-assign]

    def _watch(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        assignments = statement.split("WHERE")[0]
        if assignments.startswith("UPDATE jobservice_runs SET") and "started_at=" in assignments:
            self._starting.add(id(conn.connection))

    def _commit(self, dbapi_connection: Any) -> None:  # the pool's proxy of it, as in _watch
        with self._lock:
            lose = id(dbapi_connection) in self._starting and self.left > 0
            self._starting.discard(id(dbapi_connection))
            if lose:
                self.left -= 1
                self.lost += 1
        if not lose:
            self._do_commit(dbapi_connection)
            return
        if self.landed:
            self._do_commit(dbapi_connection)
        else:
            dbapi_connection.rollback()
        raise self.engine.dialect.loaded_dbapi.OperationalError(
            2013, "Lost connection to server during query"
        )

    def close(self) -> None:
        event.remove(self.engine, "before_cursor_execute", self._watch)
        self.engine.dialect.do_commit = self._do_commit  # type: ignore[method-assign]
