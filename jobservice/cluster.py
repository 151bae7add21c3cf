"""The cluster's shared state in the database: its identity, and whether it runs.

Kept in the database, not in Redis, so a pause or a shutdown survives restarts of
everything. The states are Flask-APScheduler's (APScheduler's numbers): running (1),
paused (2, still "running"), stopped (0, after a shutdown).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Engine

from . import fencing
from .models import cluster_table, utcnow

state = cluster_table
ROW_ID = 1
RUNNING, PAUSED, STOPPED = "running", "paused", "stopped"


class Cluster:
    """Reads and writes the single cluster-state row."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._cluster_id: str | None = None

    @property
    def cluster_id(self) -> str:
        """A UUID made by the first migration: one per database, so one per deployment."""
        if self._cluster_id is None:
            with self.engine.connect() as conn:
                self._cluster_id = conn.execute(
                    select(state.c.cluster_id).where(state.c.id == ROW_ID)
                ).scalar_one()
        return self._cluster_id

    def fence_floor(self) -> int:
        """The highest fencing number any leader of this cluster has recorded."""
        return fencing.recorded_fence(self.engine)

    def record_fence(self, fence: int) -> None:
        """Record a new leader's fence (FencedOut if a newer one is recorded already)."""
        fencing.record(self.engine, fence)

    def record_pass(self) -> None:
        """The leader finished a pass (it calls this at most every half lease)."""
        with self.engine.begin() as conn:
            conn.execute(state.update().where(state.c.id == ROW_ID).values(last_pass_at=utcnow()))

    def snapshot(self) -> dict[str, Any]:
        """The whole row, for /health, `scheduler status` and metrics."""
        with self.engine.connect() as conn:
            row = conn.execute(select(state).where(state.c.id == ROW_ID)).one()
        return dict(row._mapping)

    def state(self) -> str:
        """ "running", "paused" or "stopped"."""
        with self.engine.connect() as conn:
            row = conn.execute(select(state.c.paused, state.c.stopped).where(state.c.id == ROW_ID)).one()
        return STOPPED if row.stopped else PAUSED if row.paused else RUNNING

    def halted(self) -> bool:
        """True while due jobs must not be processed (paused or stopped)."""
        return self.state() != RUNNING

    def set_paused(self, paused: bool) -> bool:
        """Pause or resume processing everywhere; True if this changed the state."""
        return self._set(state.c.paused != paused, paused=paused)

    def start(self, paused: bool = False) -> bool:
        """Start a stopped cluster (paused, if asked); False if it was not stopped."""
        return self._set(state.c.stopped.is_(True), stopped=False, paused=paused)

    def stop(self) -> bool:
        """Shut the cluster down (nothing is processed until a start); False if already stopped."""
        return self._set(state.c.stopped.is_(False), stopped=True)

    def _set(self, condition: Any, **values: Any) -> bool:
        with self.engine.begin() as conn:
            result = conn.execute(
                state.update().where(state.c.id == ROW_ID, condition).values(**values, updated_at=utcnow())
            )
            return result.rowcount == 1
