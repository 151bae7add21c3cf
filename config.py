"""The standalone service's settings, read from the environment (and `.env`) once.

`load_config()` picks the class named by JOBSERVICE_ENV and reads each variable when it
is instantiated, so tests and tools can build configs from any mapping. Each variable
fills one key of `app.config` that jobservice reads (`jobservice.settings`): the key is
the variable's name, or `JOBSERVICE_` + the name when it does not start with `SCHEDULER_`.
A bad value raises ConfigError naming the variable and what it expected.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from dotenv import load_dotenv

from jobservice import options
from jobservice.errors import ConfigError
from jobservice.settings import SETTINGS, Setting, checked

__all__ = ["CONFIGS", "SETTINGS", "Config", "ConfigError", "Env", "load_config"]

#: Every environment variable the service reads (documented in README and .env.example).
VARIABLES = (
    "JOBSERVICE_ENV",
    "SECRET_KEY",
    *(setting.env for setting in SETTINGS.values()),
    "SCHEDULER_MISFIRE_GRACE_TIME",
    "SCHEDULER_COALESCE",
    "SCHEDULER_MAX_INSTANCES",
    "SCHEDULER_MAX_WORKERS",
    "SCHEDULER_JOB_TIMEOUT_SECONDS",
    "SCHEDULER_JOB_RETRIES",
    "SCHEDULER_JOB_RETRY_DELAY_SECONDS",
    "SCHEDULER_JOB_QUEUE",
    "LOG_LEVEL",
    "LOG_FORMAT",
)
#: What the service serves, unless the environment says otherwise.
SERVICE_DEFAULTS = {
    "SCHEDULER_API_ENABLED": True,
    "HEALTH_ENABLED": True,
    "METRICS_ENABLED": True,
    "JOB_PACKAGES": ("jobs",),
}
#: Where an environment differs (each still overridden by its variable): the dashboard is
#: open without credentials in development, and off unless asked for in production.
ENV_DEFAULTS: dict[str, dict[str, Any]] = {
    "development": {"SCHEDULER_UI_ALLOW_ANONYMOUS": True},
    "testing": {"SCHEDULER_UI_ALLOW_ANONYMOUS": True},
    "production": {"SCHEDULER_UI_ENABLED": False},
}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class Env:
    """Typed reader over an environment mapping; errors name the key and the bad value."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ

    def raw(self, name: str) -> str | None:
        value = self._environ.get(name)
        return value.strip() if value is not None and value.strip() else None

    def bool(self, name: str, default: bool) -> bool:
        value = self.raw(name)
        if value is None:
            return default
        if value.lower() in _TRUE:
            return True
        if value.lower() in _FALSE:
            return False
        raise ConfigError(f"{name} must be true or false, got {value!r}")

    def number(self, name: str, default: float, *, minimum: float, maximum: float) -> float:
        value = self.raw(name)
        if value is None:
            return default
        try:
            number = float(value)
        except ValueError:
            raise ConfigError(f"{name} must be a number, got {value!r}") from None
        if not minimum <= number <= maximum:
            raise ConfigError(f"{name} must be between {minimum:g} and {maximum:g}, got {value!r}")
        return number

    def int(self, name: str, default: int, *, minimum: int, maximum: int) -> int:
        value = self.raw(name)
        if value is None:
            return default
        if not value.lstrip("-").isdigit():
            raise ConfigError(f"{name} must be a whole number, got {value!r}")
        return int(self.number(name, default, minimum=minimum, maximum=maximum))

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        value = (self.raw(name) or default).lower()
        if value not in choices:
            raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
        return value

    def list(self, name: str, default: tuple[str, ...] | None) -> tuple[str, ...] | None:
        value = self.raw(name)
        if value is None:
            return default
        return tuple(item.strip() for item in value.split(",") if item.strip())

    def setting(self, setting: Setting, default: Any) -> Any:
        """One of jobservice's settings, typed; its range and meaning are checked by jobservice,
        whose error names the app.config key."""
        name = setting.env
        if setting.kind == "bool":
            return self.bool(name, default)
        if setting.kind in ("number", "int"):
            low = setting.minimum if setting.minimum is not None else float("-inf")
            high = setting.maximum if setting.maximum is not None else float("inf")
            read = self.int if setting.kind == "int" else self.number
            return read(name, default, minimum=low, maximum=high)  # type: ignore[operator]
        if setting.kind == "list":
            return self.list(name, default)
        value = self.raw(name)
        return default if value is None else checked(setting, value, name)


class Config:
    """Settings shared by every environment."""

    ENV_NAME = "development"
    #: A job definition is small; a bigger body is refused with 413.
    MAX_CONTENT_LENGTH = 1024 * 1024
    #: Jobs declared here are reconciled into the store at start-up (see README).
    JOBS: list[dict[str, Any]] = [
        {
            "id": "heartbeat",
            "func": "jobs.heartbeat:beat",
            "trigger": "interval",
            "minutes": 1,
        },
        {
            "id": "daily-run-summary",
            "func": "jobs.reports:daily_run_summary",
            "trigger": "cron",
            "hour": 6,
            "minute": 0,
        },
    ]

    def __init__(self, environ: Mapping[str, str]) -> None:
        env = Env(environ)
        defaults = {**SERVICE_DEFAULTS, **ENV_DEFAULTS[self.ENV_NAME]}
        for setting in SETTINGS.values():
            default = defaults.get(setting.env, setting.default)
            setattr(self, setting.key, env.setting(setting, default))
        #: Signs the dashboard's session cookie; without it, development and testing keep one
        #: in the instance folder (see jobservice.standalone), production refuses the dashboard.
        self.SECRET_KEY = env.raw("SECRET_KEY")
        self.SCHEDULER_JOB_DEFAULTS = {
            # Long enough to survive a restart or a failover: a fire time that
            # falls inside one runs (once) afterwards instead of being dropped.
            "misfire_grace_time": env.int("SCHEDULER_MISFIRE_GRACE_TIME", 300, minimum=1, maximum=86400 * 7),
            "coalesce": env.bool("SCHEDULER_COALESCE", True),
            "max_instances": env.int("SCHEDULER_MAX_INSTANCES", 1, minimum=1, maximum=1000),
            "timeout_s": env.number(
                "SCHEDULER_JOB_TIMEOUT_SECONDS", 0, minimum=0, maximum=options.MAX_TIMEOUT_S
            )
            or None,  # 0: no timeout
            "retries": env.int("SCHEDULER_JOB_RETRIES", 0, minimum=0, maximum=options.MAX_RETRIES),
            "retry_delay_s": env.number(
                "SCHEDULER_JOB_RETRY_DELAY_SECONDS", 10, minimum=0, maximum=options.MAX_RETRY_DELAY_S
            ),
            "queue": env.raw("SCHEDULER_JOB_QUEUE") or "default",
        }
        self.SCHEDULER_EXECUTORS = {
            "default": {
                "type": "threadpool",
                "max_workers": env.int("SCHEDULER_MAX_WORKERS", 20, minimum=1, maximum=1000),
            }
        }
        self.LOG_LEVEL = env.choice("LOG_LEVEL", "info", ("debug", "info", "warning", "error")).upper()
        self.LOG_FORMAT = env.choice("LOG_FORMAT", "text", ("text", "json"))


class DevelopmentConfig(Config):
    ENV_NAME = "development"


class ProductionConfig(Config):
    ENV_NAME = "production"


class TestingConfig(Config):
    ENV_NAME = "testing"
    TESTING = True
    JOBS: list[dict[str, Any]] = []


CONFIGS: dict[str, type[Config]] = {
    "development": DevelopmentConfig,
    "production": ProductionConfig,
    "testing": TestingConfig,
}


def load_config(environ: Mapping[str, str] | None = None) -> Config:
    """Read `.env` (without overriding the real environment) and build the chosen config."""
    if environ is None:
        load_dotenv(override=False)
        environ = os.environ
    name = Env(environ).choice("JOBSERVICE_ENV", "development", tuple(CONFIGS))
    return CONFIGS[name](environ)
