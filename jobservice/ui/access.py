"""Who may use the dashboard, and how it knows them again.

With SCHEDULER_API_TOKEN (or Flask-APScheduler's SCHEDULER_AUTH) set, the dashboard is
closed: the sign-in form takes the token (or the Basic credentials) once, and the browser
keeps a session cookie signed with the app's SECRET_KEY: `HttpOnly`, `SameSite=Strict`,
`Secure` over HTTPS, scoped to the dashboard's path. The cookie holds the role and a
fingerprint of the credential it was granted for (a changed token ends its sessions),
never the token. Every POST must carry the session's CSRF token. The read-only token
(SCHEDULER_UI_READONLY_TOKEN) signs in a viewer, who is refused every action with 403.
The REST API never reads this cookie: it takes bearer or Basic credentials only.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Any

from flask import Response, current_app, request
from flask_apscheduler.auth import Authorization
from itsdangerous import BadSignature, URLSafeTimedSerializer

from ..runtime import Runtime

COOKIE = "jobservice_ui"
SESSION_MAX_AGE_S = 12 * 3600
ADMIN, VIEWER = "admin", "viewer"


@dataclass(frozen=True)
class Session:
    """The browser's session: its CSRF token and, once signed in, its role."""

    csrf: str
    role: str | None
    fresh: bool = False

    @property
    def may_act(self) -> bool:
        return self.role == ADMIN


def closed(runtime: Runtime) -> bool:
    return runtime.settings.has_credentials


def read_session(runtime: Runtime) -> Session:
    """The session of this request's cookie, or a new one (no role) if it has none valid."""
    raw = request.cookies.get(COOKIE)
    if raw:
        try:
            data = _serializer().loads(raw, max_age=SESSION_MAX_AGE_S)
        except BadSignature:
            data = None
        if isinstance(data, dict) and isinstance(data.get("c"), str):
            role = data.get("r")
            if role is not None and data.get("k") != _fingerprint(runtime, role):
                role = None  # granted for a credential that has changed since
            if not closed(runtime):
                role = ADMIN
            return Session(data["c"], role if role in (ADMIN, VIEWER) else None)
    return Session(new_csrf(), None if closed(runtime) else ADMIN, fresh=True)


def new_csrf() -> str:
    return secrets.token_urlsafe(24)


def write_session(response: Response, runtime: Runtime, session: Session) -> None:
    """Set the cookie (for a new session, or a change of role)."""
    data: dict[str, Any] = {"c": session.csrf}
    if session.role is not None and closed(runtime):
        data.update(r=session.role, k=_fingerprint(runtime, session.role))
    response.set_cookie(
        COOKIE,
        _serializer().dumps(data),
        max_age=SESSION_MAX_AGE_S,
        path=_path(runtime),
        secure=request.is_secure,
        httponly=True,
        samesite="Strict",
    )


def forget_session(response: Response, runtime: Runtime) -> None:
    response.delete_cookie(
        COOKIE, path=_path(runtime), secure=request.is_secure, httponly=True, samesite="Strict"
    )


def csrf_ok(session: Session) -> bool:
    given = request.form.get("csrf", "")
    return not session.fresh and hmac.compare_digest(given.encode(), session.csrf.encode())


def sign_in(runtime: Runtime, form: Any) -> str | None:
    """The role these credentials grant, or None; compared in constant time."""
    settings = runtime.settings
    token = form.get("token", "")
    if token:
        if settings.api_token and hmac.compare_digest(token.encode(), settings.api_token.encode()):
            return ADMIN
        readonly = settings.ui_readonly_token
        if readonly and hmac.compare_digest(token.encode(), readonly.encode()):
            return VIEWER
    username, password = form.get("username", ""), form.get("password", "")
    if settings.auth is not None and runtime.authenticate is not None and username:
        credentials = Authorization("basic", username=username, password=password)
        if runtime.authenticate(credentials):
            return ADMIN
    return None


def _fingerprint(runtime: Runtime, role: str) -> str:
    """Changes when the credential behind the role does (Basic auth: the callback decides)."""
    settings = runtime.settings
    secret = settings.api_token if role == ADMIN else settings.ui_readonly_token
    material = f"{role}:{secret or 'basic'}".encode()
    return hmac.new(_key(), material, hashlib.sha256).hexdigest()[:32]


def _serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(_key(), salt="jobservice-ui-session")


def _key() -> bytes:
    key = current_app.config["SECRET_KEY"]
    return key if isinstance(key, bytes) else str(key).encode()


def _path(runtime: Runtime) -> str:
    return f"{runtime.settings.api_prefix}/ui"
