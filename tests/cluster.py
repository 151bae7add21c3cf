"""Real serving processes for the multi-process tests: gunicorn masters standing for hosts,
`flask run`, `python run.py`, and a private redis-server.

Every process is started here in its own session and stopped here by its pid (or its
own process group); nothing is ever looked up or killed by name.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pymysql
from sqlalchemy import create_engine, select

import config
from tests import jobfuncs
from tests.conftest import mysql_url, wait_for
from tests.netproxy import TcpProxy

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def overlaps(fires: list[Any]) -> tuple[int, int]:
    """(runs, overlapping pairs) of one job, from its `start` and `end` rows in `test_fires`:
    a run is its start to the next end its process wrote (no end yet: still going)."""
    spans = []
    for fire in fires:
        if fire.note == "start":
            end = next(
                (
                    e
                    for e in fires
                    if e.note == "end" and e.pid == fire.pid and e.started_at >= fire.started_at
                ),
                None,
            )
            spans.append((fire.started_at, end.started_at if end else datetime.max.replace(tzinfo=UTC)))
    spans.sort()
    return len(spans), sum(1 for a, b in zip(spans, spans[1:], strict=False) if b[0] < a[1])


def children_of(pid: int) -> list[int]:
    """A process's direct children, from /proc."""
    try:
        return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except FileNotFoundError:
        return []


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server_env(database_url: str, redis_url: str | None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in config.VARIABLES}
    env.update(
        JOBSERVICE_ENV="testing",
        DATABASE_URL=database_url,
        REDIS_URL=redis_url or "",
        JOB_PACKAGES="jobs,tests.jobfuncs",
        SCHEDULER_AUTOSTART="true",
        PYTHONUNBUFFERED="1",
        **extra,
    )
    return env


def http(
    method: str, url: str, body: Any = None, timeout_s: float = 10.0, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json", **(headers or {})}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            raw = response.read()
            return response.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        return exc.code, json.loads(raw) if raw else None


@dataclass
class Server:
    """One serving process tree started by a test, reachable on 127.0.0.1:port."""

    name: str
    argv: list[str]
    env: dict[str, str]
    port: int
    log_path: Path
    cwd: Path = ROOT
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self) -> Server:
        log = open(self.log_path, "ab")  # noqa: SIM115 (the child keeps writing to it)
        self.proc = subprocess.Popen(
            self.argv,
            cwd=self.cwd,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def get(self, path: str) -> tuple[int, Any]:
        return http("GET", self.url(path))

    def get_text(self, path: str) -> str:
        with urllib.request.urlopen(self.url(path), timeout=10) as response:
            return response.read().decode()

    def post(self, path: str, body: Any = None) -> tuple[int, Any]:
        return http("POST", self.url(path), body)

    def delete(self, path: str) -> tuple[int, Any]:
        return http("DELETE", self.url(path))

    def wait_ready(self, timeout_s: float = 90.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited with {self.proc.returncode}:\n{self.log()}")
            try:
                status, _ = self.get("/health")
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"{self.name} not ready after {timeout_s}s:\n{self.log()}")

    def children(self) -> list[int]:
        """Direct children (gunicorn's workers, an RQ worker's work-horse)."""
        return children_of(self.pid)

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def stop(self, timeout_s: float = 20.0) -> None:
        """SIGTERM our master; if it lingers, SIGKILL its own process group."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except FileNotFoundError:
            return ""


def gunicorn(
    name: str, env: dict[str, str], log_dir: Path, workers: int = 3, preload: bool = False
) -> Server:
    port = free_port()
    argv = [str(BIN / "gunicorn"), "--workers", str(workers), "--bind", f"127.0.0.1:{port}"]
    argv += ["--graceful-timeout", "10", "--log-level", "warning"]
    if preload:
        argv.append("--preload")
    return Server(name, [*argv, "run:app"], env, port, log_dir / f"{name}.log")


def flask_run(name: str, env: dict[str, str], log_dir: Path, reload: bool = True) -> Server:
    port = free_port()
    argv = [str(BIN / "flask"), "--app", "run", "run", "--port", str(port)]
    argv += ["--debug"] if reload else ["--no-reload"]
    return Server(name, argv, env, port, log_dir / f"{name}.log")


def python_run(name: str, env: dict[str, str], log_dir: Path) -> Server:
    port = free_port()
    return Server(name, [sys.executable, "run.py", "--port", str(port)], env, port, log_dir / f"{name}.log")


@dataclass
class RedisServer:
    """A redis-server of the test's own on a spare port; stopped and restarted by pid."""

    port: int
    work_dir: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is not installed"
        argv = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self.proc = subprocess.Popen(
            [*argv, "--dir", str(self.work_dir)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.05)
        raise AssertionError("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        self.proc = None


@dataclass
class PrivateMariaDB:
    """A mariadbd of the test's own (its own data directory, port and socket), so a test can
    stop the database under the service and start it again. Stopped only by its own pid."""

    work_dir: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return mysql_url("jobservice", self.port)

    def install(self) -> PrivateMariaDB:
        data = self.work_dir / "data"
        argv = [shutil.which("mariadb-install-db") or "mariadb-install-db", "--no-defaults"]
        argv += [f"--datadir={data}", "--auth-root-authentication-method=normal", "--skip-test-db"]
        subprocess.run([*argv, "--user=root"], check=True, capture_output=True, timeout=120)
        self.start()
        with pymysql.connect(host="127.0.0.1", port=self.port, user="root") as conn, conn.cursor() as cur:
            cur.execute("CREATE DATABASE jobservice CHARACTER SET utf8mb4")
        return self

    def start(self) -> None:
        argv = ["/usr/sbin/mariadbd", "--no-defaults", f"--datadir={self.work_dir / 'data'}"]
        argv += [f"--port={self.port}", "--bind-address=127.0.0.1", f"--socket={self.work_dir / 'sock'}"]
        argv += ["--user=root", "--skip-log-bin", "--innodb-buffer-pool-size=64M", "--max-connections=500"]
        log = open(self.work_dir / "mariadbd.log", "ab")  # noqa: SIM115 (the server keeps writing to it)
        self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"mariadbd exited: {(self.work_dir / 'mariadbd.log').read_text()[-2000:]}"
                )
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise AssertionError("mariadbd did not start")

    def kill(self) -> None:
        """Stop it at once (SIGKILL), as a crash or a pulled plug would."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
        self.proc = None


class Cluster:
    """Hosts started by one test on one database, and what their jobs wrote.

    With `redis_target` each host reaches Redis through a TCP proxy of its own, so a test can
    cut one host off Redis (a partition) or all of them. With `probe_url` the probe job writes
    into that database instead, which stays up while a test breaks the service's own.
    """

    def __init__(
        self,
        database_url: str,
        redis_url: str | None,
        log_dir: Path,
        redis_target: tuple[str, int] | None = None,
        probe_url: str | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.database_url = database_url
        #: Settings every host of this cluster gets (a test's own win).
        self.env = env or {}
        self.redis_url = redis_url
        self.redis_target = redis_target
        self.probe_url = probe_url
        self.log_dir = log_dir
        self.hosts: list[Server] = []
        self.proxies: dict[str, TcpProxy] = {}
        self.engine = create_engine(database_url)
        self.probe_engine = create_engine(probe_url) if probe_url else self.engine
        jobfuncs.metadata.create_all(self.probe_engine)

    def host(self, workers: int = 3, wait: bool = True, **env: str) -> Server:
        name = f"host{len(self.hosts) + 1}"
        redis_url = self.redis_url
        if self.redis_target is not None:
            proxy = self.proxies[name] = TcpProxy(*self.redis_target)
            redis_url = f"redis://127.0.0.1:{proxy.port}/0"
        env = {**self.env, **env}
        if self.probe_url is not None:
            env = {"PROBE_DATABASE_URL": self.probe_url, **env}
        server = gunicorn(name, server_env(self.database_url, redis_url, **env), self.log_dir, workers)
        self.hosts.append(server.start())
        if wait:
            server.wait_ready()
        return server

    def fires(self, job_id: str = "tick") -> list[Any]:
        query = (
            select(jobfuncs.fires)
            .where(jobfuncs.fires.c.job_id == job_id)
            .order_by(jobfuncs.fires.c.started_at)
        )
        with self.probe_engine.connect() as conn:
            return list(conn.execute(query))

    def all_fires(self) -> list[Any]:
        with self.probe_engine.connect() as conn:
            return list(conn.execute(select(jobfuncs.fires).order_by(jobfuncs.fires.c.id)))

    def leader(self) -> tuple[Server, int]:
        """The host whose worker leads, and that worker's pid (from /health)."""

        def find() -> tuple[Server, int] | None:
            for host in self.hosts:
                if host.proc is None or host.proc.poll() is not None:
                    continue
                try:
                    status, body = host.get("/health")
                except OSError:
                    continue
                if status == 200 and body.get("leader"):
                    pid = int(body["leader"].rsplit(":", 1)[1])
                    for candidate in self.hosts:
                        if pid in candidate.children():
                            return candidate, pid
            return None

        return wait_for(find, timeout_s=15)

    def leaders_seen(self, host: Server, requests: int = 12) -> set[str]:
        """The leader as reported by whichever workers answer these requests."""
        return {host.get("/scheduler")[1]["leader"] for _ in range(requests)}

    def close(self) -> None:
        for host in self.hosts:
            host.stop()
        for proxy in self.proxies.values():
            proxy.close()
        self.engine.dispose()
        self.probe_engine.dispose()
