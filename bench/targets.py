"""The project's targets for jobservice, checked against one run's results."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .deploy import OURS_SPREAD
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
        ("S3 makespan <= 0.5x APScheduler's", ["S3"], lambda: _half(results, "S3", "makespan_s")),
        ("S3 none dropped", ["S3"], ours("S3", "dropped", 0)),
        (
            "S3 CPU per fire, scheduling process <= 0.5x APScheduler's",
            ["S3"],
            lambda: _half(results, "S3", "sched_cpu_ms_per_fire"),
        ),
        ("S4 largest N: fires/s within 5% of ideal", ["S4"], lambda: _s4_rate(results)),
        (
            "S4 largest N: p99 lateness <= 0.5x APScheduler's",
            ["S4"],
            lambda: _half(results, _largest_s4(results), "p99_late_ms"),
        ),
        (
            "S4 largest N: CPU per fire, scheduling process <= 0.5x APScheduler's",
            ["S4"],
            lambda: _half(results, _largest_s4(results), "sched_cpu_ms_per_fire"),
        ),
        (
            "S3 spread runs: makespan <= 0.5x APScheduler's",
            ["S3"],
            lambda: _half(results, "S3", "makespan_s", OURS_SPREAD),
        ),
        (
            "S3 spread runs: CPU per fire, scheduling process <= 0.5x APScheduler's",
            ["S3"],
            lambda: _half(results, "S3", "sched_cpu_ms_per_fire", OURS_SPREAD),
        ),
        (
            "S4 spread runs, largest N: p99 lateness <= 0.5x APScheduler's",
            ["S4"],
            lambda: _half(results, _largest_s4(results), "p99_late_ms", OURS_SPREAD),
        ),
        (
            "S4 spread runs, largest N: CPU per fire, scheduling process <= 0.5x APScheduler's",
            ["S4"],
            lambda: _half(results, _largest_s4(results), "sched_cpu_ms_per_fire", OURS_SPREAD),
        ),
        (
            "S1 spread runs: zero duplicate fires",
            ["S1"],
            lambda: _show(_get(results, "S1", OURS_SPREAD, "duplicates"), _le, 0),
        ),
        (
            "S2 spread runs: next fire <= 1 s after kill -9",
            ["S2"],
            lambda: _show(_get(results, "S2", OURS_SPREAD, "kill9_next_fire_s"), _le, 1.0),
        ),
        ("S5 all fire once", ["S5"], lambda: _s5(results)),
        ("S5 p99 lateness <= 100 ms", ["S5"], ours("S5", "p99_late_ms", 100)),
        ("A1 first page of 100 p50 <= 20 ms", ["A1"], ours("A1", "p50_ms", 20)),
        ("A2 >= 1.0x naive throughput", ["A2"], lambda: _a2(results)),
        ("A2 zero errors", ["A2"], ours("A2", "errors", 0)),
        ("M1 worker <= naive worker + 10 MiB", ["M1"], lambda: _m1(results)),
        (
            "S7 pass cost (leader CPU per fire), large store <= 1.2x small store's",
            ["S7"],
            lambda: _times(results, "S7", "small", "sched_cpu_ms_per_fire", 1.2),
        ),
        (
            "S7 p99 lateness, large store <= 1.2x small store's",
            ["S7"],
            lambda: _times(results, "S7", "small", "p99_late_ms", 1.2),
        ),
        (
            "S7 GET /scheduler/runs first page p50, large history <= 2x small history's",
            ["S7"],
            lambda: _times(results, "S7", "small", "runs_p50_ms", 2.0),
        ),
        (
            "S7 GET a job's runs first page p50, large history <= 2x small history's",
            ["S7"],
            lambda: _times(results, "S7", "small", "job_runs_p50_ms", 2.0),
        ),
        (
            "S7 p99 lateness during the purge <= 1.2x without (large store)",
            ["S7"],
            lambda: _times(results, "S7-purge", "large_steady", "p99_late_ms", 1.2),
        ),
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


def _half(r: Results, scenario: str | None, key: str, row: str = "ours") -> tuple[str, bool | None]:
    """Ours (the `row` variant) at most half of plain APScheduler's, in the same run."""
    if scenario is None:
        return "-", None
    ours, theirs = _get(r, scenario, row, key), _get(r, scenario, "plain", key)
    if not isinstance(ours, int | float) or not isinstance(theirs, int | float) or not theirs:
        return "-", None
    unit = " s" if key.endswith("_s") else " ms"
    text = f"{scenario}: {ours:.3f}{unit} vs {theirs:.3f}{unit} (ratio {ours / theirs:.2f})"
    return text, ours <= theirs / 2


def _times(r: Results, scenario: str, base: str, key: str, limit: float) -> tuple[str, bool | None]:
    """Ours at most `limit` times the `base` row's figure (S7: large store against small)."""
    ours, theirs = _get(r, scenario, "ours", key), _get(r, scenario, base, key)
    if not isinstance(ours, int | float) or not isinstance(theirs, int | float) or not theirs:
        return "-", None
    return f"{ours:.3f} ms vs {theirs:.3f} ms (ratio {ours / theirs:.2f})", ours <= theirs * limit


def _largest_s4(r: Results) -> str | None:
    sizes = [k for k in r if k.startswith("S4-")]
    return max(sizes, key=lambda k: int(k.split("-")[1])) if sizes else None


def _s4_rate(r: Results) -> tuple[str, bool | None]:
    key = _largest_s4(r)
    share = _get(r, key, "ours", "share_of_ideal") if key else None
    if share is None or key is None:
        return "-", None
    return f"{key}: {_get(r, key, 'ours', 'fires_per_s'):.1f}/s = {share:.1%} of ideal", share >= 0.95


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
    return f"{ours:.0f}/s vs {theirs:.0f}/s (ratio {ours / theirs:.2f})", ours >= theirs


def _m1(r: Results) -> tuple[str, bool | None]:
    parts, met = [], True
    for key in ("start_mib", "after_s4_mib"):
        ours, theirs = _get(r, "M1", "ours", key), _get(r, "M1", "naive", key)
        if ours is None or theirs is None:
            continue
        parts.append(f"{key.removesuffix('_mib')}: +{ours - theirs:.1f} MiB")
        met = met and ours - theirs <= 10
    return (", ".join(parts) or "-"), (met if parts else None)
