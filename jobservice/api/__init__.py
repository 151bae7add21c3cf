"""The API's blueprint: Flask-APScheduler's REST API, hardened, at SCHEDULER_API_PREFIX with
endpoints named after SCHEDULER_ENDPOINT_PREFIX (`scheduler.get_scheduler_info`)."""

from __future__ import annotations

from flask import Blueprint, Flask

from ..errors import ConfigError
from ..settings import Settings
from . import auth, control, errors, export_import, history, jobs, openapi


def init_app(app: Flask, settings: Settings) -> None:
    """Register the routes, if SCHEDULER_API_ENABLED; their errors are JSON."""
    if not settings.api_enabled:
        return
    bp = Blueprint(blueprint_name(settings.endpoint_prefix), __name__)
    bp.before_request(auth.require_auth)
    bp.before_request(errors.refuse_form_types)
    errors.register(bp)
    control.register(bp)
    export_import.register(bp)  # before the job routes: /jobs/export is not a job id
    jobs.register(bp)
    history.register(bp)
    openapi.register(bp)
    app.register_blueprint(bp, url_prefix=settings.api_prefix)
    errors.json_routing_errors(app, settings.api_prefix)


def blueprint_name(endpoint_prefix: str) -> str:
    """SCHEDULER_ENDPOINT_PREFIX ('scheduler.', as upstream) names the blueprint the routes are in."""
    name = endpoint_prefix[:-1] if endpoint_prefix.endswith(".") else ""
    if not name or "." in name or not name.isidentifier():
        raise ConfigError(
            f"SCHEDULER_ENDPOINT_PREFIX must be a name and a dot, such as 'scheduler.' or 'api.', got "
            f"{endpoint_prefix!r}: the routes are registered as a blueprint of that name"
        )
    return name
