"""What a scenario cost: CPU of the processes under test and of MariaDB, and MariaDB's counters."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from . import procs
from .store import Databases


def cpu_with_reaped(pids: Sequence[int]) -> float:
    """CPU of these processes and of the children they reaped (RQ's work-horses)."""
    return sum(procs.cpu_seconds(pid, reaped=True) or 0.0 for pid in pids)


class Costs:
    """Counters read when a scenario starts; `done()` gives the differences.

    `job_pids` are processes that run the jobs apart from the schedulers (jobservice's RQ
    workers): their CPU, with the work-horses they reaped, is given apart. `sched_pid` is
    the scheduling process (jobservice's leader): its own CPU is given apart too.
    """

    def __init__(
        self,
        dbs: Databases,
        pids: Sequence[int],
        job_pids: Sequence[int] = (),
        sched_pid: int | None = None,
    ) -> None:
        self.dbs, self.pids, self.job_pids = dbs, list(pids), list(job_pids)
        self.sched_pid = sched_pid
        self.db_pid = dbs.server_pid()
        self.start = self._read()

    def _read(self) -> dict[str, float]:
        db = procs.cpu_seconds(self.db_pid) if self.db_pid else None
        return {
            "cpu_s": sum(procs.cpu_seconds(pid) or 0.0 for pid in self.pids),
            "db_cpu_s": db or 0.0,
            "sched_cpu_s": (procs.cpu_seconds(self.sched_pid) or 0.0) if self.sched_pid else 0.0,
            "job_workers_cpu_s": cpu_with_reaped(self.job_pids),
            **{name: float(value) for name, value in self.dbs.status().items()},
        }

    def done(self, units: int | None = None, unit: str = "fire") -> dict[str, Any]:
        """CPU of the processes and of MariaDB, and MariaDB's counters, per `unit` when given.

        The counters are server-wide: they include the benchmark's own INSERT per fire.
        """
        end = self._read()
        delta = {name: end[name] - self.start[name] for name in end}
        out: dict[str, Any] = {
            "cpu_s": round(delta["cpu_s"], 2),
            "db_cpu_s": round(delta["db_cpu_s"], 2),
            "new_db_connections": int(delta["Connections"]),
        }
        if self.sched_pid:
            out["sched_cpu_s"] = round(delta["sched_cpu_s"], 3)
        if self.job_pids:
            out["job_workers_cpu_s"] = round(delta["job_workers_cpu_s"], 2)
        if units:
            per = {
                "cpu_ms": delta["cpu_s"] * 1000,
                "db_cpu_ms": delta["db_cpu_s"] * 1000,
                "db_statements": delta["Questions"],
                "db_pings": delta["Com_admin_commands"],
                "db_commits": delta["Com_commit"],
                "db_rollbacks": delta["Com_rollback"],
            }
            if self.sched_pid:
                per["sched_cpu_ms"] = delta["sched_cpu_s"] * 1000
            if self.job_pids:
                per["job_workers_cpu_ms"] = delta["job_workers_cpu_s"] * 1000
            out |= {f"{name}_per_{unit}": round(value / units, 3) for name, value in per.items()}
        return out
