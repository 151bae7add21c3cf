"""The dashboard's pages: jobs, one job, runs, the cluster; signing in and out; the language."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flask import Blueprint, Response, g, redirect, request, url_for

from .. import health
from ..errors import InvalidJob
from ..identity import worker_id
from ..job_json import job_dict
from ..jobstore import BrokenJob
from ..models import STATUSES
from ..runs import RunFilter, list_runs
from ..runtime import current_runtime
from ..triggers import parse_datetime
from . import access, i18n, queries, words
from .pages import local_target, refused_page, render, say, when

RUNS_PAGE = 50


def register(bp: Blueprint) -> None:
    bp.get("")(jobs)
    bp.get("/")(jobs)
    bp.get("/jobs/<job_id>")(job)
    bp.get("/runs")(runs)
    bp.get("/cluster")(cluster)
    bp.route("/sign-in", methods=["GET", "POST"])(sign_in)
    bp.post("/sign-out")(sign_out)
    bp.get("/language/<lang>")(language)


def jobs() -> Response:
    """Every job, a page at a time: search, filter, order; their last runs."""
    runtime = current_runtime()
    query = queries.JobQuery(
        search=request.args.get("q", "").strip()[:200],
        show=_choice("show", queries.FILTERS),
        sort=_choice("sort", queries.SORTS),
        page=_page_number(),
    )
    page = queries.job_page(runtime.store, runtime.engine, query)
    rows = [_job_row(entry, page.last_runs.get(entry.id)) for entry in page.jobs]
    return render(
        "jobservice_ui/jobs.html", query=query, rows=rows, total=page.total, first=page.first,
        last=page.first + len(rows) - 1, filters=queries.FILTERS, sorts=queries.SORTS,
        has_next=page.first + len(rows) - 1 < page.total,
    )  # fmt: skip


def job(job_id: str) -> Response:
    """One job: its definition, next fire times, runs (cursor-paged as the API), chart."""
    runtime = current_runtime()
    entry = runtime.store.lookup_entry(job_id)
    cursor = request.args.get("cursor", type=int)
    items = list_runs(runtime.engine, RunFilter(job_id=job_id, before_id=cursor), RUNS_PAGE)
    if entry is None and not items and cursor is None:
        return refused_page(404, say("not_found", id=job_id))
    context: dict[str, Any] = {"job_id": job_id, "entry": None, "broken": None, "fires": []}
    if isinstance(entry, BrokenJob):
        context["broken"] = entry.error
    elif entry is not None:
        context.update(
            entry=_job_row(entry, None),
            definition=job_dict(entry),
            fires=queries.next_fire_times(entry),
        )
    return render(
        "jobservice_ui/job.html", runs=[_run_row(run) for run in items],
        chart=_chart(queries.chart_points(items) if cursor is None else []),
        prevented=queries.prevented(runtime.engine, job_id),
        older=items[-1]["id"] if len(items) == RUNS_PAGE else None, cursor=cursor, **context,
    )  # fmt: skip


def runs() -> Response:
    """All runs, newest first: by status (failed first-class), job and time window."""
    runtime = current_runtime()
    status = request.args.get("status") or None
    errors: dict[str, str] = {}
    window: dict[str, datetime | None] = {}
    for name in ("since", "until"):
        raw = request.args.get(name, "").strip()
        window[name] = None
        if raw:
            try:
                window[name] = parse_datetime(name, raw, runtime.settings.timezone)
            except InvalidJob as exc:
                errors[name] = exc.message
    if status not in STATUSES:
        status = None
    cursor = request.args.get("cursor", type=int)
    where = RunFilter(
        job_id=request.args.get("job_id", "").strip() or None, status=status,
        since=window["since"], until=window["until"], before_id=cursor,
    )  # fmt: skip
    items = [] if errors else list_runs(runtime.engine, where, RUNS_PAGE)
    return render(
        "jobservice_ui/runs.html", 400 if errors else 200, runs=[_run_row(run) for run in items],
        statuses=STATUSES, chosen_status=status, errors=errors, args=request.args, cursor=cursor,
        older=items[-1]["id"] if len(items) == RUNS_PAGE else None,
    )  # fmt: skip


def cluster() -> Response:
    """Who leads, the last pass, pause state, reachability, the degraded reasons of /health."""
    runtime = current_runtime()
    report = health.report(runtime)
    state = runtime.cluster.state() if report["database"] == "ok" else None
    return render(
        "jobservice_ui/cluster.html", report=report, state=state, role=runtime.role, this_worker=worker_id()
    )


def sign_in() -> Response:
    """The form; on POST, the credentials once, for a session cookie (never the token)."""
    runtime = current_runtime()
    session: access.Session = g.ui_session
    target = local_target(request.values.get("next", ""), url_for(".jobs"))
    if not access.closed(runtime):
        return redirect(target)
    shown = {"target": target, "basic": runtime.settings.auth is not None,
             "token": bool(runtime.settings.api_token)}  # fmt: skip
    wrong = False
    if request.method == "POST":
        if not access.csrf_ok(session):
            return render("jobservice_ui/sign_in.html", 403, wrong=False, stale=True, **shown)
        role = access.sign_in(runtime, request.form)
        if role is not None:
            response = redirect(target, 303)
            access.write_session(response, runtime, access.Session(access.new_csrf(), role))
            g.ui_session = access.Session(session.csrf, role)  # the cookie is already written
            return response
        wrong = True
    return render("jobservice_ui/sign_in.html", 401 if wrong else 200, wrong=wrong, stale=False, **shown)


def sign_out() -> Response:
    runtime = current_runtime()
    response = redirect(url_for(".sign_in"), 303)
    access.forget_session(response, runtime)
    g.ui_signed_out = True
    return response


def language(lang: str) -> Response:
    """The language switch: remembered in a cookie, back to the page it was clicked on."""
    response = redirect(local_target(request.args.get("next", ""), url_for(".jobs")))
    if lang in i18n.TABLES:
        path = f"{current_runtime().settings.api_prefix}/ui"
        response.set_cookie(i18n.COOKIE, lang, max_age=365 * 86400, path=path, samesite="Lax")
    return response


def _job_row(entry: Any, last: dict[str, Any] | None) -> dict[str, Any]:
    if isinstance(entry, BrokenJob):
        return {"id": entry.id, "broken": entry.error, "next_run_time": entry.next_run_time}
    row = {
        "id": entry.id, "func": entry.func_ref, "next_run_time": entry.next_run_time,
        "paused": entry.next_run_time is None, "last": last, "broken": None,
        "service": entry.id.startswith("jobservice-"),
    }  # fmt: skip
    try:
        row["trigger"] = words.describe(entry.trigger, say, _plain_when)
    except Exception as exc:  # a trigger of an older release's making
        row["trigger"] = f"{type(exc).__name__}"
    if last is not None:
        last = dict(last)
        if last["started_at"] and last["finished_at"]:
            last["duration_ms"] = (last["finished_at"] - last["started_at"]).total_seconds() * 1000
        row["last"] = last
    return row


def _run_row(run: dict[str, Any]) -> dict[str, Any]:
    row = dict(run)
    started = run["started_at"]
    row["lateness_ms"] = (started - run["scheduled_at"]).total_seconds() * 1000 if started else None
    return row


def _chart(points: list[dict[str, float]]) -> dict[str, Any] | None:
    """Two polylines over the same x axis, each scaled to its own maximum (an inline SVG)."""
    if not points:
        return None
    width, height, pad = 600, 120, 4
    step = (width - 2 * pad) / max(1, len(points) - 1)
    chart: dict[str, Any] = {"width": width, "height": height, "count": len(points)}
    for name in ("duration_ms", "lateness_ms"):
        top = max(point[name] for point in points) or 1.0
        chart[name] = " ".join(
            f"{pad + i * step:.1f},{height - pad - (point[name] / top) * (height - 2 * pad):.1f}"
            for i, point in enumerate(points)
        )
        chart[f"{name}_max"] = top
    return chart


def _plain_when(value: datetime) -> str:
    return str(when(value).striptags())


def _choice(name: str, choices: tuple[str, ...]) -> str:
    value = request.args.get(name, choices[0])
    return value if value in choices else choices[0]


def _page_number() -> int:
    page = request.args.get("page", 1, type=int)
    return page if page is not None and 1 <= page <= 1_000_000 else 1
