"""The cluster's shared state in the database: its identity and whether it is paused.

Kept in the database, not in Redis, so a pause survives restarts of everything.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Engine

from . import fencing
from .models import ClusterState, utcnow

state = ClusterState.__table__
ROW_ID = 1


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

    def paused(self) -> bool:
        with self.engine.connect() as conn:
            return bool(conn.execute(select(state.c.paused).where(state.c.id == ROW_ID)).scalar_one())

    def set_paused(self, paused: bool) -> bool:
        """Pause or resume processing everywhere; True if this changed the state."""
        with self.engine.begin() as conn:
            result = conn.execute(
                state.update()
                .where(state.c.id == ROW_ID, state.c.paused != paused)
                .values(paused=paused, updated_at=utcnow())
            )
            return result.rowcount == 1
