"""The project's targets for jobservice, checked against one run's results."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .report import Results, fmt


def _get(results: Results, scenario: str, peer: str, key: str) -> Any:
    return results.get(scenario, {}).get(peer, {}).get(key)


def _le(value: Any, limit: float) -> bool | None:
    return None if not isinstance(value, int | float) else value <= limit


def targets(results: Results) -> list[tuple[str, str, str]]:
    """(target, measured, met) for the project's targets that this run measured."""

    def ours(scenario: str, key: str, limit: float) -> Callable[[], tuple[str, bool | None]]:
        return lambda: _show(_get(results, scenario, "ours", key), _le, limit)

    checks: list[tuple[str, list[str], Callable[[], tuple[str, bool | None]]]] = [
        ("S1 zero duplicate fires", ["S1"], ours("S1", "duplicates", 0)),
        ("S2 next fire <= 1 s after kill -9", ["S2"], ours("S2", "kill9_next_fire_s", 1.0)),
        ("S2 next fire <= 0.5 s after SIGTERM", ["S2"], ours("S2", "sigterm_next_fire_s", 0.5)),
        ("S2 zero duplicates", ["S2"], ours("S2", "duplicates", 0)),
        ("S3 makespan <= half of APScheduler's", ["S3"], lambda: _s3(results)),
        ("S3 none dropped", ["S3"], ours("S3", "dropped", 0)),
        ("S4 largest N: fires/s within 5% of ideal", ["S4"], lambda: _s4_rate(results)),
        ("S4 largest N: p99 lateness <= 100 ms", ["S4"], lambda: _s4_late(results)),
        ("S5 all fire once", ["S5"], lambda: _s5(results)),
        ("S5 p99 lateness <= 100 ms", ["S5"], ours("S5", "p99_late_ms", 100)),
        ("A1 first page of 100 p50 <= 20 ms", ["A1"], ours("A1", "p50_ms", 20)),
        ("A2 >= 0.9x naive throughput", ["A2"], lambda: _a2(results)),
        ("A2 zero errors", ["A2"], ours("A2", "errors", 0)),
        ("M1 worker <= naive worker + 15 MiB", ["M1"], lambda: _m1(results)),
    ]
    out = []
    for name, needs, check in checks:
        if not any(k.split("-")[0] in needs for k in results):
            continue
        measured, met = check()
        out.append((name, measured, "-" if met is None else ("met" if met else "MISSED")))
    return out


def _show(value: Any, test: Callable[[Any, float], bool | None], limit: float) -> tuple[str, bool | None]:
    return (fmt(value, "n") if not isinstance(value, float) else f"{value:.3f}"), test(value, limit)


def _s3(r: Results) -> tuple[str, bool | None]:
    ours, theirs = _get(r, "S3", "ours", "makespan_s"), _get(r, "S3", "plain", "makespan_s")
    if not isinstance(ours, float) or not isinstance(theirs, float):
        return "-", None
    return f"{ours:.3f} s vs {theirs:.3f} s (ratio {ours / theirs:.2f})", ours <= theirs / 2


def _largest_s4(r: Results) -> str | None:
    sizes = [k for k in r if k.startswith("S4-")]
    return max(sizes, key=lambda k: int(k.split("-")[1])) if sizes else None


def _s4_rate(r: Results) -> tuple[str, bool | None]:
    key = _largest_s4(r)
    share = _get(r, key, "ours", "share_of_ideal") if key else None
    if share is None or key is None:
        return "-", None
    return f"{key}: {_get(r, key, 'ours', 'fires_per_s'):.1f}/s = {share:.1%} of ideal", share >= 0.95


def _s4_late(r: Results) -> tuple[str, bool | None]:
    key = _largest_s4(r)
    p99 = _get(r, key, "ours", "p99_late_ms") if key else None
    return (f"{key}: {p99:.1f} ms" if p99 is not None else "-"), _le(p99, 100)


def _s5(r: Results) -> tuple[str, bool | None]:
    ours = r.get("S5", {}).get("ours")
    if not ours:
        return "-", None
    ok = ours["fired"] == ours["posted"] and ours["duplicates"] == 0
    return f"{ours['fired']}/{ours['posted']} fired, {ours['duplicates']} duplicates", ok


def _a2(r: Results) -> tuple[str, bool | None]:
    ours, theirs = _get(r, "A2", "ours", "requests_per_s"), _get(r, "A2", "naive", "requests_per_s")
    if not ours or not theirs:
        return "-", None
    return f"{ours:.0f}/s vs {theirs:.0f}/s (ratio {ours / theirs:.2f})", ours >= 0.9 * theirs


def _m1(r: Results) -> tuple[str, bool | None]:
    parts, met = [], True
    for key in ("start_mib", "after_s4_mib"):
        ours, theirs = _get(r, "M1", "ours", key), _get(r, "M1", "naive", key)
        if ours is None or theirs is None:
            continue
        parts.append(f"{key.removesuffix('_mib')}: +{ours - theirs:.1f} MiB")
        met = met and ours - theirs <= 15
    return (", ".join(parts) or "-"), (met if parts else None)
