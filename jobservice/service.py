"""`JobService`: jobservice as a Flask extension, for the app of a team that has its own.

    from jobservice import JobService

    jobs = JobService()           # in extensions.py, unbound
    jobs.init_app(app)            # in the app factory (or JobService(app))

Settings come from `app.config` (see `settings`), each with a default; every run pushes
the context of *this* app, so its Flask-SQLAlchemy `db`, config and other extensions work
in jobs as they do in a request. The Flask-APScheduler interface is `app.apscheduler`.
"""

from __future__ import annotations

from flask import Flask, current_app

from . import extension
from .dropin import APScheduler
from .operations import Operations
from .runtime import EXTENSION, Runtime


class JobService:
    """One active scheduler for the app, however many workers and hosts serve it."""

    def __init__(self, app: Flask | None = None) -> None:
        self.app = app
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Set jobservice up on this app; serving processes join the leader election
        (unless SCHEDULER_AUTOSTART is false), `flask` commands never do."""
        runtime = extension.init_app(app)
        if not isinstance(getattr(app, "apscheduler", None), APScheduler):
            APScheduler()._attach(app, runtime)

    def runtime(self, app: Flask | None = None) -> Runtime:
        """The app's Runtime: the given app's, this extension's, or the current app's."""
        target = app or self.app or current_app
        return target.extensions[EXTENSION]

    @property
    def operations(self) -> Operations:
        """Add, change, pause, resume, remove and run jobs, with the API's rules."""
        return self.runtime().operations

    @property
    def scheduler(self) -> APScheduler:
        """The app's Flask-APScheduler interface (`app.apscheduler`)."""
        target = self.app or current_app
        return target.apscheduler  # type: ignore[attr-defined,no-any-return]
