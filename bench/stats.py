"""Figures computed from recorded fires: duplicates, gaps, lateness, percentiles."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence

from .store import Fire


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0-100) with linear interpolation, as numpy's default."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def slot(fire: Fire) -> tuple[str, float | None]:
    """The fire time a fire belongs to: (job id, scheduled time to the millisecond)."""
    return fire.job_id, None if fire.sched is None else round(fire.sched, 3)


def duplicates(fires: Iterable[Fire]) -> int:
    """Fires beyond the first of their (job, scheduled time)."""
    counts = Counter(slot(f) for f in fires)
    return sum(n - 1 for n in counts.values())


def first_fires(fires: Iterable[Fire]) -> list[Fire]:
    """The earliest fire of each (job, scheduled time)."""
    first: dict[tuple[str, float | None], Fire] = {}
    for fire in sorted(fires, key=lambda f: f.started):
        first.setdefault(slot(fire), fire)
    return list(first.values())


def lateness_ms(fires: Iterable[Fire]) -> list[float]:
    return [(f.started - f.sched) * 1000 for f in fires if f.sched is not None]


def largest_gap_s(fires: Iterable[Fire]) -> float | None:
    starts = sorted(f.started for f in fires)
    return max((b - a for a, b in zip(starts, starts[1:], strict=False)), default=None)


def in_window(fires: Iterable[Fire], start: float, end: float) -> list[Fire]:
    """Fires scheduled in [start, end)."""
    return [f for f in fires if f.sched is not None and start - 1e-6 <= f.sched < end - 1e-6]


def lateness_figures(fires: Sequence[Fire]) -> dict[str, float | None]:
    late = lateness_ms(fires)
    return {
        "p50_late_ms": percentile(late, 50),
        "p99_late_ms": percentile(late, 99),
        "max_late_ms": max(late, default=None),
    }
