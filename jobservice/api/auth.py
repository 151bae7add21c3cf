"""Bearer-token check for every /scheduler route."""

from __future__ import annotations

import hmac

from flask import Response, current_app, request

from .errors import error_response

CHALLENGE = {"WWW-Authenticate": 'Bearer realm="jobservice"'}


def token_required() -> bool:
    return bool(current_app.config.get("SCHEDULER_API_TOKEN"))


def has_valid_token() -> bool:
    """True when no token is configured, or the request carries it as a bearer token."""
    token: str | None = current_app.config.get("SCHEDULER_API_TOKEN")
    if not token:
        return True
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    # Constant-time comparison: the time taken says nothing about the token.
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


def require_token() -> Response | None:
    """With SCHEDULER_API_TOKEN set, refuse a request without that bearer token (401)."""
    if has_valid_token():
        return None
    return error_response(401, "send 'Authorization: Bearer <token>' with a valid token", headers=CHALLENGE)
