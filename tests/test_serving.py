"""Every way of serving gives exactly one leader, without any server hook configured."""

from __future__ import annotations

import json
import re
import socket
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, select

from tests import jobfuncs
from tests.cluster import Server, flask_run, gunicorn, python_run, server_env
from tests.conftest import wait_for

pytestmark = pytest.mark.processes

TICK = {"id": "tick", "func": "tests.jobfuncs:record", "trigger": "interval", "seconds": 1}


@pytest.fixture
def started(tmp_path: Path) -> Iterator[list[Server]]:
    servers: list[Server] = []
    yield servers
    for server in servers:
        server.stop()


def serve(servers: list[Server], server: Server) -> Server:
    servers.append(server.start())
    server.wait_ready()
    return server


def fires(database_url: str) -> list[Any]:
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(select(jobfuncs.fires).order_by(jobfuncs.fires.c.started_at)))
    finally:
        engine.dispose()


def prepare(database_url: str) -> None:
    engine = create_engine(database_url)
    jobfuncs.metadata.create_all(engine)
    engine.dispose()


def leader_pid(server: Server) -> int:
    def read() -> int | None:
        leader = server.get("/health")[1]["leader"]
        return int(leader.rsplit(":", 1)[1]) if leader else None

    return wait_for(read, timeout_s=15)


def runs_once_per_fire(server: Server, database_url: str, seconds: float = 4.5) -> list[Any]:
    """Add the 1-second job, let it run, and check each fire time ran once in one process."""
    assert server.post("/scheduler/jobs", TICK)[0] == 200
    wait_for(lambda: len(fires(database_url)) >= seconds - 1, timeout_s=seconds + 5)
    rows = fires(database_url)
    assert [at for at, n in Counter(f.scheduled_at for f in rows).items() if n > 1] == []
    assert len({f.pid for f in rows}) == 1
    return rows


def test_gunicorn_preload(started: list[Server], mariadb_url: str, redis_url: str, tmp_path: Path) -> None:
    """The master builds the app before forking: it must leave the election to its workers."""
    prepare(mariadb_url)
    host = serve(started, gunicorn("preload", server_env(mariadb_url, redis_url), tmp_path, preload=True))
    wait_for(lambda: len(host.children()) == 3)
    pid = leader_pid(host)
    assert pid != host.pid and pid in host.children()
    rows = runs_once_per_fire(host, mariadb_url)
    assert rows[0].pid in host.children()


def test_flask_run_with_the_reloader(
    started: list[Server], mariadb_url: str, redis_url: str, tmp_path: Path
) -> None:
    """The reloader's first process only watches files; the serving child leads."""
    prepare(mariadb_url)
    server = serve(started, flask_run("flask-debug", server_env(mariadb_url, redis_url), tmp_path))
    pid = leader_pid(server)
    assert pid != server.pid and pid in server.children()
    runs_once_per_fire(server, mariadb_url)


def test_python_run_py(started: list[Server], mariadb_url: str, redis_url: str, tmp_path: Path) -> None:
    prepare(mariadb_url)
    server = serve(started, python_run("run-py", server_env(mariadb_url, redis_url), tmp_path))
    assert leader_pid(server) == server.pid
    runs_once_per_fire(server, mariadb_url)


def test_gunicorn_on_the_embedded_default(started: list[Server], tmp_path: Path) -> None:
    """SQLite and no Redis (what `make run` serves): the file lock elects one worker."""
    database_url = f"sqlite:///{tmp_path}/jobs.sqlite3"
    prepare(database_url)
    host = serve(started, gunicorn("sqlite", server_env(database_url, None), tmp_path, workers=3))
    pid = leader_pid(host)
    assert pid in host.children()
    runs_once_per_fire(host, database_url)
    assert {host.get("/scheduler")[1]["leader"] for _ in range(10)} == {f"{host.get('/health')[1]['leader']}"}


def test_a_job_that_forks_does_not_make_its_child_a_candidate(
    started: list[Server], mariadb_url: str, redis_url: str, tmp_path: Path
) -> None:
    """A fork from a job thread (multiprocessing) leaves the election alone."""
    prepare(mariadb_url)
    server = serve(started, python_run("forks", server_env(mariadb_url, redis_url), tmp_path))
    body = {"id": "forker", "func": "tests.jobfuncs:fork_and_record", "trigger": "interval", "seconds": 1}
    assert server.post("/scheduler/jobs", body)[0] == 200
    wait_for(lambda: len([f for f in fires(mariadb_url) if f.note == "child"]) >= 3, timeout_s=10)
    assert leader_pid(server) == server.pid
    rows = [f for f in fires(mariadb_url) if f.note == "parent"]
    assert [at for at, n in Counter(f.scheduled_at for f in rows).items() if n > 1] == []


def test_metrics_are_the_same_whichever_worker_answers(
    started: list[Server], mariadb_url: str, redis_url: str, tmp_path: Path
) -> None:
    prepare(mariadb_url)
    metrics_dir = tmp_path / "prometheus"
    metrics_dir.mkdir()
    env = server_env(mariadb_url, redis_url, PROMETHEUS_MULTIPROC_DIR=str(metrics_dir))
    host = serve(started, gunicorn("metrics", env, tmp_path, workers=3))
    runs_once_per_fire(host, mariadb_url, seconds=3.5)
    host.post("/scheduler/jobs/tick/pause")
    fired = len(fires(mariadb_url))
    wait_for(lambda: host.get("/scheduler/jobs/tick/runs")[1] and all(
        r["status"] != "running" for r in host.get("/scheduler/jobs/tick/runs")[1]), timeout_s=5)  # fmt: skip
    scrapes = set()
    for _ in range(12):  # the kernel spreads these over the three workers
        with urllib.request.urlopen(host.url("/metrics"), timeout=5) as response:
            text = response.read().decode()
        match = re.search(r'^jobservice_runs_total\{job_id="tick",status="succeeded"\} (\S+)$', text, re.M)
        leaders = re.findall(r'^jobservice_leader\{pid="\d+"\} 1\.0$', text, re.M)
        scrapes.add((float(match[1]) if match else 0.0, len(leaders)))
    assert scrapes == {(float(fired), 1)}


def raw_request(server: Server, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send bytes as they are (no client library would send these) and read the answer."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in header_lines)}
    return int(status_line.split()[1]), headers, body


@pytest.mark.parametrize(
    ("case", "request_bytes", "status"),
    [
        (
            "request-line-too-long",
            b"GET /scheduler/jobs/" + b"x" * 5000 + b" HTTP/1.1\r\nHost: a\r\n\r\n",
            414,
        ),
        ("header-too-long", b"GET /health HTTP/1.1\r\nHost: a\r\nX-Big: " + b"y" * 9000 + b"\r\n\r\n", 431),
        (
            "too-many-headers",
            b"GET /health HTTP/1.1\r\nHost: a\r\n"
            + b"".join(b"X-%d: 1\r\n" % n for n in range(60))
            + b"\r\n",
            431,
        ),
        ("malformed", b"NOT A REQUEST\r\n\r\n", 400),
    ],
)
def test_gunicorn_refuses_what_it_cannot_parse_with_json(
    started: list[Server], tmp_path: Path, case: str, request_bytes: bytes, status: int
) -> None:
    sqlite = f"sqlite:///{tmp_path}/jobs.sqlite3"
    server = serve(started, gunicorn("limits", server_env(sqlite, None), tmp_path, workers=1))
    code, headers, body = raw_request(server, request_bytes)
    assert code == status
    assert headers["content-type"] == "application/json"
    assert json.loads(body)["error_message"]


def test_the_longest_api_url_fits_the_request_line_limit(started: list[Server], tmp_path: Path) -> None:
    sqlite = f"sqlite:///{tmp_path}/jobs.sqlite3"
    server = serve(started, gunicorn("longest", server_env(sqlite, None), tmp_path, workers=1))
    job_id = "\U0001f600" * 191  # 4 bytes of UTF-8 each: 12 characters as %XX
    query = "status=succeeded&since=2026-11-24T09:30:00%2B00:00&until=2026-11-25T09:30:00%2B00:00&limit=500"
    path = f"/scheduler/jobs/{urllib.parse.quote(job_id)}/runs?{query}&cursor=4611686018427387904"
    code, _, body = raw_request(
        server, f"GET {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n".encode()
    )
    assert code == 200 and json.loads(body) == []
