"""Run history routes: GET /scheduler/runs and GET /scheduler/jobs/<id>/runs."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from flask import Blueprint, Response, request
from flask_apscheduler.json import jsonify

from ..errors import InvalidJob
from ..models import STATUSES
from ..runs import RunFilter, list_runs
from ..runtime import current_runtime
from ..triggers import parse_datetime
from .errors import ApiError
from .params import int_arg

MAX_PAGE = 500
DEFAULT_PAGE = 100


def register(bp: Blueprint) -> None:
    bp.get("/runs")(get_runs)
    bp.get("/jobs/<job_id>/runs")(get_job_runs)


def get_runs() -> Response:
    """All runs, newest first; ?job_id=&status=&since=&until=&limit=&cursor=."""
    return _page(request.args.get("job_id"))


def get_job_runs(job_id: str) -> Response:
    """One job's runs (also after the job was removed), newest first."""
    return _page(job_id)


def _page(job_id: str | None) -> Response:
    limit = int_arg("limit", DEFAULT_PAGE, 1, MAX_PAGE)
    cursor = int_arg("cursor", 0, 1, 2**62) if "cursor" in request.args else None
    status = request.args.get("status")
    if status is not None and status not in STATUSES:
        raise ApiError(400, f"status must be one of: {', '.join(STATUSES)}", "status")
    where = RunFilter(
        job_id=job_id,
        status=status,
        since=_time_arg("since"),
        until=_time_arg("until"),
        before_id=cursor,
    )
    items = list_runs(current_runtime().engine, where, limit)
    response = jsonify(items)
    if len(items) == limit:
        response.headers["Link"] = _next_link(items[-1]["id"])
    return response


def _time_arg(name: str) -> datetime | None:
    raw = request.args.get(name)
    if raw is None:
        return None
    try:
        return parse_datetime(name, raw, current_runtime().timezone)
    except InvalidJob as exc:
        raise ApiError(400, exc.message, name) from None


def _next_link(last_id: int) -> str:
    args: dict[str, Any] = {k: v for k, v in request.args.items() if k != "cursor"}
    args["cursor"] = last_id
    return f'<{request.base_url}?{urlencode(args)}>; rel="next"'
