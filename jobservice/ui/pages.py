"""What every dashboard page shares: the guard in front of it, how it is rendered (whole,
or only its live part for the refresh), the one-shot notice an action leaves, the headers."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, Response, g, redirect, render_template, request, url_for
from itsdangerous import BadSignature, URLSafeSerializer
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.exceptions import HTTPException

from ..runtime import Runtime, current_runtime
from . import access, i18n

LIVE_HEADER = "X-Jobservice-Live"
NOTICE_COOKIE = "jobservice_ui_notice"
REFRESH_S = 3
#: Pages that hold what the operator is typing: never refreshed under their hands.
STILL_PAGES = ("form.html", "sign_in.html", "refused.html")
#: The pages anyone may see: signing in, the language switch, the stylesheet and script.
OPEN_ENDPOINTS = {"sign_in", "language", "static"}
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def register(bp: Blueprint) -> None:
    bp.before_request(guard)
    bp.after_request(finish)
    bp.errorhandler(SQLAlchemyError)(database_down)
    bp.errorhandler(HTTPException)(http_error)
    bp.app_template_global("t")(say)
    bp.app_template_filter("when")(when)


def guard() -> Response | None:
    """Sign-in first where the dashboard is closed; a CSRF token and the right role for a POST."""
    runtime = current_runtime()
    g.ui_session = session = access.read_session(runtime)
    g.ui_lang = i18n.language()
    endpoint = (request.endpoint or "").rpartition(".")[2]
    if endpoint in OPEN_ENDPOINTS:
        return None
    if session.role is None:
        if request.method == "GET" and not request.headers.get(LIVE_HEADER):
            return redirect(url_for(".sign_in", next=request.full_path.rstrip("?")))
        return _refusal(401, "sign_in")
    if request.method == "POST":
        if not access.csrf_ok(session):
            return _refusal(403, "refused.csrf")
        if not session.may_act and endpoint != "sign_out":
            return _refusal(403, "refused.readonly")
    return None


def finish(response: Response) -> Response:
    runtime = current_runtime()
    session: access.Session | None = g.get("ui_session")
    if session is not None and session.fresh and not g.get("ui_signed_out"):
        access.write_session(response, runtime, session)
    if g.get("ui_clear_notice"):
        response.delete_cookie(NOTICE_COOKIE, path=_path(runtime))
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def _path(runtime: Runtime) -> str:
    return f"{runtime.settings.api_prefix}/ui"


def render(template: str, status: int = 200, **context: Any) -> Response:
    """The page, or only its live part when the page's script asks for a refresh."""
    runtime = current_runtime()
    context.update(_common(runtime))
    if template.endswith(STILL_PAGES):
        context["refresh_s"] = 0
    context["live_only"] = bool(request.headers.get(LIVE_HEADER))
    return Response(render_template(template, **context), status, mimetype="text/html")


def _common(runtime: Runtime) -> dict[str, Any]:
    session: access.Session = g.ui_session
    return {
        "lang": g.ui_lang,
        "csrf": session.csrf,
        "may_act": session.may_act,
        "signed_in": session.role is not None and access.closed(runtime),
        "readonly": session.role == access.VIEWER,
        "here": request.full_path.rstrip("?"),
        "notice": _take_notice(),
        "refresh_s": REFRESH_S,
    }


def say(key: str, **values: Any) -> str:
    return i18n.translate(g.get("ui_lang", "en"), key, **values)


def when(value: datetime | None) -> Any:
    """A <time> the script shows in the browser's zone; UTC on hover and without script."""
    from markupsafe import Markup

    if value is None:
        return Markup('<span class="muted">—</span>')
    utc = value.astimezone(UTC)
    shown = utc.strftime("%Y-%m-%d %H:%M:%S UTC")
    return Markup('<time datetime="{}" title="{}">{}</time>').format(
        utc.isoformat().replace("+00:00", "Z"), shown, shown
    )


def back(default: str, kind: str, key: str, **values: Any) -> Response:
    """Redirect to where the action came from, with a notice for the next page."""
    response = redirect(local_target(request.form.get("next", ""), default), 303)
    notice = URLSafeSerializer(access._key(), salt="jobservice-ui-notice").dumps([kind, key, values])
    response.set_cookie(
        NOTICE_COOKIE,
        notice,
        max_age=60,
        path=_path(current_runtime()),
        secure=request.is_secure,
        httponly=True,
        samesite="Strict",
    )
    return response


def _take_notice() -> dict[str, str] | None:
    raw = request.cookies.get(NOTICE_COOKIE)
    if not raw or request.headers.get(LIVE_HEADER):
        return None
    g.ui_clear_notice = True
    try:
        kind, key, values = URLSafeSerializer(access._key(), salt="jobservice-ui-notice").loads(raw)
        return {"kind": kind, "text": say(key, **values)}
    except (BadSignature, KeyError, ValueError, TypeError):
        return None


def _refusal(status: int, key: str) -> Response:
    message = say(key) if key != "sign_in" else say("sign_in.title")
    if request.accept_mimetypes.best == "application/json":
        return Response(json.dumps({"error_message": message}), status, mimetype="application/json")
    return _outside_page(status, message)


def _outside_page(status: int, message: str) -> Response:
    """A refusal or an error, shown without the session's links and buttons."""
    context = {"lang": g.get("ui_lang", "en"), "csrf": "", "may_act": False, "signed_in": False,
               "readonly": False, "here": "", "notice": None, "refresh_s": 0}  # fmt: skip
    html = render_template("jobservice_ui/refused.html", code=status, message=message, **context)
    return Response(html, status, mimetype="text/html")


def database_down(exc: SQLAlchemyError) -> Response:
    return _outside_page(503, say("unavailable"))


def http_error(exc: HTTPException) -> Response:
    return _outside_page(exc.code or 500, exc.description or "")


def refused_page(status: int, message: str) -> Response:
    """A page that says why there is nothing to show (an unknown job, say)."""
    return render("jobservice_ui/refused.html", status, code=status, message=message)


def local_target(target: str, default: str) -> str:
    """Only a path of the dashboard: a link or a form can never send the browser elsewhere."""
    root = url_for(".jobs").rstrip("/")
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith(root) or "\\" in target:
        return default
    return target
