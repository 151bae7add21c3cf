"""Who may call the API: a bearer token (SCHEDULER_API_TOKEN), or Flask-APScheduler's
SCHEDULER_AUTH (HTTP Basic, judged by the `@scheduler.authenticate` callback), or either
when both are set. With neither, the API is open, as upstream."""

from __future__ import annotations

import hmac

from flask import Response, request

from ..runtime import current_runtime
from .errors import error_response

BEARER_CHALLENGE = 'Bearer realm="jobservice"'


def authorized() -> bool:
    """True when no credentials are configured, or the request carries good ones."""
    runtime = current_runtime()
    settings = runtime.settings
    if not settings.has_credentials:
        return True
    if settings.api_token and _has_token(settings.api_token):
        return True
    if settings.auth is not None and runtime.authenticate is not None:
        credentials = settings.auth.get_authorization()
        return credentials is not None and bool(runtime.authenticate(credentials))
    return False


def require_auth() -> Response | None:
    """401 JSON for a request without good credentials, with a challenge for each scheme."""
    if authorized():
        return None
    settings = current_runtime().settings
    challenges = [BEARER_CHALLENGE] if settings.api_token else []
    if settings.auth is not None:
        challenges.append(settings.auth.get_authenticate_header())
    what = " or ".join(
        (["'Authorization: Bearer <token>'"] if settings.api_token else [])
        + (["HTTP Basic credentials"] if settings.auth is not None else [])
    )
    response = error_response(401, f"send {what} that are valid")
    for challenge in challenges:
        response.headers.add("WWW-Authenticate", challenge)
    return response


def _has_token(token: str) -> bool:
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    # Constant-time comparison: the time taken says nothing about the token.
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())
