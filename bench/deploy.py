"""The systems under test: jobservice and the Flask-APScheduler peers under gunicorn, plain
APScheduler, Celery.

A Deployment is one or more gunicorn masters (each standing for a host) sharing one
store database, or one or more plain APScheduler processes sharing it, or Celery's beat
and one worker. jobservice with `rq_workers` runs its RQ executor, with that many
`flask jobservice worker` processes beside its masters.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from . import procs, rqworkers
from .benchjobs import FIRES_URL_ENV
from .store import JOB_FUNC, create_apscheduler_table

BIN = Path(sys.executable).parent
#: Settings jobservice reads; ours are set explicitly, inherited ones are dropped.
SERVICE_VARS = (
    "JOBSERVICE_ENV", "DATABASE_URL", "REDIS_URL", "LEADER_LEASE_SECONDS", "JOB_PACKAGES",
    "RUN_RETENTION_DAYS", "RUN_RETENTION_PER_JOB", "DB_AUTO_UPGRADE", "LOG_LEVEL", "RQ_QUEUE_PREFIX",
)  # fmt: skip
REDIS_PORT_DEFAULT = 6379
READY_TIMEOUT_S = 90.0
FAR_FUTURE = "2099-01-01T00:00:00+00:00"
KINDS = ("ours", "naive", "flock", "plain", "celery")
#: Results key of jobservice with its RQ executor in S1-S5 (beside "ours", its thread executor).
OURS_RQ = "ours_rq"
#: Results key of jobservice (thread executor) on the C MySQL driver, mysqlclient (mysql+mysqldb).
OURS_MYSQLDB = "ours_mysqldb"
#: Results key of jobservice (thread executor) spreading its runs over every worker (SPREAD_RUNS).
OURS_SPREAD = "ours_spread"
#: The setting that makes it so.
SPREAD_ENV = {"SPREAD_RUNS": "true"}


@dataclass
class Master:
    """One gunicorn master and its workers, reachable on 127.0.0.1:port."""

    name: str
    proc: subprocess.Popen[bytes]
    port: int
    workers: int

    @property
    def pid(self) -> int:
        return self.proc.pid

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def worker_pids(self) -> list[int]:
        return procs.children(self.pid)


class Deployment:
    """One system under test on its own store database."""

    def __init__(
        self,
        kind: str,
        name: str,
        store_url: str,
        *,
        fires_url: str,
        redis_url: str,
        log_dir: Path,
        masters: int = 1,
        workers: int = 1,
        rq_workers: int = 0,
        celery_concurrency: int = 2,
        driver: str = "pymysql",
        env: dict[str, str] | None = None,
    ) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown kind {kind!r}")
        self.kind, self.name, self.store_url = kind, name, store_url
        self.fires_url, self.redis_url = fires_url, redis_url
        self.log_dir = log_dir
        self.ready_dir = log_dir / f"{name}.ready"
        self.n_masters, self.n_workers = masters, workers
        self.n_rq_workers, self.celery_concurrency = rq_workers, celery_concurrency
        #: jobservice's MySQL driver (its own statements; the job body always uses PyMySQL).
        self.driver = driver
        #: More settings of jobservice's (S7's retention), beside those every deployment gets.
        self.extra_env = dict(env or {})
        #: Every Redis key of its RQ queues or of Celery contains this (the database's name).
        self.redis_prefix = f"{make_url(store_url).database}_"
        self.masters: list[Master] = []
        #: Processes without a gunicorn master: plain APScheduler's, or Celery's beat and worker.
        self.plain: list[subprocess.Popen[bytes]] = []
        self.rq: list[subprocess.Popen[bytes]] = []
        #: RQ's keys of our RQ workers, noted while they run (for the clean-up at the end).
        self.rq_worker_keys: set[str] = set()
        self._kicks = 0
        self._starts = 0
        self._tables_made = False

    # Start and stop ------------------------------------------------------------------

    def start_tables(self) -> None:
        """The tables, made before the processes start: a peer's job table (they would race
        to create it), and jobservice's schema with `flask db upgrade`, as its README deploys."""
        if self._tables_made or self.kind == "celery":
            return
        self._tables_made = True
        if self.kind != "ours":
            create_apscheduler_table(self.store_url)
            return
        log = self.log_dir / f"{self.name}-upgrade.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("wb") as out:
            subprocess.run(
                [str(BIN / "flask"), "--app", "run", "db", "upgrade"],
                cwd=procs.ROOT,
                env=self._tool_env(),
                stdout=out,
                stderr=subprocess.STDOUT,
                check=True,
            )

    def start(self) -> Deployment:
        self.ready_dir.mkdir(parents=True, exist_ok=True)
        self.start_tables()
        if self.kind == "celery":
            self._start_celery()
        else:
            for index in range(self.n_masters):
                self.start_one(index)
        for index in range(self.n_rq_workers):
            self._start_rq_worker(index)
        self.wait_ready()
        return self

    def _start_celery(self) -> None:
        """Beat, then one worker (its pool's processes are its children)."""
        for role in ("beat", "worker"):
            argv = [sys.executable, "-m", "celery", "-A", "bench.peer_celery", role, "--loglevel", "WARNING"]
            self.plain.append(procs.spawn(argv, self._env(), self.log_dir / f"{self.name}-{role}.log"))

    def _start_rq_worker(self, index: int) -> None:
        env = self._env()
        # Its own metrics directory, as each master has (never the checkout's instance/).
        metrics_dir = self.log_dir / f"{self.name}-rq-{index}.prometheus"
        metrics_dir.mkdir(parents=True, exist_ok=True)
        env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
        self.rq.append(rqworkers.spawn(BIN / "flask", env, self.log_dir / f"{self.name}-rq-{index}.log"))

    def has_rq_worker(self) -> bool:
        """Whether this jobservice has the `flask jobservice worker` command (its RQ executor)."""
        return rqworkers.available(BIN / "flask", self._tool_env())

    def start_one(self, index: int) -> None:
        """Start master (or plain process) number `index`."""
        log = self.log_dir / f"{self.name}-{index}.log"
        if self.kind == "plain":
            self.plain.append(procs.spawn([sys.executable, "-m", "bench.peer_plain"], self._env(), log))
            return
        port = procs.free_port()
        app = "run:app" if self.kind == "ours" else "bench.peer_flask:app"
        argv = [str(BIN / "gunicorn"), "--workers", str(self.n_workers), "--bind", f"127.0.0.1:{port}"]
        argv += ["--no-control-socket", "--log-level", "warning", "--graceful-timeout", "10", app]
        self._starts += 1
        env = self._env()
        if self.kind == "ours":
            # Each master stands for a host: its own, fresh prometheus_client multi-process
            # directory (jobservice's default is instance/ of the checkout, shared by every
            # process started from it).
            metrics_dir = self.log_dir / f"{self.name}-{index}-{self._starts}.prometheus"
            metrics_dir.mkdir(parents=True, exist_ok=True)
            env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
        master = Master(f"{self.name}-{index}", procs.spawn(argv, env, log), port, self.n_workers)
        if index < len(self.masters):
            self.masters[index] = master
        else:
            self.masters.append(master)

    def restart_stopped(self) -> None:
        """Start again any master (or plain process) that is no longer running."""
        restarted = False
        for index, master in enumerate(self.masters):
            if master.proc.poll() is not None:
                procs.kill_group(master.proc)  # its workers may still be finishing
                self.start_one(index)
                restarted = True
        if restarted:
            self.wait_ready()

    def stop(self) -> None:
        rqworkers.stop(self.rq)
        for proc in [m.proc for m in self.masters] + self.plain:
            procs.kill_group(proc)

    def _env(self) -> dict[str, str]:
        env = {
            k: v for k, v in os.environ.items() if k not in SERVICE_VARS and not k.startswith("SCHEDULER_")
        }
        env.update(
            PYTHONUNBUFFERED="1",
            BENCH_READY_DIR=str(self.ready_dir),
            BENCH_STORE_URL=self.store_url,
            BENCH_PEER_MODE=self.kind,
            BENCH_FLOCK_PATH=str(self.log_dir / f"{self.name}.flock"),
            BENCH_REDIS_URL=self.redis_url,
            BENCH_REDIS_PREFIX=self.redis_prefix,
            BENCH_CELERY_CONCURRENCY=str(self.celery_concurrency),
            **{FIRES_URL_ENV: self.fires_url},
        )
        if self.kind == "ours":
            env.update(
                JOBSERVICE_ENV="testing",
                DATABASE_URL=self.store_url.replace("mysql+pymysql:", f"mysql+{self.driver}:", 1),
                REDIS_URL=self.redis_url,
                JOB_PACKAGES="jobs,bench.benchjobs",
                SCHEDULER_API_TOKEN="",
                LOG_LEVEL="warning",
            )
            env.update(self.extra_env)
        if self.kind == "ours" and self.n_rq_workers:
            # RQ_QUEUE_PREFIX fills jobservice's JOBSERVICE_RQ_QUEUE_PREFIX.
            env.update(SCHEDULER_EXECUTOR="rq", RQ_QUEUE_PREFIX=self.redis_prefix)
        return env

    def _tool_env(self) -> dict[str, str]:
        """For a one-off `flask` command: its metrics files go to the logs, never to the
        checkout's instance/ (jobservice's default)."""
        metrics_dir = self.log_dir / f"{self.name}-tools.prometheus"
        metrics_dir.mkdir(parents=True, exist_ok=True)
        return {**self._env(), "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}

    # Readiness ------------------------------------------------------------------------

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Every master answers and every worker (or process) has finished starting."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for proc in [m.proc for m in self.masters] + self.plain + self.rq:
                if proc.poll() is not None:
                    raise RuntimeError(
                        f"{self.name}: a process exited with {proc.returncode}\n{self.log_tail()}"
                    )
            if self._ready():
                return
            time.sleep(0.1)
        raise RuntimeError(f"{self.name}: not ready after {timeout_s:.0f}s\n{self.log_tail()}")

    def _ready(self) -> bool:
        if self.rq and self._rq_workers_ready() < len(self.rq):
            return False
        if self.kind in ("plain", "celery"):
            return all((self.ready_dir / str(p.pid)).exists() for p in self.plain)
        for master in self.masters:
            if master.proc.poll() is not None:
                continue  # struck on purpose
            pids = master.worker_pids()
            if len(pids) != master.workers or not all(self._worker_ready(pid) for pid in pids):
                return False
            try:
                status, body = procs.http("GET", master.url(self.health_path), timeout_s=2)
            except OSError:
                return False
            if status != 200 or (self.kind == "ours" and not (body or {}).get("leader")):
                return False
        return True

    def _worker_ready(self, pid: int) -> bool:
        if self.kind == "ours":
            # The elector's lease connection to Redis opens when the worker joins the election.
            return self.redis_port in procs.remote_ports(pid)
        return (self.ready_dir / str(pid)).exists()

    def _rq_workers_ready(self) -> int:
        """RQ workers registered on one of our queues; their keys are noted for the clean-up."""
        live = rqworkers.registered(self.redis_url, self.redis_prefix)
        self.rq_worker_keys |= live
        return len(live)

    def rq_backlog(self) -> int:
        """Runs its RQ workers have yet to finish (0 without RQ workers)."""
        return rqworkers.backlog(self.redis_url, self.redis_prefix) if self.rq else 0

    def drain_rq(self, timeout_s: float) -> float:
        """Wait until its RQ workers have nothing queued or started (at most `timeout_s`), so
        that one scenario's backlog does not run into the next; returns the seconds waited."""
        began = time.monotonic()
        while self.rq_backlog() and time.monotonic() - began < timeout_s:
            time.sleep(0.25)
        return round(time.monotonic() - began, 1)

    @property
    def variant(self) -> str:
        """Its key in the results and in the fires' tags: the kind, or OURS_RQ for jobservice
        with its RQ executor, OURS_MYSQLDB on mysqlclient, OURS_SPREAD spreading its runs."""
        if self.kind == "ours" and self.n_rq_workers:
            return OURS_RQ
        if self.kind == "ours" and self.extra_env.get("SPREAD_RUNS") == "true":
            return OURS_SPREAD
        return OURS_MYSQLDB if self.kind == "ours" and self.driver == "mysqldb" else self.kind

    @property
    def redis_port(self) -> int:
        tail = self.redis_url.rsplit(":", 1)[-1].split("/")[0]
        return int(tail) if tail.isdigit() else REDIS_PORT_DEFAULT

    @property
    def health_path(self) -> str:
        return "/health" if self.kind == "ours" else "/scheduler"

    # Jobs -----------------------------------------------------------------------------

    def live_masters(self) -> list[Master]:
        return [m for m in self.masters if m.proc.poll() is None]

    def post_job(self, body: dict[str, Any], master: Master | None = None) -> int:
        """POST /scheduler/jobs to the given master, or a random live one; returns the status."""
        target = master or random.choice(self.live_masters())
        status, _ = procs.http("POST", target.url("/scheduler/jobs"), body)
        return status

    def kick(self) -> None:
        """Make the schedulers look at the store now, after jobs were put in it with SQL."""
        if self.kind == "plain":
            for proc in self.plain:
                if proc.poll() is None:
                    os.kill(proc.pid, signal.SIGUSR1)
            return
        # Adding a job through the API is what wakes a scheduler; this one never fires.
        self._kicks += 1
        job_id = f"kick-{self._kicks}"
        body = {
            "id": job_id,
            "func": JOB_FUNC,
            "args": ["kick", job_id],
            "trigger": "date",
            "run_date": FAR_FUTURE,
        }
        for master in self.live_masters():
            self.post_job({**body, "id": f"{job_id}-{master.name}"}, master)

    def leader_pid(self) -> int | None:
        """jobservice's leader as /health reports it ("host:pid")."""
        for master in self.live_masters():
            try:
                status, body = procs.http("GET", master.url("/health"), timeout_s=2)
            except OSError:
                continue
            leader = (body or {}).get("leader") if status == 200 else None
            if leader:
                return int(leader.rsplit(":", 1)[1])
        return None

    def master_of(self, pid: int) -> Master | None:
        parent = procs.parent(pid)
        return next((m for m in self.masters if m.pid == parent), None)

    def processes(self) -> list[int]:
        """Worker pids (gunicorn) or process pids (plain; Celery's beat and worker)."""
        if self.kind in ("plain", "celery"):
            return [p.pid for p in self.plain if p.poll() is None]
        return [pid for m in self.live_masters() for pid in m.worker_pids()]

    def job_processes(self) -> list[int]:
        """Processes that run the jobs apart from the schedulers: RQ workers, Celery's pool."""
        if self.kind == "celery":
            return [child for p in self.plain if p.poll() is None for child in procs.children(p.pid)]
        return [p.pid for p in self.rq if p.poll() is None]

    def count_in_logs(self, needle: str) -> int:
        return sum(
            p.read_text(errors="replace").count(needle) for p in self.log_dir.glob(f"{self.name}-*.log")
        )

    def log_tail(self, chars: int = 3000) -> str:
        texts = []
        for path in sorted(self.log_dir.glob(f"{self.name}-*.log")):
            texts.append(f"--- {path.name}\n{path.read_text(errors='replace')[-chars:]}")
        return "\n".join(texts)
