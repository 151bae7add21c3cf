"""Logging set-up: one format for the service's own loggers, unless the host app set one."""

from __future__ import annotations

import logging

from flask import Flask

FORMAT = "%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"


def init_app(app: Flask) -> None:
    """Give the root logger a handler if nobody did, and apply LOG_LEVEL to ours."""
    if not logging.getLogger().handlers:
        logging.basicConfig(format=FORMAT)
    logging.getLogger("jobservice").setLevel(app.config["LOG_LEVEL"])
    # Alembic announces each of its plugins at INFO on every start-up.
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
