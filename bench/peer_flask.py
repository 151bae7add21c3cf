"""The Flask-APScheduler 1.13 peers, as users deploy them under gunicorn (`bench.peer_flask:app`).

BENCH_PEER_MODE=naive: every worker starts its scheduler (the documented set-up).
BENCH_PEER_MODE=flock: only the worker that wins an fcntl lock on BENCH_FLOCK_PATH starts
it, tried once at start-up (the usual snippet). Jobs live in a plain SQLAlchemyJobStore on
BENCH_STORE_URL, run in a ThreadPoolExecutor of 20, with APScheduler's job defaults.
"""

from __future__ import annotations

import atexit
import fcntl
import os
from pathlib import Path
from typing import IO

from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from flask import Flask
from flask_apscheduler import APScheduler

_lock_file: IO[bytes] | None = None


def create_app() -> Flask:
    """The app of one worker; starts its scheduler if the mode says this worker should."""
    app = Flask(__name__)
    app.config.update(
        SCHEDULER_API_ENABLED=True,
        SCHEDULER_JOBSTORES={"default": SQLAlchemyJobStore(url=os.environ["BENCH_STORE_URL"])},
        SCHEDULER_EXECUTORS={"default": {"type": "threadpool", "max_workers": 20}},
        SCHEDULER_TIMEZONE="UTC",
    )
    scheduler = APScheduler()
    scheduler.init_app(app)
    mode = os.environ.get("BENCH_PEER_MODE", "naive")
    if mode == "naive" or _won_lock(os.environ["BENCH_FLOCK_PATH"]):
        scheduler.start()
    _mark_ready()
    return app


def _won_lock(path: str) -> bool:
    """The common fix: an exclusive, non-blocking flock held for the worker's life."""
    global _lock_file
    lock_file = open(path, "wb")  # noqa: SIM115 (kept open: closing it would drop the lock)
    try:
        fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        lock_file.close()
        return False
    _lock_file = lock_file
    atexit.register(lock_file.close)
    return True


def _mark_ready() -> None:
    ready_dir = os.environ.get("BENCH_READY_DIR")
    if ready_dir:
        Path(ready_dir, str(os.getpid())).touch()


app = create_app()
