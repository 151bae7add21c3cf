"""The dashboard at <SCHEDULER_API_PREFIX>/ui: jobs, a job's runs, all runs, the cluster.

Server-rendered with Flask's Jinja2 and one small script of our own (live refresh, local
times, confirmations); no build step. Reads go through `queries`, a few statements a page;
every action goes through the Runtime's Operations, with the API's rules.
"""

from __future__ import annotations

from flask import Blueprint, Flask

from ..settings import Settings
from . import actions, pages, views

BLUEPRINT = "jobservice_ui"


def init_app(app: Flask, settings: Settings) -> None:
    """Register the dashboard, if SCHEDULER_UI_ENABLED (see settings)."""
    if not settings.ui_enabled:
        return
    bp = Blueprint(
        BLUEPRINT,
        __name__,
        template_folder="templates",
        static_folder="static",
        static_url_path="/static",
    )
    pages.register(bp)
    views.register(bp)
    actions.register(bp)
    app.register_blueprint(bp, url_prefix=f"{settings.api_prefix}/ui")
