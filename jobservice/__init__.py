"""jobservice: one active scheduler for a Flask app across workers and hosts, one run per fire time.

from jobservice import JobService      # the extension, for your own app
from jobservice import APScheduler     # Flask-APScheduler's interface, for code written for it
from jobservice import create_app      # the standalone service (run.py)
"""

from __future__ import annotations

from apscheduler.schedulers.base import STATE_PAUSED, STATE_RUNNING, STATE_STOPPED

from .dropin import APScheduler
from .errors import ConfigError
from .models import ignore_jobservice_tables
from .runs import purge_runs, run_counts
from .service import JobService
from .standalone import create_app

__all__ = [
    "STATE_PAUSED",
    "STATE_RUNNING",
    "STATE_STOPPED",
    "APScheduler",
    "ConfigError",
    "JobService",
    "create_app",
    "ignore_jobservice_tables",
    "purge_runs",
    "run_counts",
]
