"""The component schemas of the OpenAPI document: jobs, runs, errors, health."""

from __future__ import annotations

from typing import Any

from ..models import STATUSES
from ..options import MAX_RETRIES, MAX_RETRY_DELAY_S, MAX_TIMEOUT_S, QUEUE_NAME
from ..rules import (
    FUNC_REF,
    MAX_GRACE_S,
    MAX_ID_LENGTH,
    MAX_INSTANCES,
    MAX_NAME_LENGTH,
    RESERVED_IDS,
    SERVICE_JOB_PREFIX,
)
from ..triggers import CRON_FIELDS, INTERVAL_UNITS, MAX_JITTER_S

JSON = "application/json"
STRING_OR_NULL = {"type": ["string", "null"]}
DATE_TIME = {"type": "string", "format": "date-time"}
DATE_TIME_OR_NULL = {"type": ["string", "null"], "format": "date-time"}


EXECUTOR = {"type": "string", "enum": ["threads", "rq"]}
RQ_STATUS = {
    "type": "object",
    "description": "With SCHEDULER_EXECUTOR=rq: live RQ workers, runs waiting per queue (null: no Redis)",
    "properties": {
        "workers": {"type": ["integer", "null"]},
        "queues": {"type": ["object", "null"], "additionalProperties": {"type": "integer"}},
    },
}

SPREAD_STATUS = {
    "type": "object",
    "description": "With JOBSERVICE_SPREAD_RUNS: the processes taking runs now (worker ids), and "
    "the runs waiting for one (null: no Redis)",
    "properties": {
        "takers": {"type": ["array", "null"], "items": {"type": "string"}},
        "queued": {"type": ["integer", "null"]},
    },
}


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def option_fields() -> dict[str, Any]:
    """The run options (defaults: SCHEDULER_JOB_DEFAULTS)."""
    return {
        "timeout_s": {
            "type": ["number", "null"],
            "exclusiveMinimum": 0,
            "maximum": MAX_TIMEOUT_S,
            "description": "rq: a run past it is stopped and failed; threads: it is flagged overrunning",
        },
        "retries": {"type": "integer", "minimum": 0, "maximum": MAX_RETRIES},
        "retry_delay_s": {
            "type": "number",
            "minimum": 0,
            "maximum": MAX_RETRY_DELAY_S,
            "description": "before the first retry; doubled for each next one, up to RETRY_MAX_DELAY_SECONDS",
        },
        "queue": {"type": "string", "pattern": f"^{QUEUE_NAME.pattern}$", "description": "the RQ queue (rq)"},
    }


def trigger_fields() -> dict[str, Any]:
    number = {"type": "number", "minimum": 0}
    cron_field = {"type": ["string", "integer"]}
    return {
        "trigger": {"type": "string", "enum": ["date", "interval", "cron"]},
        "run_date": DATE_TIME,
        "start_date": DATE_TIME,
        "end_date": DATE_TIME,
        "timezone": {"type": "string", "description": "IANA time zone"},
        "jitter": {"type": "integer", "minimum": 0, "maximum": MAX_JITTER_S},
        **{unit: number for unit in INTERVAL_UNITS},
        **{field: cron_field for field in CRON_FIELDS},
    }


def job_fields() -> dict[str, Any]:
    return {
        "name": {"type": "string", "minLength": 1, "maxLength": MAX_NAME_LENGTH},
        "func": {
            "type": "string",
            "pattern": f"^{FUNC_REF.pattern}$",
            "description": "module:function in a job package",
        },
        "args": {"type": "array"},
        "kwargs": {"type": "object"},
        "misfire_grace_time": {"type": ["integer", "null"], "minimum": 1, "maximum": MAX_GRACE_S},
        "coalesce": {"type": "boolean"},
        "max_instances": {"type": "integer", "minimum": 1, "maximum": MAX_INSTANCES},
        "next_run_time": {**DATE_TIME_OR_NULL, "description": "null adds or sets the job paused"},
        "executor": {"type": "string", "enum": ["default"]},
        **option_fields(),
        **trigger_fields(),
    }


def schemas() -> dict[str, Any]:
    job_id = {
        "type": "string",
        "minLength": 1,
        "maxLength": MAX_ID_LENGTH,
        # As rules._job_id: nothing that stops the id from being its own URL segment.
        "pattern": r"^[^/\\?#%\s](?:[^/\\?#%]*[^/\\?#%\s])?$",
        "not": {
            "anyOf": [
                {"enum": sorted(RESERVED_IDS)},
                {"pattern": f"^{SERVICE_JOB_PREFIX}"},
            ]
        },
    }
    run_summary = {
        "status": {"type": "string", "enum": list(STATUSES)},
        "scheduled_at": DATE_TIME,
        "started_at": DATE_TIME_OR_NULL,
        "finished_at": DATE_TIME_OR_NULL,
    }
    return {
        "Error": {
            "type": "object",
            "required": ["error_message"],
            "properties": {
                "error_message": {"type": "string"},
                "field": {"type": "string"},
                "errors": {"type": "array", "items": ref("JobError")},
            },
        },
        "JobError": {
            "type": "object",
            "required": ["index", "error_message"],
            "properties": {
                "index": {"type": "integer"},
                "id": STRING_OR_NULL,
                "field": STRING_OR_NULL,
                "error_message": {"type": "string"},
            },
        },
        "NewJob": {
            "type": "object",
            "required": ["id", "func"],
            "additionalProperties": False,
            "properties": {
                "id": job_id,
                **job_fields(),
                "replace_existing": {"type": "boolean"},
                "jobstore": {"type": "string", "enum": ["default"]},
            },
        },
        "JobChanges": {"type": "object", "additionalProperties": False, "properties": job_fields()},
        "Job": {
            "type": "object",
            "required": ["id", "name", "func", "args", "kwargs", "trigger", "last_run"],
            "properties": {
                "id": {"type": "string"},
                "name": {"type": "string"},
                "func": {"type": "string"},
                "args": {"type": "array"},
                "kwargs": {"type": "object"},
                **{k: v for k, v in trigger_fields().items() if k not in ("jitter", "timezone")},
                **{field: {"type": "string"} for field in CRON_FIELDS},
                "trigger": {"type": "string"},
                "misfire_grace_time": {"type": ["integer", "null"]},
                "max_instances": {"type": "integer"},
                **option_fields(),
                "next_run_time": DATE_TIME_OR_NULL,
                "last_run": {
                    "oneOf": [
                        {"type": "null"},
                        {"type": "object", "required": list(run_summary), "properties": run_summary},
                    ]
                },
            },
        },
        "UnreadableJob": {
            "type": "object",
            "description": "A row of the job table that cannot be read back (older code, or by hand)",
            "required": ["id", "next_run_time", "error", "last_run"],
            "additionalProperties": False,
            "properties": {
                "id": {"type": "string"},
                "next_run_time": DATE_TIME_OR_NULL,
                "error": {"type": "string"},
                "last_run": {"oneOf": [{"type": "null"}, {"type": "object"}]},
            },
        },
        "AnyJob": {"oneOf": [ref("Job"), ref("UnreadableJob")]},
        "Run": {
            "type": "object",
            "required": [
                "id",
                "job_id",
                "trigger",
                "status",
                "scheduled_at",
                "started_at",
                "finished_at",
                "duration_ms",
                "error",
                "worker",
                "fence",
                "prevented",
            ],
            "properties": {
                "id": {"type": "integer"},
                "job_id": {"type": "string"},
                "trigger": {"type": "string", "enum": ["scheduled", "manual"]},
                "attempt": {"type": "integer", "minimum": 1, "description": "1, then one more per retry"},
                "not_before": {**DATE_TIME_OR_NULL, "description": "a retry waits until then to start"},
                **run_summary,
                "duration_ms": {"type": ["number", "null"]},
                "error": STRING_OR_NULL,
                "worker": STRING_OR_NULL,
                "fence": {"type": ["integer", "null"]},
                "prevented": {"type": "integer"},
            },
        },
        "SchedulerInfo": {
            "type": "object",
            "required": ["current_host", "allowed_hosts", "running", "role", "leader", "fence", "state"],
            "properties": {
                "current_host": {"type": "string"},
                "allowed_hosts": {"type": "array", "items": {"type": "string"}},
                "running": {"type": "boolean"},
                "role": {"type": "string", "enum": ["leader", "follower"]},
                "leader": STRING_OR_NULL,
                "fence": {"type": ["integer", "null"]},
                "state": {"type": "string", "enum": ["running", "paused"]},
                "executor": EXECUTOR,
                "rq": RQ_STATUS,
                "spread": SPREAD_STATUS,
            },
        },
        "Shutdown": {
            "type": "object",
            "additionalProperties": False,
            "properties": {"wait": {"type": "boolean"}},
        },
        "Export": {
            "type": "object",
            "required": ["jobs"],
            "properties": {
                "version": {"type": "integer", "enum": [1]},
                "exported_at": DATE_TIME,
                "timezone": {"type": "string"},
                "jobs": {"type": "array", "items": ref("NewJob")},
                "unreadable": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["id", "error"],
                        "properties": {"id": {"type": "string"}, "error": {"type": "string"}},
                    },
                },
            },
        },
        "ImportResult": {
            "type": "object",
            "required": ["imported", "ids"],
            "properties": {
                "imported": {"type": "integer"},
                "ids": {"type": "array", "items": {"type": "string"}},
            },
        },
        "HealthStatus": {
            "type": "object",
            "description": "What a request without the token gets, when a token is set",
            "required": ["status"],
            "additionalProperties": False,
            "properties": {"status": {"type": "string", "enum": ["ok", "degraded", "error"]}},
        },
        "Health": {
            "type": "object",
            "required": [
                "reasons",
                "status",
                "role",
                "leader",
                "fence",
                "database",
                "redis",
                "jobs",
                "lease_seconds_left",
                "seconds_since_last_pass",
            ],
            "properties": {
                "status": {"type": "string", "enum": ["ok", "degraded", "error"]},
                "role": {"type": "string", "enum": ["leader", "follower"]},
                "leader": STRING_OR_NULL,
                "fence": {"type": ["integer", "null"]},
                "database": {"type": "string", "enum": ["ok", "unreachable"]},
                "redis": {"type": "string", "enum": ["ok", "unreachable", "not configured"]},
                "jobs": {"type": ["integer", "null"]},
                "lease_seconds_left": {"type": ["number", "null"]},
                "seconds_since_last_pass": {"type": ["number", "null"]},
                "executor": EXECUTOR,
                "rq": RQ_STATUS,
                "spread": SPREAD_STATUS,
                "reasons": {
                    "type": "array",
                    "items": {"type": "string"},
                    "description": "Why the status is degraded or error; empty when ok",
                },
            },
        },
    }
