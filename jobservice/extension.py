"""What jobservice adds to a Flask app, once per app: its Runtime, its routes, its commands.

Both doors in (`JobService(app)`, and Flask-APScheduler's `APScheduler().init_app(app)`)
come here, so an app gets one Runtime however many times, and through whichever of them,
it is initialised. Settings come from `app.config` (see `settings`).
"""

from __future__ import annotations

import logging

from flask import Flask

from . import api, cli, health, lifecycle, ui
from .database import check_schema, default_sqlite_url, make_engine, prepare_schema
from .errors import ConfigError
from .runtime import EXTENSION, Runtime
from .settings import changed_since, read, snapshot

logger = logging.getLogger(__name__)


def init_app(app: Flask, start: bool | None = None) -> Runtime:
    """The app's Runtime, made on first call. A serving process joins the election when
    `start` says so (default: SCHEDULER_AUTOSTART); a `flask` command never does."""
    runtime: Runtime | None = app.extensions.get(EXTENSION)
    if runtime is None:
        runtime = _install(app)
    elif changed := changed_since(runtime.config_read, app.config):
        # One app, one Runtime: settings changed for a later init_app would silently not apply.
        raise ConfigError(
            f"jobservice is already initialised on this app, with its settings as they were then; "
            f"changed since: {', '.join(changed)}. Set them before the first init_app"
        )
    if start if start is not None else runtime.settings.autostart:
        start_runtime(runtime)
    return runtime


def start_runtime(runtime: Runtime, declared: list[dict] | None = None) -> None:
    """Reconcile the declared jobs and join the election, in a serving process."""
    if lifecycle.is_serving() and not runtime.started:
        check_schema(runtime.engine)
        runtime.reconcile(declared)
        runtime.start()


def _install(app: Flask) -> Runtime:
    config_read = snapshot(app.config)
    settings = read(app.config, app.import_name)
    url = settings.database_url or default_sqlite_url(app.instance_path)
    engine = make_engine(url, settings.lease_s)
    prepare_schema(engine, app.instance_path, settings.auto_upgrade)
    runtime = Runtime(app, settings, engine)
    runtime.config_read = config_read
    app.extensions[EXTENSION] = runtime
    api.init_app(app, settings)
    health.init_app(app, settings)
    ui.init_app(app, settings)
    cli.init_app(app)
    if settings.api_enabled and not settings.has_credentials:
        logger.warning(
            "The scheduler API is on without credentials: anyone who reaches %s can add and run "
            "jobs of the job packages. Set SCHEDULER_API_TOKEN, or SCHEDULER_AUTH as in Flask-APScheduler.",
            settings.api_prefix or "/",
        )
    return runtime
