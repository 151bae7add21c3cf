"""Settings: read from the environment once; a bad value stops start-up naming the setting."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path

import pytest
from flask import Flask

import config
from config import ConfigError, load_config
from jobservice import create_app
from jobservice import settings as jobservice_settings


def env(**values: str) -> dict[str, str]:
    return {"JOBSERVICE_ENV": "testing", **values}


def test_the_run_option_defaults_and_the_executor_come_from_the_environment() -> None:
    settings = load_config(
        env(
            SCHEDULER_JOB_TIMEOUT_SECONDS="30", SCHEDULER_JOB_RETRIES="2", SCHEDULER_JOB_RETRY_DELAY_SECONDS="1.5",
            SCHEDULER_JOB_QUEUE="heavy", RETRY_MAX_DELAY_SECONDS="60", SCHEDULER_EXECUTOR="rq",
            RQ_QUEUE_PREFIX="myapp-",
        )
    )  # fmt: skip
    defaults = settings.SCHEDULER_JOB_DEFAULTS
    assert (defaults["timeout_s"], defaults["retries"], defaults["retry_delay_s"], defaults["queue"]) == (
        30,
        2,
        1.5,
        "heavy",
    )
    assert settings.JOBSERVICE_RETRY_MAX_DELAY_SECONDS == 60
    assert (settings.SCHEDULER_EXECUTOR, settings.JOBSERVICE_RQ_QUEUE_PREFIX) == ("rq", "myapp-")
    with pytest.raises(ConfigError, match="SCHEDULER_JOB_RETRIES"):
        load_config(env(SCHEDULER_JOB_RETRIES="101"))


def test_defaults_without_any_setting() -> None:
    settings = load_config({})
    assert isinstance(settings, config.DevelopmentConfig)
    assert settings.JOBSERVICE_DATABASE_URL is None  # the factory puts SQLite under instance/
    assert settings.JOBSERVICE_REDIS_URL is None and settings.SCHEDULER_API_TOKEN is None
    assert settings.JOBSERVICE_LEADER_LEASE_SECONDS == 2.0
    assert settings.SCHEDULER_TIMEZONE == "UTC"
    assert settings.SCHEDULER_JOB_DEFAULTS == {
        "misfire_grace_time": 300,
        "coalesce": True,
        "max_instances": 1,
        "timeout_s": None,
        "retries": 0,
        "retry_delay_s": 10,
        "queue": "default",
    }
    assert settings.SCHEDULER_EXECUTORS == {"default": {"type": "threadpool", "max_workers": 20}}
    assert settings.JOBSERVICE_JOB_PACKAGES == ("jobs",)
    assert settings.SCHEDULER_API_ENABLED is True and settings.JOBSERVICE_HEALTH_ENABLED is True


def test_embedded_default_is_a_sqlite_file_under_instance(tmp_path: Path) -> None:
    from jobservice.database import default_sqlite_url

    url = default_sqlite_url(str(tmp_path / "instance"))
    assert url == f"sqlite:///{tmp_path}/instance/jobservice.sqlite3"
    assert (tmp_path / "instance").is_dir()


def test_environment_picks_the_config_class() -> None:
    assert isinstance(load_config(env(JOBSERVICE_ENV="production")), config.ProductionConfig)
    assert load_config(env()).TESTING is True


def test_values_are_parsed_and_typed() -> None:
    settings = load_config(
        env(
            LEADER_LEASE_SECONDS="1.5",
            SCHEDULER_API_ENABLED="off",
            SCHEDULER_MAX_WORKERS="8",
            JOB_PACKAGES="jobs, billing.jobs",
            DATABASE_URL="mysql://app:pw@db.internal:3306/app",
            SCHEDULER_TIMEZONE="Europe/Paris",
        )
    )
    assert settings.JOBSERVICE_LEADER_LEASE_SECONDS == 1.5
    assert settings.SCHEDULER_API_ENABLED is False
    assert settings.SCHEDULER_EXECUTORS["default"]["max_workers"] == 8
    assert settings.JOBSERVICE_JOB_PACKAGES == ("jobs", "billing.jobs")
    assert settings.JOBSERVICE_DATABASE_URL == "mysql+pymysql://app:pw@db.internal:3306/app"
    assert settings.SCHEDULER_TIMEZONE == "Europe/Paris"


@pytest.mark.parametrize(
    ("name", "value", "fragment"),
    [
        ("JOBSERVICE_ENV", "staging", "JOBSERVICE_ENV must be one of"),
        ("LEADER_LEASE_SECONDS", "soon", "LEADER_LEASE_SECONDS must be a number"),
        ("LEADER_LEASE_SECONDS", "0", "LEADER_LEASE_SECONDS must be between"),
        ("SCHEDULER_TIMEZONE", "Mars/Base", "SCHEDULER_TIMEZONE must be an IANA time zone"),
        ("RUN_RETENTION_DAYS", "0", "RUN_RETENTION_DAYS must be between"),
        ("HEALTH_ENABLED", "sometimes", "HEALTH_ENABLED must be true or false"),
        ("SCHEDULER_API_ENABLED", "maybe", "SCHEDULER_API_ENABLED must be true or false"),
        ("SCHEDULER_MAX_WORKERS", "many", "SCHEDULER_MAX_WORKERS must be a whole number"),
        ("SCHEDULER_MISFIRE_GRACE_TIME", "-1", "SCHEDULER_MISFIRE_GRACE_TIME must be between"),
        ("REDIS_URL", "http://cache:6379", "REDIS_URL must start with redis://"),
        (
            "DATABASE_URL",
            "oracle://scott:tiger@db/orcl",
            "DATABASE_URL must use mysql+pymysql, mysql+mysqldb",
        ),
        (
            "DATABASE_URL",
            "mysql+mysqlconnector://root@db/jobs",
            "DATABASE_URL must use mysql+pymysql, mysql+mysqldb",
        ),
        ("LOG_LEVEL", "loud", "LOG_LEVEL must be one of"),
    ],
)
def test_bad_value_names_the_setting(name: str, value: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as excinfo:
        load_config(env(**{name: value}))
    assert fragment in str(excinfo.value)


def test_unparseable_database_url_is_not_echoed() -> None:
    with pytest.raises(ConfigError) as excinfo:
        load_config(env(DATABASE_URL="::not a url with hunter2::"))
    assert "DATABASE_URL" in str(excinfo.value) and "hunter2" not in str(excinfo.value)


def test_production_refuses_the_api_without_a_token() -> None:
    with pytest.raises(ConfigError, match="SCHEDULER_API_TOKEN must be set in production"):
        create_app({"ENV_NAME": "production", "SCHEDULER_API_TOKEN": None})
    with pytest.raises(ConfigError, match="at least 16 characters"):
        create_app({"ENV_NAME": "production", "SCHEDULER_API_TOKEN": "short"})


def test_unsupported_scheduler_settings_stop_start_up(make_app: Callable[..., Flask]) -> None:
    with pytest.raises(ConfigError, match="SCHEDULER_JOBSTORES"):
        make_app(SCHEDULER_JOBSTORES={"default": {"type": "memory"}})
    with pytest.raises(ConfigError, match=r"SCHEDULER_EXECUTORS\['default'\] must be"):
        make_app(SCHEDULER_EXECUTORS={"default": {"type": "processpool"}})
    with pytest.raises(ConfigError, match="SCHEDULER_API_PREFIX must start with"):
        make_app(SCHEDULER_API_PREFIX="scheduler")


class RecordingEnviron(dict[str, str]):
    """An environment that remembers every variable asked for."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: set[str] = set()

    def get(self, key: str, default: object = None) -> object:  # type: ignore[override]
        self.asked.add(key)
        return super().get(key, default)


def test_settings_list_is_exactly_what_config_reads_and_env_example_documents() -> None:
    environ = RecordingEnviron()
    load_config(environ)
    assert environ.asked == set(config.VARIABLES)
    example = Path(config.__file__).with_name(".env.example").read_text()
    for name in config.VARIABLES:
        assert f"{name}=" in example, f"{name} is missing from .env.example"


def test_a_mysqlclient_url_without_mysqlclient_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "MySQLdb" else real(name, *a)
    )
    with pytest.raises(
        ConfigError, match=r"needs the mysqlclient package: pip install 'jobservice\[mysqlclient\]'"
    ):
        jobservice_settings.read({"JOBSERVICE_DATABASE_URL": "mysql+mysqldb://root@db:3306/jobs"}, "run")
    for key in ("JOBSERVICE_DATABASE_URL", "SQLALCHEMY_DATABASE_URI"):  # every door
        with pytest.raises(ConfigError, match="mysqlclient"):
            jobservice_settings.read({key: "mysql+mysqldb://root@db:3306/jobs"}, "run")
    assert jobservice_settings.read({"JOBSERVICE_DATABASE_URL": "mysql+pymysql://root@db:3306/jobs"}, "run")


@pytest.mark.parametrize("scheme", ["mysql+pymysql", "mysql+mysqldb", "mariadb+mysqldb", "mysql"])
def test_both_mysql_drivers_are_accepted(scheme: str) -> None:
    settings = jobservice_settings.read({"JOBSERVICE_DATABASE_URL": f"{scheme}://root@db:3306/jobs"}, "run")
    driver = "mysqldb" if "mysqldb" in scheme else "pymysql"
    assert f"+{driver}://" in settings.database_url
