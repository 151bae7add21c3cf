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
from pathlib import Path
from typing import Any

import config

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server_env(database_url: str, redis_url: str | None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in config.SETTINGS}
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


def http(method: str, url: str, body: Any = None, timeout_s: float = 10.0) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json"}
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
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self) -> Server:
        log = open(self.log_path, "ab")  # noqa: SIM115 (the child keeps writing to it)
        self.proc = subprocess.Popen(
            self.argv, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
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

    def post(self, path: str, body: Any = None) -> tuple[int, Any]:
        return http("POST", self.url(path), body)

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
        """Direct children (gunicorn's workers); from /proc, by parent pid."""
        path = Path(f"/proc/{self.pid}/task/{self.pid}/children")
        try:
            return [int(pid) for pid in path.read_text().split()]
        except FileNotFoundError:
            return []

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
