"""jobservice: one active scheduler for a Flask app across workers and hosts, one run per fire time.

from jobservice import JobService      # the extension, for your own app
from jobservice import APScheduler     # Flask-APScheduler's interface, for code written for it
from jobservice import create_app      # the standalone service (run.py)
"""

from __future__ import annotations

from .dropin import APScheduler
from .errors import ConfigError
from .runs import purge_runs, run_counts
from .service import JobService
from .standalone import create_app

__all__ = ["APScheduler", "ConfigError", "JobService", "create_app", "purge_runs", "run_counts"]
