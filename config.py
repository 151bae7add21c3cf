"""Every setting of the job service, read from the environment (and `.env`) once.

`load_config()` picks the class named by JOBSERVICE_ENV and reads each variable
when it is instantiated, so tests and tools can build configs from any mapping.
A bad value raises ConfigError naming the variable and what it expected.
"""

from __future__ import annotations

import os
import zoneinfo
from collections.abc import Mapping
from typing import Any

from dotenv import load_dotenv
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

#: Every environment variable the service reads (documented in README and .env.example).
SETTINGS = (
    "JOBSERVICE_ENV",
    "DATABASE_URL",
    "REDIS_URL",
    "SCHEDULER_API_TOKEN",
    "LEADER_LEASE_SECONDS",
    "SCHEDULER_TIMEZONE",
    "SCHEDULER_API_ENABLED",
    "SCHEDULER_API_PREFIX",
    "SCHEDULER_AUTOSTART",
    "SCHEDULER_MISFIRE_GRACE_TIME",
    "SCHEDULER_COALESCE",
    "SCHEDULER_MAX_INSTANCES",
    "SCHEDULER_MAX_WORKERS",
    "JOB_PACKAGES",
    "RUN_RETENTION_DAYS",
    "RUN_RETENTION_PER_JOB",
    "RUN_OVERRUN_SECONDS",
    "DB_AUTO_UPGRADE",
    "METRICS_ENABLED",
    "METRICS_REQUIRE_TOKEN",
    "LOG_LEVEL",
    "LOG_FORMAT",
)
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names it and what it expects."""


class Env:
    """Typed reader over an environment mapping; errors name the key and the bad value."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ

    def raw(self, name: str) -> str | None:
        value = self._environ.get(name)
        return value.strip() if value is not None and value.strip() else None

    def str(self, name: str, default: str | None = None) -> str | None:
        value = self.raw(name)
        return default if value is None else value

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

    def list(self, name: str, default: tuple[str, ...]) -> tuple[str, ...]:
        value = self.raw(name)
        if value is None:
            return default
        return tuple(item.strip() for item in value.split(",") if item.strip())


def _database_url(env: Env) -> str | None:
    """DATABASE_URL, with mysql:// and mariadb:// mapped to the PyMySQL driver we ship."""
    value = env.str("DATABASE_URL")
    if value is None:
        return None  # the factory puts a SQLite file under the instance folder
    try:
        url = make_url(value)
    except ArgumentError:
        # The URL may hold a password: never echo it.
        raise ConfigError(
            "DATABASE_URL must be a SQLAlchemy URL such as "
            "mysql+pymysql://user:password@host:3306/db or sqlite:////path/file.db"
        ) from None
    if url.drivername in ("mysql", "mariadb"):
        url = url.set(drivername="mysql+pymysql")
    if url.get_backend_name() not in ("mysql", "mariadb", "sqlite", "postgresql"):
        raise ConfigError(
            f"DATABASE_URL must use mysql+pymysql, sqlite or postgresql, got {url.drivername!r}"
        )
    return url.render_as_string(hide_password=False)


def _redis_url(env: Env) -> str | None:
    value = env.str("REDIS_URL")
    if value is not None and not value.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError("REDIS_URL must start with redis://, rediss:// or unix://")
    return value


def _timezone(env: Env) -> str:
    value = env.str("SCHEDULER_TIMEZONE", "UTC") or "UTC"
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            f"SCHEDULER_TIMEZONE must be an IANA time zone such as UTC or Europe/Paris, got {value!r}"
        ) from None
    return value


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
        self.DATABASE_URL = _database_url(env)
        self.REDIS_URL = _redis_url(env)
        self.SCHEDULER_API_TOKEN = env.str("SCHEDULER_API_TOKEN")
        self.LEADER_LEASE_SECONDS = env.number("LEADER_LEASE_SECONDS", 2.0, minimum=0.5, maximum=300)
        self.SCHEDULER_TIMEZONE = _timezone(env)
        self.SCHEDULER_API_ENABLED = env.bool("SCHEDULER_API_ENABLED", True)
        self.SCHEDULER_API_PREFIX = env.str("SCHEDULER_API_PREFIX", "/scheduler")
        self.SCHEDULER_AUTOSTART = env.bool("SCHEDULER_AUTOSTART", True)
        self.SCHEDULER_JOB_DEFAULTS = {
            # Long enough to survive a restart or a failover: a fire time that
            # falls inside one runs (once) afterwards instead of being dropped.
            "misfire_grace_time": env.int("SCHEDULER_MISFIRE_GRACE_TIME", 300, minimum=1, maximum=86400 * 7),
            "coalesce": env.bool("SCHEDULER_COALESCE", True),
            "max_instances": env.int("SCHEDULER_MAX_INSTANCES", 1, minimum=1, maximum=1000),
        }
        self.SCHEDULER_EXECUTORS = {
            "default": {
                "type": "threadpool",
                "max_workers": env.int("SCHEDULER_MAX_WORKERS", 20, minimum=1, maximum=1000),
            }
        }
        self.JOB_PACKAGES = env.list("JOB_PACKAGES", ("jobs",))
        self.RUN_RETENTION_DAYS = env.int("RUN_RETENTION_DAYS", 30, minimum=1, maximum=36500)
        self.RUN_RETENTION_PER_JOB = env.int("RUN_RETENTION_PER_JOB", 1000, minimum=1, maximum=10_000_000)
        # A run still going after this long is flagged overrunning (0: only when a recurring
        # job's run outlasts the gap to its next fire time).
        self.RUN_OVERRUN_SECONDS = env.number("RUN_OVERRUN_SECONDS", 0, minimum=0, maximum=86400 * 365)
        self.DB_AUTO_UPGRADE = env.bool("DB_AUTO_UPGRADE", True)
        self.METRICS_ENABLED = env.bool("METRICS_ENABLED", True)
        self.METRICS_REQUIRE_TOKEN = env.bool("METRICS_REQUIRE_TOKEN", True)
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


def check(config: Mapping[str, Any]) -> None:
    """Rules that span settings, checked after test or app overrides are applied."""
    token = config.get("SCHEDULER_API_TOKEN")
    if config.get("ENV_NAME") == "production" and config.get("SCHEDULER_API_ENABLED"):
        if not token:
            raise ConfigError(
                "SCHEDULER_API_TOKEN must be set in production while SCHEDULER_API_ENABLED "
                "is on: the API can add and run jobs"
            )
        if len(token) < 16:
            raise ConfigError("SCHEDULER_API_TOKEN must be at least 16 characters in production")
    if config.get("SCHEDULER_JOBSTORES"):
        raise ConfigError(
            "SCHEDULER_JOBSTORES is not supported: jobs are kept in DATABASE_URL, which every process shares"
        )
    prefix = config.get("SCHEDULER_API_PREFIX") or ""
    if prefix and not prefix.startswith("/"):
        raise ConfigError(f"SCHEDULER_API_PREFIX must start with '/', got {prefix!r}")
