"""Every error leaves as JSON `{"error_message": ...}` with the right status, never HTML."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from apscheduler.jobstores.base import ConflictingIdError, JobLookupError
from flask import Blueprint, Flask, Response, current_app, request
from sqlalchemy.exc import DBAPIError, OperationalError
from werkzeug.exceptions import HTTPException

from ..errors import InvalidJob, ProtectedJob
from ..jobstore import BrokenJobError, StaleJobError

logger = logging.getLogger(__name__)
View = TypeVar("View", bound=Callable[..., Any])


class ApiError(Exception):
    """An error with an HTTP status and a message meant for the client."""

    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field


def error_response(
    status: int, message: str, field: str | None = None, headers: dict[str, str] | None = None
) -> Response:
    body: dict[str, Any] = {"error_message": message}
    if field is not None:
        body["field"] = field
    response = current_app.response_class(json.dumps(body), status=status, mimetype="application/json")
    response.headers.update(headers or {})
    return response


#: Body types a browser form can send across sites without a preflight: never accepted.
FORM_TYPES = frozenset({"application/x-www-form-urlencoded", "multipart/form-data", "text/plain"})


def accepts_multipart(view: View) -> View:
    """Mark a route that takes a multipart upload (the import) besides JSON."""
    view.accepts_multipart = True  # type: ignore[attr-defined]
    return view


def refuse_form_types() -> None:
    """415 for a body type a cross-site form could send (the routes take JSON). Unlike
    Flask-APScheduler, which parses any type, a page elsewhere cannot change jobs by
    submitting a form, whatever credentials the browser holds for this host."""
    mimetype = request.mimetype
    if request.method == "GET" or mimetype not in FORM_TYPES:
        return
    view = current_app.view_functions.get(request.endpoint or "")
    if mimetype == "multipart/form-data" and getattr(view, "accepts_multipart", False):
        return
    raise ApiError(415, f"send the body as application/json, not {mimetype}")


def json_body() -> Any:
    """The request body parsed as JSON; it must be sent as application/json (415 otherwise)."""
    raw = request.get_data(cache=True)
    if raw.strip() and not request.is_json:
        raise ApiError(415, f"send the body as application/json, not {request.mimetype or 'untyped'}")
    if not raw.strip():
        raise ApiError(400, "the request body must be a JSON object")
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        raise ApiError(400, "the request body is not valid JSON") from None


def register(target: Flask | Blueprint) -> None:
    """Register the handlers that turn every failure into a JSON error: on the service's own
    blueprints inside someone's app (their other routes keep their own error pages), on the
    whole app in the standalone service."""
    target.register_error_handler(ApiError, lambda e: error_response(e.status, e.message, e.field))
    target.register_error_handler(InvalidJob, lambda e: error_response(400, e.message, e.field))
    target.register_error_handler(JobLookupError, _not_found)
    target.register_error_handler(ConflictingIdError, _conflict)
    target.register_error_handler(StaleJobError, _stale)
    target.register_error_handler(BrokenJobError, _broken)
    target.register_error_handler(ProtectedJob, lambda e: error_response(403, e.message))
    target.register_error_handler(HTTPException, _http_error)
    target.register_error_handler(OperationalError, _database_down)
    target.register_error_handler(DBAPIError, _database_error)
    target.register_error_handler(Exception, _unexpected)


def json_routing_errors(app: Flask, prefix: str) -> None:
    """404 and 405 happen before a blueprint is chosen: under the API's prefix they are JSON
    too; elsewhere the app's own handler (if it has one) or Flask's default answers."""
    for code in (404, 405):
        previous = app.error_handler_spec[None][code].copy()

        def handler(exc: HTTPException, previous: dict[type, Callable[..., Any]] = previous) -> Any:
            if request.path == prefix or request.path.startswith(prefix + "/"):
                return _http_error(exc)
            for cls in type(exc).__mro__:
                if cls in previous:
                    return previous[cls](exc)
            return exc

        app.register_error_handler(code, handler)


def _not_found(exc: JobLookupError) -> Response:
    job_id = (request.view_args or {}).get("job_id", "")
    return error_response(404, f"Job {job_id} not found")


def _conflict(exc: ConflictingIdError) -> Response:
    return error_response(409, f"Job {exc.args[0]} already exists.")


def _stale(exc: StaleJobError) -> Response:
    return error_response(409, f"Job {exc.args[0]} keeps changing under concurrent writes; try again")


def _broken(exc: BrokenJobError) -> Response:
    return error_response(
        409, f"Job {exc.job_id} cannot be read from the store ({exc.error}): remove it, or add it again"
    )


def _http_error(exc: HTTPException) -> Response:
    methods = getattr(exc, "valid_methods", None)
    headers = {"Allow": ", ".join(methods)} if methods else None
    return error_response(exc.code or 500, exc.description or exc.name, headers=headers)


def _database_down(exc: OperationalError) -> Response:
    # Never echo the driver's message: it can carry the host and user.
    logger.warning("Database unavailable: %s", exc.__class__.__name__)
    return error_response(503, "the database is unavailable; try again shortly")


def _database_error(exc: DBAPIError) -> Response:
    if exc.connection_invalidated:
        return _database_down(exc)  # type: ignore[arg-type]
    logger.exception("Database error")
    return error_response(500, "internal error")


def _unexpected(exc: Exception) -> Response:
    logger.exception("Unhandled error on %s %s", request.method, request.path)
    return error_response(500, "internal error")
