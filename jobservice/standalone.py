"""The standalone service: jobservice's extension on a small app of its own.

`run.py` builds it from `config.py` (the environment and `.env`); tests build it from a
mapping. Where the extension keeps Flask-APScheduler's defaults, the service turns its
HTTP side on: the API, /health and /metrics, with every error as JSON.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flask import Flask

from . import cli, logs
from .api import errors
from .errors import ConfigError
from .service import JobService

SERVICE_DEFAULTS = {
    "SCHEDULER_API_ENABLED": True,
    "JOBSERVICE_HEALTH_ENABLED": True,
    "JOBSERVICE_METRICS_ENABLED": True,
    "JOBSERVICE_JOB_PACKAGES": ("jobs",),
    #: A job definition is small; a bigger body is refused with 413.
    "MAX_CONTENT_LENGTH": 1024 * 1024,
}


def create_app(config: object | Mapping[str, Any] | None = None) -> Flask:
    """The service's app, with `config` (a Config object or a mapping) over its defaults."""
    app = Flask("jobservice", instance_relative_config=True)
    app.config.update(SERVICE_DEFAULTS)
    if isinstance(config, Mapping):
        app.config.update(config)
    elif config is not None:
        app.config.from_object(config)
    _refuse_an_open_api_in_production(app.config)
    if not app.config.get("SECRET_KEY") and app.config.get("ENV_NAME") != "production":
        app.config["SECRET_KEY"] = _instance_secret(Path(app.instance_path))
    logs.init_app(app)
    errors.register(app)  # the whole app is the service's: every error is JSON
    JobService(app)
    for command in (*cli.COMMANDS, cli.runs_command):  # `flask --app run jobs list`, as before
        app.cli.add_command(command)
    return app


def _refuse_an_open_api_in_production(config: Mapping[str, Any]) -> None:
    token = config.get("SCHEDULER_API_TOKEN")
    if config.get("ENV_NAME") == "production" and config.get("SCHEDULER_API_ENABLED"):
        if not token and config.get("SCHEDULER_AUTH") is None:
            raise ConfigError(
                "SCHEDULER_API_TOKEN must be set in production while SCHEDULER_API_ENABLED "
                "is on: the API can add and run jobs"
            )
        if token and len(token) < 16:
            raise ConfigError("SCHEDULER_API_TOKEN must be at least 16 characters in production")


def _instance_secret(instance: Path) -> str:
    """A SECRET_KEY kept in the instance folder, so every worker of one host signs the
    dashboard's cookie alike (production sets SECRET_KEY, shared by every host)."""
    path = instance / "secret_key"
    if not path.exists():
        instance.mkdir(parents=True, exist_ok=True)
        draft = instance / f".secret_key.{os.getpid()}"
        fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as file:
            file.write(secrets.token_urlsafe(32))
        try:
            os.link(draft, path)  # whole or not at all; the first worker's key wins
        except FileExistsError:
            pass
        finally:
            draft.unlink()
    return path.read_text().strip()
