"""The /scheduler blueprint: Flask-APScheduler's REST API, hardened."""

from __future__ import annotations

from flask import Blueprint, Flask

from . import auth, control, errors, history, jobs, openapi, transfer


def init_app(app: Flask) -> None:
    """Register JSON errors everywhere and, if enabled, the /scheduler routes."""
    errors.init_app(app)
    if not app.config["SCHEDULER_API_ENABLED"]:
        return
    bp = Blueprint("scheduler", __name__)
    bp.before_request(auth.require_token)
    bp.before_request(errors.refuse_form_types)
    control.register(bp)
    transfer.register(bp)  # before the job routes: /jobs/export is not a job id
    jobs.register(bp)
    history.register(bp)
    openapi.register(bp)
    app.register_blueprint(bp, url_prefix=app.config["SCHEDULER_API_PREFIX"] or "")
