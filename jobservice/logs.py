"""Logging set-up: one format for the service's own loggers, text or JSON lines (LOG_FORMAT).

The service logs one line per leadership change (with the fence), per run (job,
scheduled time, lateness, duration, status) and per refused claim. Nothing it logs
carries a token or a database password.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

from flask import Flask

TEXT_FORMAT = "%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"
#: LogRecord attributes that are not extra fields given by the caller.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, pid, message, and any `extra` fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "pid": record.process,
            "message": record.getMessage(),
        }
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def init_app(app: Flask) -> None:
    """Give the root logger a handler if nobody did, and apply LOG_LEVEL and LOG_FORMAT."""
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig()
    if app.config.get("LOG_FORMAT", "text") == "json":
        for handler in root.handlers:
            handler.setFormatter(JsonFormatter())
    elif not app.config.get("TESTING"):
        for handler in root.handlers:
            if handler.formatter is None or handler.formatter._fmt == logging.BASIC_FORMAT:
                handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    logging.getLogger("jobservice").setLevel(app.config.get("LOG_LEVEL", "INFO"))
    # Alembic announces each of its plugins at INFO on every start-up.
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
