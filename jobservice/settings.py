"""Every setting jobservice reads from `app.config`, with its default, checked once at start-up.

The keys are Flask-APScheduler's (`SCHEDULER_*`, `JOBS`) where it has one, with its
meaning, and `JOBSERVICE_*` for the rest. A bad value stops start-up with a ConfigError
that names the key and what it expected; a Flask-APScheduler setting that cannot be
honoured is refused, never ignored. The standalone service fills these keys from its
environment (`config.py`, `SETTINGS[...].env`).
"""

from __future__ import annotations

import importlib.util
import math
import socket
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import tzinfo
from typing import Any

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from . import options
from .errors import ConfigError, InvalidJob

#: Job threads of a leading process, at most.
MAX_WORKERS_LIMIT = 1000


@dataclass(frozen=True)
class Setting:
    """One key of `app.config`: its default, its kind and range, and the environment
    variable the standalone service reads it from."""

    key: str
    default: Any
    kind: str  # str, bool, number, int, list, database_url, redis_url, timezone
    env: str
    minimum: float | None = None
    maximum: float | None = None


SETTINGS: dict[str, Setting] = {
    s.key: s
    for s in (
        Setting("JOBSERVICE_DATABASE_URL", None, "database_url", "DATABASE_URL"),
        Setting("JOBSERVICE_REDIS_URL", None, "redis_url", "REDIS_URL"),
        Setting("SCHEDULER_API_TOKEN", None, "str", "SCHEDULER_API_TOKEN"),
        Setting("JOBSERVICE_LEADER_LEASE_SECONDS", 2.0, "number", "LEADER_LEASE_SECONDS", 0.5, 300),
        Setting("SCHEDULER_TIMEZONE", "UTC", "timezone", "SCHEDULER_TIMEZONE"),
        Setting("SCHEDULER_API_ENABLED", False, "bool", "SCHEDULER_API_ENABLED"),
        Setting("SCHEDULER_API_PREFIX", "/scheduler", "str", "SCHEDULER_API_PREFIX"),
        Setting("SCHEDULER_ENDPOINT_PREFIX", "scheduler.", "str", "SCHEDULER_ENDPOINT_PREFIX"),
        Setting("SCHEDULER_ALLOWED_HOSTS", ("*",), "list", "SCHEDULER_ALLOWED_HOSTS"),
        Setting("SCHEDULER_AUTOSTART", True, "bool", "SCHEDULER_AUTOSTART"),
        Setting("JOBSERVICE_JOB_PACKAGES", None, "list", "JOB_PACKAGES"),
        Setting("JOBSERVICE_RUN_RETENTION_DAYS", 30, "int", "RUN_RETENTION_DAYS", 1, 36500),
        Setting("JOBSERVICE_RUN_RETENTION_PER_JOB", 1000, "int", "RUN_RETENTION_PER_JOB", 1, 10_000_000),
        Setting("JOBSERVICE_RUN_OVERRUN_SECONDS", 0.0, "number", "RUN_OVERRUN_SECONDS", 0, 86400 * 365),
        Setting("JOBSERVICE_DB_AUTO_UPGRADE", True, "bool", "DB_AUTO_UPGRADE"),
        Setting("JOBSERVICE_HEALTH_ENABLED", False, "bool", "HEALTH_ENABLED"),
        Setting("JOBSERVICE_METRICS_ENABLED", False, "bool", "METRICS_ENABLED"),
        Setting("JOBSERVICE_METRICS_REQUIRE_TOKEN", True, "bool", "METRICS_REQUIRE_TOKEN"),
        Setting("SCHEDULER_EXECUTOR", "threads", "str", "SCHEDULER_EXECUTOR"),
        Setting("JOBSERVICE_RQ_QUEUE_PREFIX", "jobservice-", "str", "RQ_QUEUE_PREFIX"),
        Setting("JOBSERVICE_SPREAD_RUNS", False, "bool", "SPREAD_RUNS"),
        Setting("JOBSERVICE_RETRY_MAX_DELAY_SECONDS", 3600.0, "number", "RETRY_MAX_DELAY_SECONDS", 0, 86400),
        #: None: on where the API is on and the dashboard may be served (see `ui_enabled`).
        Setting("SCHEDULER_UI_ENABLED", None, "bool", "SCHEDULER_UI_ENABLED"),
        Setting("SCHEDULER_UI_READONLY_TOKEN", None, "str", "SCHEDULER_UI_READONLY_TOKEN"),
        Setting("SCHEDULER_UI_ALLOW_ANONYMOUS", False, "bool", "SCHEDULER_UI_ALLOW_ANONYMOUS"),
    )
}

#: Flask-APScheduler's per-job defaults, but with a grace time long enough to survive a
#: restart or a failover: a fire time inside one runs (once) afterwards instead of being dropped.
JOB_DEFAULTS = {"misfire_grace_time": 300, "coalesce": True, "max_instances": 1, **options.BUILTIN}
DEFAULT_MAX_WORKERS = 20
EXECUTORS = ("threads", "rq")


@dataclass(frozen=True)
class Settings:
    """What jobservice runs with, read from one app's config."""

    database_url: str | None
    redis_url: str | None
    api_token: str | None
    lease_s: float
    timezone: tzinfo
    timezone_name: str
    api_enabled: bool
    api_prefix: str
    endpoint_prefix: str
    allowed_hosts: tuple[str, ...]
    auth: Any
    autostart: bool
    job_packages: tuple[str, ...]
    retention_days: int
    retention_per_job: int
    overrun_s: float | None
    auto_upgrade: bool
    health_enabled: bool
    metrics_enabled: bool
    metrics_require_token: bool
    job_defaults: dict[str, Any]
    #: `threads` (the leader's pool runs every run) or `rq` (RQ workers do).
    executor: str
    rq_queue_prefix: str
    #: With threads: every serving process that may lead takes the leader's claimed runs.
    spread_runs: bool
    retry_max_delay_s: float
    max_workers: int
    jobs: tuple[Mapping[str, Any], ...]
    #: The dashboard at <api_prefix>/ui.
    ui_enabled: bool = False
    #: Signs in to the dashboard to look, not to act.
    ui_readonly_token: str | None = None

    @property
    def has_credentials(self) -> bool:
        """A bearer token or Flask-APScheduler's Basic auth is configured (either is enough)."""
        return bool(self.api_token) or self.auth is not None

    def this_host_may_lead(self) -> bool:
        """SCHEDULER_ALLOWED_HOSTS: only the hosts listed campaign for the lease, as upstream."""
        return "*" in self.allowed_hosts or socket.gethostname().lower() in self.allowed_hosts


def read(config: Mapping[str, Any], import_name: str) -> Settings:
    """Check every setting of this app's config; ConfigError names the first bad one."""
    value = {key: _check(SETTINGS[key], config.get(key, SETTINGS[key].default)) for key in SETTINGS}
    if "SCHEDULER_VIEWS_ENABLED" in config and "SCHEDULER_API_ENABLED" not in config:
        value["SCHEDULER_API_ENABLED"] = _check(
            SETTINGS["SCHEDULER_API_ENABLED"], config["SCHEDULER_VIEWS_ENABLED"]
        )
    prefix = value["SCHEDULER_API_PREFIX"] or ""
    if prefix and not prefix.startswith("/"):
        raise ConfigError(f"SCHEDULER_API_PREFIX must start with '/', got {prefix!r}")
    store_url = _jobstore_url(config)  # checked even when a URL is given: never ignored
    if value["SCHEDULER_EXECUTOR"] not in EXECUTORS:
        raise ConfigError(
            f"SCHEDULER_EXECUTOR must be one of {', '.join(EXECUTORS)}, got {value['SCHEDULER_EXECUTOR']!r}"
        )
    if value["SCHEDULER_EXECUTOR"] == "rq" and not value["JOBSERVICE_REDIS_URL"]:
        raise ConfigError("SCHEDULER_EXECUTOR 'rq' needs Redis: set JOBSERVICE_REDIS_URL (REDIS_URL)")
    if value["SCHEDULER_EXECUTOR"] == "rq" and importlib.util.find_spec("rq") is None:
        raise ConfigError("SCHEDULER_EXECUTOR 'rq' needs the rq package: pip install 'jobservice[rq]'")
    if value["JOBSERVICE_SPREAD_RUNS"] and value["SCHEDULER_EXECUTOR"] != "threads":
        raise ConfigError(
            "JOBSERVICE_SPREAD_RUNS spreads the thread executor's runs: with SCHEDULER_EXECUTOR "
            f"{value['SCHEDULER_EXECUTOR']!r} the RQ workers run them; leave it off"
        )
    if value["JOBSERVICE_SPREAD_RUNS"] and not value["JOBSERVICE_REDIS_URL"]:
        raise ConfigError("JOBSERVICE_SPREAD_RUNS needs Redis: set JOBSERVICE_REDIS_URL (REDIS_URL)")
    if not options.QUEUE_NAME.fullmatch(value["JOBSERVICE_RQ_QUEUE_PREFIX"] + "q"):
        raise ConfigError("JOBSERVICE_RQ_QUEUE_PREFIX may only hold letters, digits, '_', '-' or '.'")
    database_url = value["JOBSERVICE_DATABASE_URL"] or store_url or config.get("SQLALCHEMY_DATABASE_URI")
    _check_driver(database_url)
    return Settings(
        database_url=database_url,
        redis_url=value["JOBSERVICE_REDIS_URL"],
        api_token=value["SCHEDULER_API_TOKEN"],
        lease_s=value["JOBSERVICE_LEADER_LEASE_SECONDS"],
        timezone=zoneinfo.ZoneInfo(value["SCHEDULER_TIMEZONE"]),
        timezone_name=value["SCHEDULER_TIMEZONE"],
        api_enabled=value["SCHEDULER_API_ENABLED"],
        api_prefix=prefix,
        endpoint_prefix=value["SCHEDULER_ENDPOINT_PREFIX"] or "",
        allowed_hosts=tuple(host.lower() for host in value["SCHEDULER_ALLOWED_HOSTS"]),
        auth=config.get("SCHEDULER_AUTH"),
        autostart=value["SCHEDULER_AUTOSTART"],
        job_packages=value["JOBSERVICE_JOB_PACKAGES"] or default_job_packages(import_name),
        retention_days=value["JOBSERVICE_RUN_RETENTION_DAYS"],
        retention_per_job=value["JOBSERVICE_RUN_RETENTION_PER_JOB"],
        overrun_s=value["JOBSERVICE_RUN_OVERRUN_SECONDS"] or None,
        auto_upgrade=value["JOBSERVICE_DB_AUTO_UPGRADE"],
        health_enabled=value["JOBSERVICE_HEALTH_ENABLED"],
        metrics_enabled=value["JOBSERVICE_METRICS_ENABLED"],
        metrics_require_token=value["JOBSERVICE_METRICS_REQUIRE_TOKEN"],
        job_defaults=_job_defaults(config.get("SCHEDULER_JOB_DEFAULTS")),
        executor=value["SCHEDULER_EXECUTOR"],
        rq_queue_prefix=value["JOBSERVICE_RQ_QUEUE_PREFIX"],
        spread_runs=value["JOBSERVICE_SPREAD_RUNS"],
        retry_max_delay_s=value["JOBSERVICE_RETRY_MAX_DELAY_SECONDS"],
        max_workers=_max_workers(config.get("SCHEDULER_EXECUTORS") or {}),
        jobs=tuple(config.get("SCHEDULER_JOBS") or config.get("JOBS") or ()),
        **_ui(value, config),
    )


def _ui(value: Mapping[str, Any], config: Mapping[str, Any]) -> dict[str, Any]:
    """The dashboard is closed wherever credentials are set; open only where anonymous use is
    allowed (debug, testing, or SCHEDULER_UI_ALLOW_ANONYMOUS), so production never serves it
    unauthenticated by accident. Unset, it follows the API where it may be served and the
    app has a SECRET_KEY to sign its cookie with."""
    has_credentials = bool(value["SCHEDULER_API_TOKEN"]) or config.get("SCHEDULER_AUTH") is not None
    anonymous = bool(value["SCHEDULER_UI_ALLOW_ANONYMOUS"] or config.get("DEBUG") or config.get("TESTING"))
    enabled = value["SCHEDULER_UI_ENABLED"]
    readonly = value["SCHEDULER_UI_READONLY_TOKEN"]
    if enabled is None:
        may_serve = has_credentials or anonymous
        enabled = value["SCHEDULER_API_ENABLED"] and may_serve and bool(config.get("SECRET_KEY"))
    elif enabled and not (has_credentials or anonymous):
        raise ConfigError(
            "SCHEDULER_UI_ENABLED is on with no credentials: set SCHEDULER_API_TOKEN (or SCHEDULER_AUTH) "
            "to close the dashboard, or SCHEDULER_UI_ALLOW_ANONYMOUS to serve it to anyone who reaches it"
        )
    if readonly and not has_credentials:
        raise ConfigError(
            "SCHEDULER_UI_READONLY_TOKEN needs SCHEDULER_API_TOKEN (or SCHEDULER_AUTH): "
            "without them everyone may act, and a read-only sign-in would mean nothing"
        )
    if readonly and readonly == value["SCHEDULER_API_TOKEN"]:
        raise ConfigError("SCHEDULER_UI_READONLY_TOKEN must differ from SCHEDULER_API_TOKEN")
    if enabled and not config.get("SECRET_KEY"):
        raise ConfigError(
            "SECRET_KEY must be set while the dashboard is on (SCHEDULER_UI_ENABLED): "
            "it signs the dashboard's session cookie"
        )
    return {"ui_enabled": bool(enabled), "ui_readonly_token": readonly}


#: Keys read besides SETTINGS: Flask-APScheduler's structured ones, and the app's own database.
OTHER_KEYS = (
    "SCHEDULER_VIEWS_ENABLED",
    "SCHEDULER_AUTH",
    "SCHEDULER_JOBSTORES",
    "SCHEDULER_JOB_DEFAULTS",
    "SCHEDULER_EXECUTORS",
    "SCHEDULER_JOBS",
    "JOBS",
    "SQLALCHEMY_DATABASE_URI",
)


def snapshot(config: Mapping[str, Any]) -> dict[str, Any]:
    """What `read` reads, copied (containers, not the objects in them), to tell later
    whether the config changed."""
    return {
        **{key: _copy(config.get(key, setting.default)) for key, setting in SETTINGS.items()},
        **{key: _copy(config.get(key)) for key in OTHER_KEYS},
    }


def changed_since(before: dict[str, Any], config: Mapping[str, Any]) -> list[str]:
    """The keys whose value differs from `before` (names only: values may be secrets)."""
    now = snapshot(config)
    return [key for key in before if now[key] != before[key]]


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _copy(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_copy(item) for item in value]
    return value


def default_job_packages(import_name: str) -> tuple[str, ...]:
    """The app's own top-level package and `jobs`: where Flask-APScheduler code keeps its jobs."""
    top = import_name.split(".")[0]
    packages = [top] if top not in ("jobservice", "") else []
    return (*packages, "jobs") if "jobs" not in packages else tuple(packages)


def _check(setting: Setting, value: Any) -> Any:
    """The value, if it is of the setting's kind and within its range."""
    return checked(setting, value, setting.key)


def checked(setting: Setting, value: Any, name: str) -> Any:
    """The value in the setting's kind; ConfigError says what `name` (the app.config key, or
    the standalone service's environment variable) must be."""
    if value is None and setting.default is None:
        return None
    try:
        result = _CHECKS[setting.kind](value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{name} {exc}, got {_shown(name, value)}") from None
    if setting.minimum is not None and not setting.minimum <= result <= (setting.maximum or math.inf):
        low, high = setting.minimum, setting.maximum
        raise ConfigError(f"{name} must be between {low:g} and {high:g}, got {value!r}")
    return result


def _shown(name: str, value: Any) -> str:
    """How a bad value is quoted in an error: never a URL (it may hold a password) or a token."""
    return "a value that is not one" if name.endswith(("_URL", "_TOKEN")) else repr(value)


def _string(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError("must be a string")
    return value


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError("must be True or False")
    return value


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise TypeError("must be a number")
    return float(value)


def _integer(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError("must be a whole number")
    return value


def _strings(value: Any) -> tuple[str, ...]:
    if (
        isinstance(value, str)
        or not isinstance(value, (list, tuple))
        or not all(isinstance(v, str) for v in value)
    ):
        raise TypeError("must be a list of strings")
    return tuple(value)


#: The MySQL/MariaDB drivers jobservice is tested with: PyMySQL (pure Python, installed with
#: it) and mysqlclient (C, `pip install 'jobservice[mysqlclient]'`, needs a compiler).
MYSQL_DRIVERS = {"pymysql": "PyMySQL", "mysqldb": "mysqlclient"}


def _database_url(value: Any) -> str:
    """A SQLAlchemy URL; mysql:// and mariadb:// mean the PyMySQL driver jobservice ships with."""
    try:
        url = make_url(_string(value))
    except ArgumentError:
        raise ValueError(
            "must be a SQLAlchemy URL such as mysql+pymysql://user:password@host:3306/db or sqlite:////path/file.db"
        ) from None
    if url.drivername in ("mysql", "mariadb"):
        url = url.set(drivername="mysql+pymysql")
    backend = url.get_backend_name()
    if backend not in ("mysql", "mariadb", "sqlite", "postgresql") or (
        backend in ("mysql", "mariadb") and url.get_driver_name() not in MYSQL_DRIVERS
    ):
        raise ValueError("must use mysql+pymysql, mysql+mysqldb, sqlite or postgresql")
    return url.render_as_string(hide_password=False)


def _check_driver(url: str | None) -> None:
    """mysql+mysqldb needs mysqlclient, which is not installed with jobservice."""
    if url and make_url(url).get_driver_name() == "mysqldb" and importlib.util.find_spec("MySQLdb") is None:
        raise ConfigError(
            "a mysql+mysqldb URL needs the mysqlclient package: pip install 'jobservice[mysqlclient]' "
            "(it compiles against libmariadb-dev or libmysqlclient-dev), or use mysql+pymysql"
        )


def _redis_url(value: Any) -> str:
    if not _string(value).startswith(("redis://", "rediss://", "unix://")):
        raise ValueError("must start with redis://, rediss:// or unix://")
    return value


def _timezone(value: Any) -> str:
    name = str(value) if isinstance(value, tzinfo) else _string(value)
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError("must be an IANA time zone such as UTC or Europe/Paris") from None
    return name


_CHECKS = {
    "str": _string,
    "bool": _boolean,
    "number": _number,
    "int": _integer,
    "list": _strings,
    "database_url": _database_url,
    "redis_url": _redis_url,
    "timezone": _timezone,
}


def _jobstore_url(config: Mapping[str, Any]) -> str | None:
    """SCHEDULER_JOBSTORES is honoured when it is what jobservice is made of: one SQLAlchemy
    job store on the table `apscheduler_jobs`, whose database then holds everything.
    Any other store cannot be shared safely by several processes, so it is refused."""
    stores = config.get("SCHEDULER_JOBSTORES")
    if not stores:
        return None
    from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore

    store = stores.get("default") if isinstance(stores, Mapping) and set(stores) == {"default"} else None
    if not isinstance(store, SQLAlchemyJobStore) or store.jobs_t.name != "apscheduler_jobs":
        raise ConfigError(
            "SCHEDULER_JOBSTORES may only be {'default': SQLAlchemyJobStore(url=...)} on the table "
            "apscheduler_jobs: every process of a deployment must share one SQL job store "
            "(or leave it out and set JOBSERVICE_DATABASE_URL)"
        )
    return store.engine.url.render_as_string(hide_password=False)


def _job_defaults(defaults: Any) -> dict[str, Any]:
    if defaults is None:
        return dict(JOB_DEFAULTS)
    if not isinstance(defaults, Mapping) or set(defaults) - set(JOB_DEFAULTS):
        raise ConfigError(f"SCHEDULER_JOB_DEFAULTS may only set {', '.join(JOB_DEFAULTS)}")
    for field in options.OPTION_FIELDS:
        if field in defaults:
            try:
                options.check(field, defaults[field])
            except InvalidJob as exc:
                raise ConfigError(f"SCHEDULER_JOB_DEFAULTS[{field!r}]: {exc.message}") from None
    return {**JOB_DEFAULTS, **defaults}


def _max_workers(executors: Mapping[str, Any]) -> int:
    """SCHEDULER_EXECUTORS keeps Flask-APScheduler's meaning, limited to what can push a context."""
    if set(executors) - {"default"}:
        raise ConfigError("SCHEDULER_EXECUTORS may only configure the 'default' executor")
    default = executors.get("default", {})
    kind = default.get("type", "threadpool") if isinstance(default, Mapping) else None
    if kind != "threadpool" or "class" in default:
        raise ConfigError(
            "SCHEDULER_EXECUTORS['default'] must be {'type': 'threadpool', 'max_workers': N}: "
            "runs need the app context, which a process pool cannot have"
        )
    workers = default.get("max_workers", DEFAULT_MAX_WORKERS)
    if isinstance(workers, bool) or not isinstance(workers, int) or not 1 <= workers <= MAX_WORKERS_LIMIT:
        raise ConfigError(f"SCHEDULER_EXECUTORS['default']['max_workers'] must be 1 to {MAX_WORKERS_LIMIT}")
    return workers
