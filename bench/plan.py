"""How big each scenario is, for the full run and for `--quick`, and what a run shares."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.engine import Engine

from .deploy import Deployment
from .procs import ROOT
from .report import source_digest
from .store import Databases

SCENARIOS = ("S1", "S2", "S3", "S4", "S5", "A1", "A2", "M1", "S6", "S7")


@dataclass(frozen=True)
class Plan:
    """Durations and sizes of every scenario."""

    name: str
    s1_s: int  # S1 window
    s2_observe_s: float  # after each strike
    s3_jobs: int
    s3_lead_s: float  # jobs are put in the store this long before they are due
    s4_sizes: tuple[int, ...]
    s4_s: int
    s4_lead_s: float
    #: S4 waits at most this long past its window for late fires; S5, with RQ workers, as
    #: long past its drain for what their queues still hold.
    late_wait_s: float
    s4_peers: tuple[str, ...]  # besides jobservice
    s5_jobs: int
    a1_jobs: int
    a1_requests: int  # timed GETs of the first page (jobservice)
    a1_full_attempts: int  # timed GETs of the whole list, each side (capped: they are slow)
    a1_full_timeout_s: float
    a2_s: float
    a2_clients: int
    s6_jobs: int
    s6_lead_s: float
    #: S7: the large store's jobs (all interval jobs, every s7_jobs / s7_due_per_s seconds,
    #: staggered) and run history, of which s7_old_runs are older than the retention.
    s7_jobs: int
    s7_due_per_s: int  # fires due each second, in both stores (the small one: that many jobs every 1 s)
    s7_history: int
    s7_old_runs: int
    s7_small_history: int
    s7_s: int  # each measured window of steady fires
    s7_requests: int  # timed GETs of each first page
    s7_purge_timeout_s: float  # the purge is waited for at most this long
    s6_burn_ms: float = 50.0  # CPU each S6 job burns
    s6_job_workers: int = 2  # Celery's prefork concurrency in S6
    rq_workers: int = 2  # RQ workers beside jobservice's RQ deployments (S1-S5 RQ rows, S6)
    cluster_workers: int = 3
    service_workers: int = 4


FULL = Plan(
    name="full",
    s1_s=20,
    s2_observe_s=5.0,
    s3_jobs=1000,
    s3_lead_s=10.0,
    s4_sizes=(200, 500),
    s4_s=10,
    s4_lead_s=3.0,
    late_wait_s=20.0,
    s4_peers=("plain", "naive"),
    s5_jobs=100,
    a1_jobs=100_000,
    a1_requests=100,
    a1_full_attempts=2,
    a1_full_timeout_s=120.0,
    a2_s=30.0,
    a2_clients=8,
    s6_jobs=200,
    s6_lead_s=4.0,
    # 1 % of 100 000 each second would be 1000 fires/s, more than the leader runs on 2
    # cores (about 500/s, S4): every job is due once per 200 s instead, 0.5 % a second.
    s7_jobs=100_000,
    s7_due_per_s=500,
    s7_history=10_000_000,
    s7_old_runs=1_000_000,
    s7_small_history=10_000,
    s7_s=10,
    s7_requests=20,
    s7_purge_timeout_s=1800.0,
)

QUICK = Plan(
    name="quick",
    s1_s=4,
    s2_observe_s=1.5,
    s3_jobs=300,
    s3_lead_s=3.0,
    s4_sizes=(200,),
    s4_s=3,
    s4_lead_s=2.0,
    late_wait_s=8.0,
    s4_peers=("naive",),
    s5_jobs=20,
    a1_jobs=10_000,
    a1_requests=20,
    a1_full_attempts=1,
    a1_full_timeout_s=60.0,
    a2_s=4.0,
    a2_clients=8,
    s6_jobs=60,
    s6_lead_s=2.0,
    s7_jobs=10_000,
    s7_due_per_s=100,
    s7_history=1_000_000,
    s7_old_runs=100_000,
    s7_small_history=10_000,
    s7_s=3,
    s7_requests=20,
    s7_purge_timeout_s=300.0,
)


@dataclass
class Context:
    """What every scenario of one run shares."""

    plan: Plan
    dbs: Databases
    fires_url: str
    fires: Engine
    redis_url: str
    log_dir: Path
    profile_dir: Path | None
    only: frozenset[str]
    deployments: list[Deployment] = field(default_factory=list)
    #: Digest of jobservice's code when each deployment was made: the tree may be edited meanwhile.
    code: dict[str, str] = field(default_factory=dict)
    #: Whether jobservice has its RQ executor (`flask jobservice worker`), once asked.
    rq_available: bool | None = None

    def wants(self, *scenarios: str) -> bool:
        return any(s in self.only for s in scenarios)

    def has_rq(self, d: Deployment) -> bool:
        """Whether jobservice has its RQ executor (asked once per run, through `d`)."""
        if self.rq_available is None:
            self.rq_available = d.has_rq_worker()
        return self.rq_available

    def deployment(
        self,
        kind: str,
        name: str,
        masters: int = 1,
        workers: int = 1,
        rq_workers: int = 0,
        driver: str = "pymysql",
        env: dict[str, str] | None = None,
    ) -> Deployment:
        """A new deployment on a database of its own (not started); `env`: more settings."""
        url = self.dbs.create(f"_{len(self.deployments) + 1}")
        deployment = Deployment(
            kind,
            name,
            url,
            fires_url=self.fires_url,
            redis_url=self.redis_url,
            log_dir=self.log_dir,
            masters=masters,
            workers=workers,
            rq_workers=rq_workers,
            celery_concurrency=self.plan.s6_job_workers,
            driver=driver,
            env=env,
        )
        self.deployments.append(deployment)
        self.code[name] = source_digest(ROOT)
        return deployment
