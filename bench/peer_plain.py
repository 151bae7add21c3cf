"""The plain APScheduler 3.11 peer: `python -m bench.peer_plain`, one BackgroundScheduler per process.

SQLAlchemyJobStore on BENCH_STORE_URL, ThreadPoolExecutor(20), APScheduler's job defaults.
The harness puts jobs in the store with SQL and sends SIGUSR1, which only calls
`scheduler.wakeup()` (what `add_job` does after saving a job).
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler


def main() -> None:
    """Run the scheduler until the process is killed."""
    scheduler = BackgroundScheduler(
        jobstores={"default": SQLAlchemyJobStore(url=os.environ["BENCH_STORE_URL"])},
        executors={"default": ThreadPoolExecutor(20)},
        timezone="UTC",
    )
    signal.signal(signal.SIGUSR1, lambda *_: scheduler.wakeup())
    scheduler.start()
    ready_dir = os.environ.get("BENCH_READY_DIR")
    if ready_dir:
        Path(ready_dir, str(os.getpid())).touch()
    while True:
        signal.pause()


if __name__ == "__main__":
    main()
