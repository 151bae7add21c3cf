"""The dashboard's actions: each a POST (with the session's CSRF token, checked by the guard)
that calls the Runtime's Operations, the one door every change goes through, and comes back
to the page it was made on with what happened."""

from __future__ import annotations

from typing import Any

from apscheduler.jobstores.base import ConflictingIdError, JobLookupError
from flask import Blueprint, Response, request, url_for

from ..errors import InvalidJob, ProtectedJob
from ..job_json import job_dict
from ..jobstore import BrokenJobError
from ..runtime import current_runtime
from ..triggers import TRIGGER_FIELDS
from . import forms
from .pages import back, refused_page, render, say


def register(bp: Blueprint) -> None:
    bp.post("/jobs/<job_id>/<any(pause, resume, run, remove):action>")(job_action)
    bp.post("/cluster/<any(pause, resume):action>")(cluster_action)
    bp.route("/add", methods=["GET", "POST"])(add)
    bp.route("/jobs/<job_id>/edit", methods=["GET", "POST"])(edit)


def job_action(job_id: str, action: str) -> Response:
    """Pause, resume, run now or remove one job, with the API's rules."""
    operations = current_runtime().operations
    default = url_for(".jobs") if action == "remove" else url_for(".job", job_id=job_id)
    try:
        {
            "pause": operations.pause,
            "resume": operations.resume,
            "run": operations.run_now,
            "remove": operations.remove,
        }[action](job_id)
    except (JobLookupError, BrokenJobError):
        return back(default, "error", "not_found", id=job_id)
    except ProtectedJob as exc:
        return back(default, "error", "refused", message=exc.message)
    return back(default, "ok", f"done.{action}", id=job_id)


def cluster_action(action: str) -> Response:
    operations = current_runtime().operations
    changed = operations.pause_cluster() if action == "pause" else operations.resume_cluster()
    key = f"done.cluster_{action}" if changed else "done.nothing"
    return back(url_for(".cluster"), "ok", key)


def add() -> Response:
    """The add form; its POST is `POST /scheduler/jobs` with the same rules and errors."""
    if request.method == "GET":
        return _form(None, {"trigger": "cron"}, {})
    values = request.form.to_dict()
    try:
        job = current_runtime().operations.add(forms.definition(request.form, new=True))
    except InvalidJob as exc:
        return _form(None, values, {exc.field or "form": exc.message}, 400)
    except ConflictingIdError:
        message = f"Job {values.get('id', '')} already exists."
        return _form(None, values, {"id": message}, 409)
    return back(url_for(".job", job_id=job.id), "ok", "done.add", id=job.id)


def edit(job_id: str) -> Response:
    """Change a job's trigger, arguments, name or options: `PATCH /scheduler/jobs/<id>`."""
    runtime = current_runtime()
    try:
        stored = runtime.store.lookup_job(job_id)
    except BrokenJobError:
        stored = None
    if stored is None:
        return refused_page(404, say("not_found", id=job_id))
    if request.method == "GET":
        return _form(job_id, forms.values_of(job_dict(stored)), {})
    values = request.form.to_dict()
    try:
        runtime.operations.change(job_id, forms.definition(request.form, new=False))
    except InvalidJob as exc:
        return _form(job_id, values, {exc.field or "form": exc.message}, 400)
    except ProtectedJob as exc:
        return _form(job_id, values, {"form": exc.message}, 400)
    except JobLookupError:
        return refused_page(404, say("not_found", id=job_id))
    return back(url_for(".job", job_id=job_id), "ok", "done.edit", id=job_id)


def _form(job_id: str | None, values: dict[str, Any], errors: dict[str, str], status: int = 200) -> Response:
    return render(
        "jobservice_ui/form.html",
        status,
        job_id=job_id,
        values=values,
        errors=errors,
        triggers=forms.TRIGGERS,
        cron_fields=forms.FORM_CRON,
        interval_fields=TRIGGER_FIELDS["interval"][:5],
        options=forms.OPTIONS,
        packages=current_runtime().settings.job_packages,
    )
