"""`python -m bench.dashboard [--jobs 10000] [--runs 100000] [--requests 20] [--database mariadb|sqlite]`:
how fast the dashboard's pages answer with a large store, over HTTP, without a browser.

The dashboard's promise (its issue): every view answers 200 in under a second with 10 000
jobs and 100 000 runs in the store, and stays fast with a million runs, because every page
is paged in the database and costs a few statements, never one per row. This measures that
on the real service, as the README deploys it, and says which view breaks it and why:

1. A database of its own (`bench_<random>_ui` on MariaDB, or a SQLite file), its schema
   made with `flask --app run db upgrade`. The jobs are added through the service's own
   Operations (`add_many`, 1000 a transaction), so their rows are exactly what it writes:
   cron, interval and date triggers, six functions, about 10 % paused (next_run_time
   nulled in one UPDATE). None is due during the run (start dates two days ahead), so the
   leader runs nothing but the service's own jobs. The run history is bulk-inserted
   (multi-row INSERTs of 5000): one timeline over 28 days, newest id newest, 5 % of it one
   "hot" job's (an every-minute job with a long history), the rest spread over the other
   cron and interval jobs (a few of them, and every date job, never ran); 5 % failed with
   a traceback, 2 % missed, a few with prevented second claims.
2. gunicorn with 2 workers (`run:app`), closed with SCHEDULER_API_TOKEN, the dashboard on
   (SCHEDULER_UI_ENABLED), JOBSERVICE_ENV=production by default; signed in once through
   the sign-in form (its CSRF field), as a browser would.
3. Each view: 2 untimed requests (both workers warm), then `--requests` sequential timed
   ones, a new connection each (gunicorn's sync workers close it). Every answer must be
   200; the latency is from connecting to the last byte of the body. PASS: all 200 and
   the slowest answer under 1 s.
4. Statements per view: the same pages once more in this process (Flask's test client on
   an app built with the same settings, its scheduler not started), counting every
   statement the service's engine executes (`before_cursor_execute`) and timing the
   slowest. For a view whose p50 is over 300 ms (or every view, with `--explain`), each of
   its SELECTs is EXPLAINed on the same database.

Everything it starts or makes is removed at the end (gunicorn by its pid, the database,
jobservice's Redis keys for it); logs and a JSON of the figures go to bench/results/.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import re
import secrets
import signal
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

from . import procs
from .report import text_table
from .stats import percentile
from .store import Databases

RESULTS_DIR = Path(__file__).resolve().parent / "results"
BIN = Path(sys.executable).parent
UI = "/scheduler/ui"
TOKEN_BYTES = 24
#: The service's own environment variables are set here; inherited ones are dropped.
SCHEDULER_PREFIX = "SCHEDULER_"
JOB_CHUNK = 1000
RUN_CHUNK = 5000
WARM_UP = 2
LIMIT_MS = 1000.0
SLOW_P50_MS = 300.0
HISTORY = timedelta(days=28)
#: Jobs start this far ahead: nothing but the service's own jobs fires during the run.
FIRST_FIRE_AHEAD = timedelta(days=2)
HOT_JOB = "job-00000"
#: Every HOT_EVERY-th run of the timeline is the hot job's.
HOT_EVERY = 20
READY_TIMEOUT_S = 90.0
#: gunicorn kills a worker after 30 s (its request is answered 500); this is for a hung one.
REQUEST_TIMEOUT_S = 40.0
#: A view answering slower than this is measured no further.
GIVE_UP_MS = 5000.0
#: (function, its args, its kwargs, share of the jobs)
FUNCS: tuple[tuple[str, list[Any], dict[str, Any], float], ...] = (
    ("bench.benchjobs:fire", ["ui"], {}, 0.40),
    ("bench.benchjobs:heavy", ["ui"], {"burn_ms": 5}, 0.20),
    ("jobs.heartbeat:beat", [], {}, 0.15),
    ("jobs.reports:daily_run_summary", [], {}, 0.10),
    ("jobs.cleanup:purge_run_history", [], {"days": 30}, 0.10),
    ("bench.benchjobs:burn", [0.01], {}, 0.05),
)
RUN_COLUMNS = (
    "job_id", "trigger", "scheduled_at", "attempt", "status", "claim", "fence", "worker",
    "started_at", "finished_at", "error", "prevented", "created_at", "updated_at",
)  # fmt: skip
MISSED_ERROR = "Run time was missed by more than misfire_grace_time"
HEADER = ("view", "p50 ms", "p95 ms", "max ms", "bytes", "SQL", "slowest SQL ms", "result")


@dataclass
class Store:
    """The database under test: its URL, and how it is made and dropped."""

    kind: str
    url: str
    dbs: Databases | None = None
    path: Path | None = None


@dataclass
class View:
    name: str
    path: str
    latencies_ms: list[float] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    size: int = 0
    statements: int | None = None
    slowest_sql_ms: float | None = None
    slowest_sql: str = ""
    selects: list[tuple[str, Any]] = field(default_factory=list)
    gave_up: bool = False

    @property
    def ok(self) -> bool:
        return bool(self.statuses) and all(s == 200 for s in self.statuses)

    def figure(self, q: float) -> float | None:
        return percentile(self.latencies_ms, q)

    @property
    def passed(self) -> bool:
        return self.ok and max(self.latencies_ms) < LIMIT_MS


@dataclass
class Seeded:
    """What the store holds, and the ids and times the views are asked about."""

    jobs: int
    paused: int
    runs: int
    hot_runs: int
    jobs_without_runs: int
    jobs_s: float
    runs_s: float
    window: tuple[datetime, datetime]
    failing_job: str | None


def log(began: float, message: str) -> None:
    print(f"[{time.monotonic() - began:6.1f}s] {message}", file=sys.stderr, flush=True)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.dashboard", description=__doc__.split("\n")[1])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=20, help="timed requests per view")
    parser.add_argument("--database", choices=("mariadb", "sqlite"), default="mariadb")
    parser.add_argument("--env", choices=("production", "development"), default="production")
    parser.add_argument(
        "--explain", action="store_true", help="EXPLAIN every view's SELECTs, not only slow ones"
    )
    parser.add_argument(
        "--mysql", default=os.environ.get("BENCH_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/")
    )
    parser.add_argument("--redis", default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"))
    args = parser.parse_args(argv)
    if args.jobs < 100 or args.runs < 1000 or args.requests < 1:
        parser.error("at least 100 jobs, 1000 runs and 1 request")
    return args


# The store -----------------------------------------------------------------------------------


def make_store(kind: str, mysql_url: str, run_id: str, log_dir: Path) -> Store:
    if kind == "sqlite":
        path = log_dir / "dashboard.db"
        return Store(kind, f"sqlite:///{path}", path=path)
    dbs = Databases(mysql_url, run_id)
    return Store(kind, dbs.create("_ui"), dbs=dbs)


def drop_store(store: Store) -> None:
    if store.dbs is not None:
        store.dbs.drop_all()
    if store.path is not None:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{store.path}{suffix}").unlink(missing_ok=True)


def service_env(args: argparse.Namespace, store: Store, token: str, log_dir: Path) -> dict[str, str]:
    """The service's environment, as bench/deploy.py builds it: ours set, inherited ones dropped."""
    import config  # after PROMETHEUS_MULTIPROC_DIR is set (importing jobservice reads it)

    env = {
        k: v
        for k, v in os.environ.items()
        if k not in config.VARIABLES and not k.startswith(SCHEDULER_PREFIX)
    }
    env.update(
        PYTHONUNBUFFERED="1",
        JOBSERVICE_ENV=args.env,
        DATABASE_URL=store.url,
        REDIS_URL=args.redis,
        JOB_PACKAGES="jobs,bench.benchjobs",
        SCHEDULER_API_TOKEN=token,
        SCHEDULER_UI_ENABLED="true",
        SECRET_KEY=secrets.token_urlsafe(32),
        LOG_LEVEL="warning",
        # The seeded history is kept whole while the run lasts (the maintenance job trims
        # to 1000 runs a job and 30 days by default).
        RUN_RETENTION_DAYS="36500",
        RUN_RETENTION_PER_JOB="10000000",
        PROMETHEUS_MULTIPROC_DIR=str(log_dir / "prometheus"),
    )
    return env


def upgrade_schema(env: dict[str, str], log_dir: Path) -> None:
    """`flask --app run db upgrade`, as the README deploys (and bench/deploy.py does)."""
    with (log_dir / "upgrade.log").open("wb") as out:
        subprocess.run(
            [str(BIN / "flask"), "--app", "run", "db", "upgrade"],
            cwd=procs.ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            check=True,
        )


def build_app(env: dict[str, str]) -> Any:
    """The service's app in this process, with the service's settings; its scheduler never starts."""
    import config
    from jobservice import create_app

    return create_app(config.load_config({**env, "SCHEDULER_AUTOSTART": "false"}))


def job_definitions(n: int, rng: random.Random, now: datetime) -> Iterator[tuple[dict[str, Any], str]]:
    """(definition, trigger kind) for n jobs: 60 % interval, 30 % cron, 10 % date."""
    start = (now + FIRST_FIRE_AHEAD).replace(microsecond=0)
    weights = [share for *_, share in FUNCS]
    for i in range(n):
        job_id = f"job-{i:05d}"
        func, args, kwargs, _ = FUNCS[0] if i == 0 else rng.choices(FUNCS, weights)[0]
        if func.startswith("bench.benchjobs:") and func != "bench.benchjobs:burn":
            args = [*args, job_id]
        data: dict[str, Any] = {
            "id": job_id,
            "name": f"{func.rsplit(':', 1)[1].replace('_', ' ')} #{i}",
            "func": func,
            "args": args,
            "kwargs": kwargs,
        }
        kind = "interval" if i == 0 else rng.choices(("interval", "cron", "date"), (6, 3, 1))[0]
        if kind == "interval":
            minutes = 1 if i == 0 else rng.choice((1, 5, 15, 60, 240))
            data |= {"trigger": "interval", "minutes": minutes}
            data["start_date"] = (start + timedelta(seconds=i)).isoformat()
        elif kind == "cron":
            data |= {"trigger": "cron", "minute": str(i % 60), "hour": rng.choice(("*", "*/2", "3", "9-17"))}
            data["start_date"] = start.isoformat()
            if rng.random() < 0.3:
                data["day_of_week"] = "mon-fri"
        else:
            data |= {"trigger": "date", "run_date": (start + timedelta(minutes=i)).isoformat()}
        if rng.random() < 0.2:
            data["misfire_grace_time"] = rng.choice((30, 600, 3600))
        if rng.random() < 0.1:
            data["max_instances"] = rng.choice((2, 5))
        yield data, kind


def seed_jobs(app: Any, n: int, rng: random.Random, now: datetime) -> tuple[dict[str, str], list[str]]:
    """Add n jobs through Operations.add_many; pause about 10 %. Returns (kind by id, paused ids)."""
    from jobservice.models import jobs_table

    runtime = app.extensions["jobservice"]
    kinds: dict[str, str] = {}
    chunk: list[dict[str, Any]] = []
    with app.app_context():
        for data, kind in job_definitions(n, rng, now):
            kinds[data["id"]] = kind
            chunk.append(data)
            if len(chunk) == JOB_CHUNK:
                runtime.operations.add_many(chunk)
                chunk = []
        if chunk:
            runtime.operations.add_many(chunk)
    paused = [job_id for job_id in kinds if job_id != HOT_JOB and rng.random() < 0.1]
    with runtime.engine.begin() as conn:
        conn.execute(jobs_table.update().where(jobs_table.c.id.in_(paused)).values(next_run_time=None))
    return kinds, paused


def traceback_text(func: str, rng: random.Random) -> str:
    module, name = func.split(":")
    line = rng.randint(12, 120)
    error = rng.choice(
        (
            "ConnectionError: Error 111 connecting to 10.0.3.7:6379. Connection refused.",
            "TimeoutError: the report service did not answer within 30 s",
            "ValueError: invalid literal for int() with base 10: 'n/a'",
            "KeyError: 'customer_id'",
        )
    )
    path = module.replace(".", "/")
    return (
        "Traceback (most recent call last):\n"
        '  File "/srv/jobservice/jobservice/runner.py", line 214, in _call\n'
        "    result = func(*args, **kwargs)\n"
        f'  File "/srv/jobservice/{path}.py", line {line}, in {name}\n'
        f"    rows = fetch_batch(source, limit=500)\n"
        f'  File "/srv/jobservice/{path}.py", line {line + 31}, in fetch_batch\n'
        "    return client.get(url, timeout=30).json()\n"
        f"{error}\n"
    )


def run_rows(
    n: int, kinds: dict[str, str], funcs: dict[str, str], rng: random.Random, now: datetime
) -> Iterator[tuple[Any, ...]]:
    """n runs on one timeline (ids in time order), as the service records them."""
    ran = [job_id for job_id, kind in kinds.items() if kind != "date" and job_id != HOT_JOB]
    ran = [job_id for job_id in ran if rng.random() >= 0.05]  # a few never ran yet
    begin = now - HISTORY
    step_us = int(HISTORY.total_seconds() * 1_000_000 / n)
    host = "web-1"
    pids = [rng.randint(2000, 60000) for _ in range(4)]
    token = ""
    for k in range(n):
        job_id = HOT_JOB if k % HOT_EVERY == 0 else rng.choice(ran)
        scheduled = begin + timedelta(microseconds=k * step_us)
        if k % 8 == 0:
            token = f"{rng.getrandbits(64):016x}"  # one claim token per leader pass
        worker = f"{host}:{pids[(k * 4) // n]}"
        roll = rng.random()
        started: datetime | None = scheduled + timedelta(milliseconds=rng.uniform(2, 60))
        status, error = "succeeded", None
        if roll < 0.05:
            status, error = "failed", traceback_text(funcs[job_id], rng)
        elif roll < 0.07:
            status, error, started = "missed", MISSED_ERROR, None
        if started is not None:
            finished = started + timedelta(milliseconds=rng.lognormvariate(3.5, 1.2))
        else:
            finished = scheduled + timedelta(seconds=rng.uniform(301, 900))
        prevented = rng.randint(1, 3) if rng.random() < 0.002 else 0
        yield (
            job_id, kinds[job_id], _db_time(scheduled), 1, status, token, 1, worker,
            _db_time(started), _db_time(finished), error, prevented, _db_time(scheduled),
            _db_time(finished),
        )  # fmt: skip


def _db_time(value: datetime | None) -> str | None:
    """Naive UTC, as models.UTCDateTime stores it (SQLAlchemy's text form on SQLite)."""
    return None if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def insert_runs(engine: Any, rows: Iterator[tuple[Any, ...]]) -> int:
    """Multi-row INSERTs of RUN_CHUNK rows (PyMySQL's executemany turns a batch into one)."""
    raw = engine.raw_connection()
    mark = "%s" if engine.dialect.paramstyle in ("format", "pyformat") else "?"
    marks = ", ".join([mark] * len(RUN_COLUMNS))
    columns = ", ".join(engine.dialect.identifier_preparer.quote(name) for name in RUN_COLUMNS)
    sql = f"INSERT INTO jobservice_runs ({columns}) VALUES ({marks})"  # `trigger` is reserved in MySQL
    count = 0
    try:
        cursor = raw.cursor()
        batch: list[tuple[Any, ...]] = []
        for row in rows:
            batch.append(row)
            if len(batch) == RUN_CHUNK:
                cursor.executemany(sql, batch)
                raw.commit()
                count += len(batch)
                batch = []
        if batch:
            cursor.executemany(sql, batch)
            raw.commit()
            count += len(batch)
    finally:
        raw.close()
    return count


def seed(app: Any, args: argparse.Namespace, began: float) -> Seeded:
    from sqlalchemy import func, select, text

    from jobservice.models import jobs_table
    from jobservice.runs import runs

    rng = random.Random(20240601)
    now = datetime.now(UTC)
    engine = app.extensions["jobservice"].engine
    t0 = time.monotonic()
    kinds, paused = seed_jobs(app, args.jobs, rng, now)
    jobs_s = time.monotonic() - t0
    log(
        began, f"{len(kinds)} jobs added through Operations.add_many in {jobs_s:.1f} s ({len(paused)} paused)"
    )
    with engine.connect() as conn:
        funcs = dict(conn.execute(select(jobs_table.c.id, jobs_table.c.func_ref)).all())
    t0 = time.monotonic()
    count = insert_runs(engine, run_rows(args.runs, kinds, funcs, rng, now))
    if engine.dialect.name in ("mysql", "mariadb"):
        with engine.connect() as conn:
            conn.execute(text("ANALYZE TABLE apscheduler_jobs, jobservice_runs")).all()
    elif engine.dialect.name == "sqlite":
        with engine.begin() as conn:
            conn.execute(text("ANALYZE"))
    runs_s = time.monotonic() - t0
    log(began, f"{count} runs bulk-inserted in {runs_s:.1f} s ({count / runs_s:,.0f} rows/s)")
    with engine.connect() as conn:
        hot = conn.execute(
            select(func.count()).select_from(runs).where(runs.c.job_id == HOT_JOB)
        ).scalar_one()
        without = conn.execute(
            select(func.count())
            .select_from(jobs_table)
            .where(~select(runs.c.id).where(runs.c.job_id == jobs_table.c.id).exists())
        ).scalar_one()
        newest = select(func.max(runs.c.id)).group_by(runs.c.job_id).scalar_subquery()
        failing = conn.execute(
            select(runs.c.job_id).where(runs.c.id.in_(newest), runs.c.status == "failed").limit(1)
        ).scalar()
    middle = (now - HISTORY / 2).replace(minute=0, second=0, microsecond=0, tzinfo=None)
    return Seeded(
        jobs=len(kinds), paused=len(paused), runs=count, hot_runs=hot, jobs_without_runs=without,
        jobs_s=jobs_s, runs_s=runs_s, window=(middle, middle + timedelta(hours=1)), failing_job=failing,
    )  # fmt: skip


# HTTP ------------------------------------------------------------------------------------------


class Client:
    """A browser without a browser: one cookie (the dashboard's session), a new connection a request."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.cookies: dict[str, str] = {}

    def request(self, method: str, path: str, form: dict[str, str] | None = None) -> tuple[int, bytes, float]:
        """(status, body, milliseconds from connecting to the body's last byte)."""
        headers = {"Accept": "text/html"}
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        body = None
        if form is not None:
            body = urllib.parse.urlencode(form).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        began = time.perf_counter()
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=REQUEST_TIMEOUT_S)
        try:
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException):  # no answer in time, or the worker was killed
            return 0, b"", (time.perf_counter() - began) * 1000
        finally:
            conn.close()
        elapsed = (time.perf_counter() - began) * 1000
        for header in response.headers.get_all("Set-Cookie") or []:
            for name, morsel in SimpleCookie(header).items():
                if morsel["max-age"] == "0" or not morsel.value:
                    self.cookies.pop(name, None)
                else:
                    self.cookies[name] = morsel.value
        return response.status, data, elapsed

    def sign_in(self, token: str) -> None:
        """GET the form (a session cookie and its CSRF token), POST the token: 303 and a signed-in cookie."""
        status, page, _ = self.request("GET", f"{UI}/sign-in")
        match = re.search(rb'name="csrf" value="([^"]+)"', page)
        if status != 200 or match is None:
            raise RuntimeError(f"sign-in form: {status} {page[:300]!r}")
        form = {"csrf": match.group(1).decode(), "token": token, "next": UI}
        status, page, _ = self.request("POST", f"{UI}/sign-in", form)
        if status != 303:
            raise RuntimeError(f"sign-in: {status} {page[:300]!r}")


def start_service(env: dict[str, str], log_dir: Path) -> tuple[Any, int]:
    """gunicorn, 2 workers, as the README deploys (`gunicorn --workers 2 run:app`); ready when
    both workers are up and /health (with the token: it names the leader only then) has a leader."""
    port = procs.free_port()
    argv = [str(BIN / "gunicorn"), "--workers", "2", "--bind", f"127.0.0.1:{port}"]
    argv += ["--no-control-socket", "--log-level", "warning", "--graceful-timeout", "10", "run:app"]
    proc = procs.spawn(argv, env, log_dir / "gunicorn.log")
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gunicorn exited with {proc.returncode}:\n{_tail(log_dir / 'gunicorn.log')}")
        if len(procs.children(proc.pid)) == 2 and _leader(port, env["SCHEDULER_API_TOKEN"]):
            return proc, port
        time.sleep(0.2)
    raise RuntimeError(
        f"gunicorn not ready after {READY_TIMEOUT_S:.0f} s:\n{_tail(log_dir / 'gunicorn.log')}"
    )


def _leader(port: int, token: str) -> str | None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        conn.request("GET", "/health", headers={"Authorization": f"Bearer {token}"})
        response = conn.getresponse()
        body = json.loads(response.read() or b"{}") if response.status == 200 else {}
    except (OSError, ValueError):
        return None
    finally:
        conn.close()
    return body.get("leader") if isinstance(body, dict) else None


def stop_service(proc: Any) -> None:
    """SIGTERM to our master by its pid; if it lingers, SIGKILL its own process group."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            pass
    procs.kill_group(proc)


def _tail(path: Path, chars: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except FileNotFoundError:
        return ""


def views(client: Client, seeded: Seeded) -> list[View]:
    """The pages an operator opens, with the ids and times of this store."""
    since, until = (moment.isoformat(timespec="minutes") for moment in seeded.window)
    hot = urllib.parse.quote(HOT_JOB)
    found: list[View] = [
        View("jobs, first page", f"{UI}"),
        View("jobs, page 100", f"{UI}?page=100"),
        View("jobs, search function 'heavy'", f"{UI}?q=heavy"),
        View("jobs, show=failing", f"{UI}?show=failing"),
        View("jobs, show=never", f"{UI}?show=never"),
        View("jobs, show=paused", f"{UI}?show=paused"),
        View("jobs, sort=-next", f"{UI}?sort=-next"),
        View(f"job {HOT_JOB} ({seeded.hot_runs} runs)", f"{UI}/jobs/{hot}"),
    ]
    status, page, _ = client.request("GET", found[-1].path)
    older = re.search(rf'href="{re.escape(UI)}/jobs/{re.escape(hot)}\?cursor=(\d+)"'.encode(), page)
    if status != 200 or older is None:
        raise RuntimeError(f"no 'older' link on {found[-1].path} ({status})")
    found += [
        View(f"job {HOT_JOB}, older runs (cursor)", f"{UI}/jobs/{hot}?cursor={older.group(1).decode()}"),
        View("runs, all", f"{UI}/runs"),
        View("runs, status=failed", f"{UI}/runs?status=failed"),
        View(f"runs, job_id={HOT_JOB}", f"{UI}/runs?job_id={hot}"),
        View("runs, since/until (1 h, mid-history)", f"{UI}/runs?since={since}&until={until}"),
        View("cluster", f"{UI}/cluster"),
        View("add form", f"{UI}/add"),
        View(f"edit form {HOT_JOB}", f"{UI}/jobs/{hot}/edit"),
    ]
    return found


def measure(client: Client, view: View, requests: int) -> None:
    """WARM_UP untimed requests, then `requests` timed ones; a view that does not answer, or
    takes over GIVE_UP_MS, is given up on (that answer counts, the rest are not sent)."""
    for _ in range(WARM_UP):
        status, body, ms = client.request("GET", view.path)
        if status == 0 or ms > GIVE_UP_MS:
            view.statuses.append(status)
            view.latencies_ms.append(ms)
            view.gave_up = True
            return
    for _ in range(requests):
        status, body, ms = client.request("GET", view.path)
        view.statuses.append(status)
        view.latencies_ms.append(ms)
        view.size = max(view.size, len(body))
        if status == 0 or ms > GIVE_UP_MS:
            view.gave_up = True
            return


# Statements, in this process --------------------------------------------------------------------


def count_statements(app: Any, token: str, found: list[View]) -> None:
    """Each page once (after one warm-up) through Flask's test client; every statement the
    service's engine executes is counted and timed, and its SELECTs kept for EXPLAIN."""
    from sqlalchemy import event

    engine = app.extensions["jobservice"].engine
    seen: list[tuple[str, Any, float]] = []
    started: list[float] = []

    def before(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        started.append(time.perf_counter())

    def after(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        ms = (time.perf_counter() - started.pop()) * 1000
        seen.append((statement, None if many else parameters, ms))

    client = app.test_client()
    page = client.get(f"{UI}/sign-in").get_data()
    match = re.search(rb'name="csrf" value="([^"]+)"', page)
    if match is None:
        raise RuntimeError("in-process sign-in form without a csrf field")
    response = client.post(
        f"{UI}/sign-in", data={"csrf": match.group(1).decode(), "token": token, "next": UI}
    )
    if response.status_code != 303:
        raise RuntimeError(f"in-process sign-in: {response.status_code}")
    event.listen(engine, "before_cursor_execute", before)
    event.listen(engine, "after_cursor_execute", after)
    try:
        for view in found:
            if not view.gave_up:
                client.get(view.path)
            seen.clear()
            response = client.get(view.path)
            if response.status_code != 200:
                raise RuntimeError(f"in-process {view.path}: {response.status_code}")
            view.statements = len(seen)
            if seen:
                statement, _, ms = max(seen, key=lambda s: s[2])
                view.slowest_sql_ms, view.slowest_sql = ms, " ".join(statement.split())
            view.selects = [(s, p) for s, p, _ in seen if s.lstrip().upper().startswith("SELECT")]
    finally:
        event.remove(engine, "before_cursor_execute", before)
        event.remove(engine, "after_cursor_execute", after)


def explain(app: Any, view: View) -> list[str]:
    """EXPLAIN (MariaDB) or EXPLAIN QUERY PLAN (SQLite) of each SELECT the view ran."""
    engine = app.extensions["jobservice"].engine
    prefix = "EXPLAIN QUERY PLAN " if engine.dialect.name == "sqlite" else "EXPLAIN "
    lines: list[str] = []
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        for statement, parameters in view.selects:
            cursor.execute(prefix + statement, parameters or ())
            names = [d[0] for d in cursor.description]
            lines.append("  " + " ".join(statement.split())[:600])
            rows = [tuple("" if v is None else str(v) for v in row) for row in cursor.fetchall()]
            lines += ["    " + line for line in text_table(rows, tuple(names)).splitlines()]
    finally:
        raw.close()
    return lines


# The report ------------------------------------------------------------------------------------


def table(found: list[View]) -> str:
    rows = []
    for v in found:
        bad = sorted({"no answer" if s == 0 else str(s) for s in v.statuses if s != 200})
        result = "PASS" if v.passed else ("FAIL " + ",".join(bad) if bad else "FAIL slow")
        if v.gave_up:
            result += f" (gave up after {len(v.statuses)})"
        rows.append(
            (
                v.name,
                _ms(v.figure(50)),
                _ms(v.figure(95)),
                _ms(max(v.latencies_ms, default=None)),
                f"{v.size:,}",
                "-" if v.statements is None else str(v.statements),
                _ms(v.slowest_sql_ms),
                result,
            )  # fmt: skip
        )
    return text_table(rows, HEADER)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}" if value >= 10 else f"{value:.1f}"


def _forget_redis_keys(app: Any, redis_url: str) -> None:
    """jobservice's keys for this store (it names them by the cluster's id); nothing else."""
    import redis
    from sqlalchemy import text

    engine = app.extensions["jobservice"].engine
    with engine.connect() as conn:
        cluster_id = conn.execute(text("SELECT cluster_id FROM jobservice_cluster WHERE id = 1")).scalar()
    if not cluster_id:
        return
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=f"jobservice:{cluster_id}:*"))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    began = time.monotonic()
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    log_dir = RESULTS_DIR / f"dashboard-{stamp}"
    (log_dir / "prometheus").mkdir(parents=True, exist_ok=True)
    # jobservice.metrics reads it when first imported: never the checkout's instance/.
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(log_dir / "prometheus")
    token = secrets.token_urlsafe(TOKEN_BYTES)
    store = make_store(args.database, args.mysql, secrets.token_hex(3), log_dir)
    log(began, f"store: {store.kind} {store.url.rsplit('/', 1)[-1]}; logs in {log_dir}")
    app = proc = None
    found: list[View] = []
    try:
        env = service_env(args, store, token, log_dir)
        upgrade_schema(env, log_dir)
        app = build_app(env)
        seeded = seed(app, args, began)
        proc, port = start_service(env, log_dir)
        log(
            began,
            f"gunicorn (2 workers, JOBSERVICE_ENV={args.env}) on 127.0.0.1:{port}, master pid {proc.pid}",
        )
        client = Client(port)
        client.sign_in(token)
        found = views(client, seeded)
        for view in found:
            measure(client, view, args.requests)
            log(began, f"{view.name}: p50 {_ms(view.figure(50))} ms, max {_ms(max(view.latencies_ms))} ms")
        stop_service(proc)
        proc = None
        count_statements(app, token, found)
        explained = {
            v.name: explain(app, v)
            for v in found
            if args.explain or (v.figure(50) or 0) > SLOW_P50_MS or not v.passed
        }
    finally:
        if proc is not None:
            stop_service(proc)
        procs.stop_all()
        if app is not None:
            try:
                _forget_redis_keys(app, args.redis)
            except Exception as exc:  # noqa: BLE001 (clean-up is best effort)
                print(f"warning: could not clean Redis keys: {exc}", file=sys.stderr)
            app.extensions["jobservice"].close()
        drop_store(store)
        log(began, "database dropped")
    lines = [
        f"# jobservice dashboard, {args.database}, {stamp} UTC: {seeded.jobs:,} jobs "
        f"({seeded.paused:,} paused, "
        f"{seeded.jobs_without_runs:,} never ran), {seeded.runs:,} runs ({seeded.hot_runs:,} of {HOT_JOB})",
        f"Seeding: jobs {seeded.jobs_s:.1f} s (Operations.add_many, {JOB_CHUNK} a transaction), runs "
        f"{seeded.runs_s:.1f} s (multi-row INSERTs of {RUN_CHUNK}, then ANALYZE)",
        f"gunicorn 2 workers, JOBSERVICE_ENV={args.env}, signed in with the token; "
        f"{args.requests} sequential requests per view after {WARM_UP} untimed; "
        f"PASS = all 200 and max < {LIMIT_MS:.0f} ms. "
        "SQL = statements of one request (in-process test client), slowest SQL = its slowest statement.",
        "",
        table(found),
        "",
        "Paths:",
        *(f"  {v.name}: {v.path}" for v in found),
    ]
    for name, plan in explained.items():
        lines += ["", f"EXPLAIN, {name}:", *plan]
    text = "\n".join(lines)
    print(text)
    raw = {
        "args": vars(args),
        "seeded": {**seeded.__dict__, "window": [w.isoformat() for w in seeded.window]},
        "views": [
            {
                "name": v.name,
                "path": v.path,
                "latencies_ms": v.latencies_ms,
                "statuses": v.statuses,
                "bytes": v.size,
                "statements": v.statements,
                "slowest_sql_ms": v.slowest_sql_ms,
                "slowest_sql": v.slowest_sql,
                "passed": v.passed,
            }  # fmt: skip
            for v in found
        ],
    }
    (log_dir / "dashboard.json").write_text(json.dumps(raw, indent=1, default=str))
    (log_dir / "dashboard.txt").write_text(text + "\n")
    return 0 if all(v.passed for v in found) else 1


if __name__ == "__main__":
    sys.exit(main())
