"""Flask-APScheduler's Python interface (`app.apscheduler`), over the cluster scheduler.

Code written for Flask-APScheduler keeps working: `app.apscheduler.add_job(...)`,
`get_jobs()`, `task` and friends reach the shared store; start, shutdown, pause,
resume and run_job act the cluster-wide way the REST API does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from flask import Flask
from flask_apscheduler import APScheduler

if TYPE_CHECKING:
    from .scheduler import JobService


class FlaskScheduler(APScheduler):
    """Flask-APScheduler's Python interface (`app.apscheduler`) over the cluster scheduler."""

    def __init__(self, app: Flask, service: JobService) -> None:
        super().__init__(scheduler=service.scheduler)
        self._service = service
        self.app = app
        self.api_enabled = app.config["SCHEDULER_API_ENABLED"]
        self.api_prefix = app.config["SCHEDULER_API_PREFIX"]
        app.apscheduler = self  # type: ignore[attr-defined]

    def start(self, paused: bool = False) -> None:
        self._service.start()

    def shutdown(self, wait: bool = True) -> None:
        self._service.stop()

    def pause(self) -> None:
        self._service.set_paused(True)

    def resume(self) -> None:
        self._service.set_paused(False)

    def run_job(self, id: str, jobstore: str | None = None) -> None:  # noqa: A002 (upstream name)
        self._service.request_run(id)
