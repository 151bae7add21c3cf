"""GET /scheduler/openapi.json: an OpenAPI 3.1 document of every route this service serves.

Built from the app's settings (API prefix, token), so it always matches what is
served; tests check real responses against it and fuzz the API with schemathesis.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify

from ..models import STATUSES
from ..runtime import current_runtime
from .history import MAX_PAGE as MAX_RUNS_PAGE
from .jobs import MAX_OFFSET, MAX_PAGE
from .openapi_schemas import DATE_TIME, JSON, ref, schemas


def register(bp: Blueprint) -> None:
    bp.get("/openapi.json")(openapi_json)


def openapi_json() -> Response:
    settings = current_runtime().settings
    return jsonify(document(settings.api_prefix, bool(settings.api_token), basic=settings.auth is not None))


def body(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": schema}}}


def errors(*statuses: int) -> dict[str, Any]:
    """Error responses: always 503 (database down) and, for any /scheduler route, 401."""
    text = {
        400: "Bad input; `field` names it",
        401: "Missing or wrong bearer token",
        403: "The service's own jobs (jobservice-*) can be paused and resumed, not changed or removed",
        404: "No such job (or route)",
        409: "The id is taken, the job kept changing under concurrent writes, or its row cannot be read",
        413: "The request body is too large",
        415: "The body was not sent as application/json",
        503: "The database is unavailable",
    }
    return {str(status): body(ref("Error"), text[status]) for status in sorted({*statuses, 401, 503})}


def job_id_parameter() -> dict[str, Any]:
    return {"name": "job_id", "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}


def job_operation(summary: str, *statuses: int, request: dict[str, Any] | None = None) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "summary": summary,
        "parameters": [job_id_parameter()],
        "responses": {"200": body(ref("Job"), "The job"), **errors(404, 409, *statuses)},
    }
    if request is not None:
        operation["requestBody"] = request
    return operation


def document(prefix: str, token_required: bool, basic: bool = False) -> dict[str, Any]:
    """The whole API, with its prefix; the bearer scheme applies when a token is configured,
    HTTP Basic when SCHEDULER_AUTH is (either one is enough when both are)."""
    p = prefix
    no_content = {"description": "Done"}
    paths: dict[str, Any] = {
        f"{p}": {
            "get": {
                "summary": "This process and the cluster",
                "responses": {"200": body(ref("SchedulerInfo"), "Info"), **errors()},
            }
        },
        f"{p}/pause": {
            "post": {
                "summary": "Pause processing on every process",
                "responses": {"204": no_content, **errors()},
            }
        },
        f"{p}/resume": {
            "post": {
                "summary": "Resume processing on every process",
                "responses": {"204": no_content, **errors()},
            }
        },
        f"{p}/start": {
            "post": {
                "summary": "Start processing cluster-wide (400 if running)",
                "responses": {"204": no_content, **errors(400)},
            }
        },
        f"{p}/shutdown": {
            "post": {
                "summary": "Stop processing cluster-wide (400 if stopped); processes stay in standby",
                "requestBody": {"required": False, "content": {JSON: {"schema": ref("Shutdown")}}},
                "responses": {"204": no_content, **errors(400)},
            }
        },
        f"{p}/jobs": {
            "get": {
                "summary": "All jobs, or one page of them",
                "parameters": [
                    {
                        "name": "limit",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE},
                    },
                    {
                        "name": "offset",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 0, "maximum": MAX_OFFSET},
                    },
                ],
                "responses": {
                    "200": body({"type": "array", "items": ref("AnyJob")}, "Jobs, next run first"),
                    **errors(400),
                },
            },
            "post": {
                "summary": "Add a job",
                "requestBody": {"required": True, "content": {JSON: {"schema": ref("NewJob")}}},
                "responses": {"200": body(ref("Job"), "The job added"), **errors(400, 409, 413)},
            },
        },
        f"{p}/jobs/export": {
            "get": {
                "summary": "Every job as one file",
                "responses": {"200": body(ref("Export"), "The export"), **errors()},
            }
        },
        f"{p}/jobs/import": {
            "post": {
                "summary": "Import an export: every job or none",
                "parameters": [
                    {
                        "name": "replace",
                        "in": "query",
                        "schema": {"type": "string", "enum": ["true", "false", "1", "0"]},
                    }
                ],
                "requestBody": {
                    "required": True,
                    "content": {
                        JSON: {
                            "schema": {"oneOf": [ref("Export"), {"type": "array", "items": ref("NewJob")}]}
                        },
                        "multipart/form-data": {
                            "schema": {
                                "type": "object",
                                "required": ["file"],
                                "properties": {"file": {"type": "string", "format": "binary"}},
                            }
                        },
                    },
                },
                "responses": {"200": body(ref("ImportResult"), "Imported"), **errors(400, 409, 413)},
            }
        },
        f"{p}/jobs/{{job_id}}": {
            "get": {
                "summary": "One job (a row that cannot be read answers with its error)",
                "parameters": [job_id_parameter()],
                "responses": {"200": body(ref("AnyJob"), "The job"), **errors(404)},
            },
            "patch": job_operation(
                "Change a job; a new trigger replaces the old one and keeps a pause",
                400,
                403,
                409,
                413,
                request={"required": True, "content": {JSON: {"schema": ref("JobChanges")}}},
            ),
            "delete": {
                "summary": "Remove a job",
                "parameters": [job_id_parameter()],
                "responses": {"204": no_content, **errors(403, 404)},
            },
        },
        f"{p}/jobs/{{job_id}}/pause": {"post": job_operation("Pause a job everywhere")},
        f"{p}/jobs/{{job_id}}/resume": {
            "post": {
                "summary": "Resume a job (null when it has no run time left and was removed)",
                "parameters": [job_id_parameter()],
                "responses": {
                    "200": body({"oneOf": [ref("Job"), {"type": "null"}]}, "The job"),
                    **errors(404),
                },
            }
        },
        f"{p}/jobs/{{job_id}}/run": {
            "post": job_operation("Run now (queued for the leader; returns at once)")
        },
        f"{p}/jobs/{{job_id}}/runs": {"get": runs_operation("One job's runs, newest first", with_job=True)},
        f"{p}/runs": {"get": runs_operation("All runs, newest first", with_job=False)},
        f"{p}/openapi.json": {
            "get": {
                "summary": "This document",
                "responses": {
                    "200": {"description": "OpenAPI 3.1", "content": {JSON: {"schema": {"type": "object"}}}},
                    **errors(),
                },
            }
        },
        "/health": {
            "get": {
                "summary": "Can this process serve; who leads; is the leader processing",
                "security": [],
                "responses": {
                    "200": body({"oneOf": [ref("Health"), ref("HealthStatus")]}, "Serving"),
                    "503": body(
                        {"oneOf": [ref("Health"), ref("HealthStatus")]}, "The database is unreachable"
                    ),
                },
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics (behind the token unless METRICS_REQUIRE_TOKEN is off)",
                "responses": {
                    "200": {
                        "description": "Prometheus text format",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    },
                    **errors(),
                },
            }
        },
    }
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "jobservice",
            "version": "1",
            "description": "Flask-APScheduler's REST API, with one scheduler per cluster. Every error is "
            '`{"error_message": ...}`; `field` names the input at fault.',
        },
        "paths": paths,
        "components": {
            "schemas": schemas(),
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer"},
                "basicAuth": {"type": "http", "scheme": "basic"},
            },
        },
    }
    for item in paths.values():  # a body a cross-site form could send is refused
        for method, operation in item.items():
            if method in ("post", "patch", "delete"):
                operation["responses"].update(errors(415))
    schemes = [{"bearerAuth": []}] if token_required else []
    schemes += [{"basicAuth": []}] if basic else []
    if schemes:
        doc["security"] = schemes
    else:  # then nothing answers 401
        for item in paths.values():
            for operation in item.values():
                operation["responses"].pop("401", None)
    return doc


def runs_operation(summary: str, with_job: bool) -> dict[str, Any]:
    parameters: list[dict[str, Any]] = [
        {
            "name": "limit",
            "in": "query",
            "schema": {"type": "integer", "minimum": 1, "maximum": MAX_RUNS_PAGE},
        },
        {
            "name": "cursor",
            "in": "query",
            "schema": {"type": "integer", "minimum": 1},
            "description": "From the Link header",
        },
        {"name": "status", "in": "query", "schema": {"type": "string", "enum": list(STATUSES)}},
        {"name": "since", "in": "query", "schema": DATE_TIME},
        {"name": "until", "in": "query", "schema": DATE_TIME},
    ]
    if with_job:
        parameters.insert(0, job_id_parameter())
    else:
        parameters.append({"name": "job_id", "in": "query", "schema": {"type": "string"}})
    return {
        "summary": summary,
        "parameters": parameters,
        "responses": {"200": body({"type": "array", "items": ref("Run")}, "Runs"), **errors(400)},
    }
