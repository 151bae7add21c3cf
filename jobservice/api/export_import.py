"""Export and import routes: GET /scheduler/jobs/export, POST /scheduler/jobs/import."""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import UTC, datetime

from flask import Blueprint, Response, current_app, jsonify, request

from ..export_import import export_jobs, import_jobs
from ..operations import ImportRefused
from ..runtime import current_runtime
from .errors import ApiError, accepts_multipart, error_response, json_body

#: An export of many jobs can be far bigger than a single job definition.
IMPORT_MAX_BYTES = 32 * 1024 * 1024


def register(bp: Blueprint) -> None:
    bp.get("/jobs/export")(export)
    bp.post("/jobs/import")(accepts_multipart(import_))


def export() -> Response:
    """Every job as one JSON file (the API's job form); paused jobs stay paused on import."""
    document = export_jobs(current_runtime().store, current_runtime().timezone)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    response = current_app.response_class(json.dumps(document, indent=2), mimetype="application/json")
    response.headers["Content-Disposition"] = f'attachment; filename="jobs-{stamp}.json"'
    return response


def import_() -> tuple[Response, int] | Response:
    """An export file as a multipart upload (field `file`) or as the JSON body; all or none.

    `?replace=true` replaces jobs with the same ids instead of refusing them.
    """
    request.max_content_length = IMPORT_MAX_BYTES
    replace = _flag("replace")
    try:
        ids = import_jobs(current_runtime().operations, _document(), replace=replace)
    except ImportRefused as exc:
        status = 409 if all("already exists" in e.error_message for e in exc.errors) else 400
        response = error_response(status, str(exc))
        body = json.loads(response.get_data())
        body["errors"] = [asdict(error) for error in exc.errors]
        response.set_data(json.dumps(body))
        return response
    return jsonify(imported=len(ids), ids=ids), 200


def _document() -> object:
    if request.mimetype == "multipart/form-data":
        upload = request.files.get("file")
        if upload is None:
            raise ApiError(400, "send the export as the multipart field 'file'", "file")
        try:
            return json.loads(upload.read())
        except (ValueError, RecursionError):
            raise ApiError(400, "the uploaded file is not valid JSON", "file") from None
    return json_body()


def _flag(name: str) -> bool:
    raw = request.args.get(name, "false").lower()
    if raw not in ("true", "false", "1", "0"):
        raise ApiError(400, f"{name} must be true or false", name)
    return raw in ("true", "1")
