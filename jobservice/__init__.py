"""jobservice: a Flask job service with one active scheduler across workers and hosts."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Flask

import config

from . import api, cli, database, health, logs, scheduler
from .runs import purge_runs, run_counts

__all__ = ["create_app", "purge_runs", "run_counts"]


def create_app(overrides: Mapping[str, Any] | None = None) -> Flask:
    """Build the app: settings, logging, database, scheduler, API, health.

    `overrides` replace settings read from the environment (tests, embedding).
    """
    app = Flask(__name__, instance_relative_config=True)
    app.config.from_object(config.load_config())
    app.config.update(overrides or {})
    config.check(app.config)
    logs.init_app(app)
    database.init_app(app)
    scheduler.init_app(app)
    api.init_app(app)
    health.init_app(app)
    cli.init_app(app)
    return app
