"""What a job definition may say: one set of rules for the API, the CLI and JOBS in config.py.

Only public, module-level functions of the job packages may be scheduled. The
reference is checked as text before anything is imported, so a request naming
`os:system` or `subprocess:run` never causes an import outside those packages.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import re
from collections.abc import Callable, Collection, Mapping
from datetime import tzinfo
from typing import Any

from apscheduler.job import Job

from .errors import InvalidJob, ProtectedJob
from .options import OPTION_FIELDS, check
from .triggers import ALL_TRIGGER_FIELDS, build_trigger, parse_datetime

logger = logging.getLogger(__name__)

NEW_JOB_FIELDS = (
    "id", "name", "func", "args", "kwargs", "trigger", "misfire_grace_time", "coalesce",
    "max_instances", "next_run_time", "replace_existing", "jobstore", "executor", *OPTION_FIELDS,
)  # fmt: skip
CHANGE_FIELDS = (
    "name", "func", "args", "kwargs", "trigger", "misfire_grace_time", "coalesce",
    "max_instances", "next_run_time", "executor", *OPTION_FIELDS,
)  # fmt: skip
#: 191 = the longest key MySQL can index in utf8mb4 (the job table's primary key).
MAX_ID_LENGTH = 191
MAX_NAME_LENGTH = 255
RESERVED_IDS = frozenset({"export", ".", ".."})
#: Ids of the service's own jobs (`jobservice-maintenance`); nobody else may take one.
SERVICE_JOB_PREFIX = "jobservice-"
#: Characters that stop an id from being addressed at its own URL when written in it as is.
URL_UNSAFE = frozenset("/\\?#%")
MAX_INSTANCES = 1000
#: Past this, use null (no limit): larger values overflow Python's timedelta.
MAX_GRACE_S = 366 * 86400
FUNC_REF = re.compile(r"(?P<module>[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*):(?P<name>[A-Za-z_]\w*)")
#: A script's own functions (`python app.py`), as Flask-APScheduler's examples schedule them.
MAIN = "__main__"


class JobRules:
    """Validates job definitions and turns them into arguments for the scheduler."""

    def __init__(
        self,
        packages: Collection[str],
        timezone: tzinfo,
        executors: Collection[str],
        service_jobs: bool = False,
    ) -> None:
        self.packages = tuple(packages)
        self.timezone = timezone
        self.executors = frozenset(executors)
        #: Only the service's own rules may name a job `jobservice-*`.
        self.service_jobs = service_jobs

    @property
    def allowed_funcs(self) -> str:
        return (
            f"func must name a public module-level function of the job packages "
            f"({', '.join(self.packages)}) as 'module:function', for example 'jobs.heartbeat:beat'"
        )

    def new_job(self, data: object) -> dict[str, Any]:
        """Keyword arguments for `scheduler.add_job`, from a complete definition."""
        fields = _fields(data)
        _only(fields, NEW_JOB_FIELDS)
        job_id = _job_id(fields.get("id"))
        if job_id.startswith(SERVICE_JOB_PREFIX) and not self.service_jobs:
            reserved = f"ids starting with {SERVICE_JOB_PREFIX} are reserved for the service's own jobs"
            raise InvalidJob("id", reserved)
        func_ref = self.func_ref(fields.get("func"))
        func = self.resolve_func(func_ref)
        args, kwargs = _arguments(func, fields.get("args", []), fields.get("kwargs", {}))
        trigger_fields = {k: v for k, v in fields.items() if k in ALL_TRIGGER_FIELDS}
        trigger = build_trigger(fields.get("trigger", "date"), trigger_fields, self.timezone)
        return {
            "id": job_id,
            "func": func_ref,
            "trigger": trigger,
            "args": args,
            "kwargs": kwargs,
            "name": _name(fields.get("name", job_id)),
            **self._options(fields),
        }

    def changes(self, data: object, job: Job) -> dict[str, Any]:
        """Keyword arguments for `scheduler.modify_job`, from a partial definition."""
        fields = _fields(data)
        if fields.keys() - {"next_run_time"} and job.id.startswith(SERVICE_JOB_PREFIX):
            # Before the fields are checked (they are the service's, not the job packages').
            # Pausing and resuming, also as a change of next_run_time, stay allowed.
            raise ProtectedJob(job.id, "changed")
        if "id" in fields:
            raise InvalidJob("id", "a job's id cannot be changed; remove the job and add a new one")
        _only(fields, CHANGE_FIELDS)
        trigger_fields = {k: v for k, v in fields.items() if k in ALL_TRIGGER_FIELDS}
        if trigger_fields and "trigger" not in fields:
            field = next(iter(trigger_fields))
            raise InvalidJob(
                field, f"send 'trigger' together with {field}: a change replaces the whole trigger"
            )
        changes: dict[str, Any] = {}
        if {"func", "args", "kwargs"} & fields.keys():
            func_ref = self.func_ref(fields.get("func", job.func_ref))
            func = self.resolve_func(func_ref)
            args = fields.get("args", list(job.args))
            kwargs = fields.get("kwargs", dict(job.kwargs))
            changes["func"] = func_ref
            changes["args"], changes["kwargs"] = _arguments(func, args, kwargs)
        if "trigger" in fields:
            changes["trigger"] = build_trigger(fields["trigger"], trigger_fields, self.timezone)

        if "name" in fields:
            changes["name"] = _name(fields["name"])
        changes.update(self._options(fields))
        return changes

    def func_ref(self, func: object) -> object:
        """The text reference of a job's function: Flask-APScheduler code may give the
        function itself (in JOBS, add_job, @task); it is stored as 'module:function'."""
        if isinstance(func, str) or not callable(func):
            return func
        module, qualname = getattr(func, "__module__", None), getattr(func, "__qualname__", None)
        if not isinstance(module, str) or not isinstance(qualname, str):
            raise InvalidJob("func", f"{func!r} has no module and name to be stored by; {self.allowed_funcs}")
        if "." in qualname:  # a nested function, a method, a lambda
            raise InvalidJob(
                "func",
                f"{module}:{qualname} is not a module-level function: a job is stored by reference, "
                "so its function must be defined at the top level of a module of the job packages",
            )
        return f"{module}:{qualname}"

    def refusal(self, ref: object) -> str | None:
        """Why this reference may not be run, judged as text without importing anything; None
        if it names a public module-level function's place in the job packages."""
        match = FUNC_REF.fullmatch(ref) if isinstance(ref, str) else None
        if match is None:
            return self.allowed_funcs
        module_name, name = match["module"], match["name"]
        if not any(module_name == p or module_name.startswith(p + ".") for p in self.packages):
            return f"{ref!r} is outside the job packages; {self.allowed_funcs}"
        parts = [] if module_name == MAIN else module_name.split(".")
        if name.startswith("_") or any(part.startswith("_") for part in parts):
            return f"{ref!r} is private; {self.allowed_funcs}"
        return None

    def resolve_func(self, ref: object) -> Callable[..., Any]:
        """The function a reference names, if it is one a job may run."""
        refused = self.refusal(ref)
        if refused is not None:
            raise InvalidJob("func", refused)
        module_name, name = str(ref).split(":")
        module = _import(module_name)
        func = vars(module).get(name)
        if func is None:
            raise InvalidJob("func", f"{module_name} has no function {name!r}")
        if not inspect.isfunction(func) or func.__module__ != module_name or func.__qualname__ != name:
            raise InvalidJob(
                "func", f"{ref!r} is not a function defined in {module_name}; {self.allowed_funcs}"
            )
        if inspect.iscoroutinefunction(func):
            raise InvalidJob("func", f"{ref!r} is async; jobs run in threads and must be plain functions")
        return func

    def _options(self, fields: Mapping[str, Any]) -> dict[str, Any]:
        options: dict[str, Any] = {}
        if "misfire_grace_time" in fields:
            value = fields["misfire_grace_time"]
            if value is not None and not (_positive_int(value) and value <= MAX_GRACE_S):
                raise InvalidJob(
                    "misfire_grace_time",
                    f"misfire_grace_time must be a whole number of seconds from 1 to {MAX_GRACE_S}, "
                    "or null for no limit",
                )
            options["misfire_grace_time"] = value
        if "coalesce" in fields:
            options["coalesce"] = _bool("coalesce", fields["coalesce"])
        if "max_instances" in fields:
            value = fields["max_instances"]
            if not _positive_int(value) or value > MAX_INSTANCES:
                raise InvalidJob(
                    "max_instances", f"max_instances must be a whole number from 1 to {MAX_INSTANCES}"
                )
            options["max_instances"] = value
        if "next_run_time" in fields:
            value = fields["next_run_time"]
            options["next_run_time"] = (
                None if value is None else parse_datetime("next_run_time", value, self.timezone)
            )
        if "replace_existing" in fields:
            options["replace_existing"] = _bool("replace_existing", fields["replace_existing"])
        if fields.get("jobstore", "default") != "default":
            raise InvalidJob("jobstore", "jobstore must be 'default': every job lives in the shared store")
        if "executor" in fields:
            if fields["executor"] not in self.executors:
                raise InvalidJob("executor", f"executor must be one of: {', '.join(sorted(self.executors))}")
            options["executor"] = fields["executor"]
        for field in OPTION_FIELDS:
            if field in fields:
                options[field] = check(field, fields[field])
        return options


def _fields(data: object) -> dict[str, Any]:
    """The definition as a flat dict; Flask-APScheduler's {"trigger": {"type": ...}} form too."""
    if not isinstance(data, dict):
        raise InvalidJob(None, "the job must be a JSON object")
    fields = dict(data)
    if isinstance(fields.get("trigger"), dict):
        nested = dict(fields.pop("trigger"))
        fields["trigger"] = nested.pop("type", "date")
        for key, value in nested.items():
            if key in fields:
                raise InvalidJob(key, f"{key} is given both inside and outside 'trigger'")
            fields[key] = value
    return fields


def _only(fields: Mapping[str, Any], allowed: tuple[str, ...]) -> None:
    for key in fields:
        if key not in allowed and key not in ALL_TRIGGER_FIELDS:
            raise InvalidJob(
                key, f"unknown field {key!r}; allowed fields: {', '.join(allowed)} and the trigger's fields"
            )


def _job_id(value: object) -> str:
    if value is None:
        raise InvalidJob("id", "id is required")
    if not isinstance(value, str) or not value.strip():
        raise InvalidJob("id", "id must be a non-empty string")
    if len(value) > MAX_ID_LENGTH:
        raise InvalidJob("id", f"id must be at most {MAX_ID_LENGTH} characters")
    if URL_UNSAFE & set(value) or not value.isprintable():
        raise InvalidJob(
            "id", "id must not contain / \\ ? # % or control characters: it is part of the job's URL"
        )
    if value in RESERVED_IDS:
        raise InvalidJob("id", f"id {value!r} is reserved: /scheduler/jobs/{value} is not this job's URL")
    if value != value.strip():
        # MySQL compares keys ignoring trailing spaces: "a" and "a " would be one job.
        raise InvalidJob("id", "id must not start or end with whitespace")
    return value


def _name(value: object) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_NAME_LENGTH:
        raise InvalidJob("name", f"name must be a non-empty string of at most {MAX_NAME_LENGTH} characters")
    return value


def _arguments(func: Callable[..., Any], args: object, kwargs: object) -> tuple[list[Any], dict[str, Any]]:
    if not isinstance(args, (list, tuple)):
        raise InvalidJob("args", "args must be a list")
    if not isinstance(kwargs, dict) or not all(isinstance(k, str) for k in kwargs):
        raise InvalidJob("kwargs", "kwargs must be an object")
    try:
        inspect.signature(func).bind(*args, **kwargs)
    except TypeError as exc:
        field = "kwargs" if "keyword" in str(exc) else "args"
        raise InvalidJob(
            field, f"args and kwargs do not fit {func.__name__}{inspect.signature(func)}: {exc}"
        ) from None
    return list(args), dict(kwargs)


def _import(module_name: str) -> Any:
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and module_name.startswith(exc.name):
            raise InvalidJob("func", f"there is no module {module_name} in the job packages") from None
        logger.exception("Job module %s failed to import", module_name)
        raise InvalidJob("func", f"module {module_name} failed to import") from None
    except Exception:
        logger.exception("Job module %s failed to import", module_name)
        raise InvalidJob("func", f"module {module_name} failed to import") from None


def _positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _bool(field: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise InvalidJob(field, f"{field} must be true or false")
    return value
