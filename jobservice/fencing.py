"""Fencing at the database: once a newer leader has recorded its fence, an older one cannot act.

A lease only says who *should* lead. A leader cut off from Redis, paused or frozen can go on
for a moment believing it leads, while the others (who saw its connection vanish) already
elected a successor. So the database itself refuses such a leader's writes:

1. A new leader *records* its fence in `jobservice_cluster` before its first write,
   under an exclusive lock on that row (`record`).
2. Every claim, start, adoption, miss and advance ends its transaction by reading the
   recorded fence under a shared lock (`check`) and rolls back if it is higher than the
   writer's. The shared lock makes (1) wait for writes already under way, so each write of
   the old leader lands before the new fence is recorded, or is refused.

The check comes after the writes on purpose: SQLite takes its write lock at the first write
of a transaction, so a read after it sees every committed fence and no writer can commit
a new one before we do. MySQL/MariaDB and PostgreSQL hold the row lock until commit either way.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.engine import Connection, Engine

from .models import cluster_table, utcnow

state = cluster_table
ROW_ID = 1
_RECORDED = select(state.c.fence).where(state.c.id == ROW_ID)
_CHECK = _RECORDED.with_for_update(read=True)


class FencedOut(Exception):
    """A newer leader has recorded its fence: this writer no longer leads."""

    def __init__(self, fence: int, recorded: int) -> None:
        super().__init__(f"fence {fence} is superseded by fence {recorded}")
        self.fence = fence
        self.recorded = recorded


def check(conn: Connection, fence: int) -> None:
    """Refuse (roll back) the writes of this transaction if a higher fence was recorded."""
    recorded = conn.execute(_CHECK).scalar_one()
    if recorded > fence:
        raise FencedOut(fence, recorded)


def record(engine: Engine, fence: int) -> None:
    """Record a new leader's fence before it acts; FencedOut if an even newer one exists."""
    with engine.begin() as conn:
        newer = state.update().where(state.c.id == ROW_ID, state.c.fence < fence)
        conn.execute(newer.values(fence=fence, fence_at=utcnow()))
        check(conn, fence)


def recorded_fence(engine: Engine) -> int:
    """The highest fence any leader of this cluster has recorded (a floor for the next one)."""
    with engine.connect() as conn:
        return int(conn.execute(_RECORDED).scalar_one())
