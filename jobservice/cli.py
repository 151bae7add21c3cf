"""`flask jobservice jobs|runs|scheduler|db ...`: the API's operations from a shell.

Same store, same rules as the API (the same `operations`); a CLI process never joins the
leader election (it writes, then wakes the leader). Tables by default, `--json` for
scripts. The group is `jobservice` so it never clashes with an app's own commands
(`flask db` stays the app's); the standalone service also has them at the top level.

Exit codes: 0 done; 1 the database (or another service) failed; 2 bad input or
usage; 3 no such job; 4 conflict (the id is taken, or the job's row cannot be read);
5 refused (the service's own jobs can be paused and resumed, not changed or removed).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import click
from apscheduler.jobstores.base import ConflictingIdError, JobLookupError
from flask import Flask
from flask.cli import AppGroup, with_appcontext
from sqlalchemy.exc import SQLAlchemyError

from . import database
from .errors import InvalidJob, ProtectedJob
from .export_import import export_jobs, import_jobs
from .job_json import dumps, job_payloads
from .jobstore import BrokenJobError, StaleJobError
from .models import STATUSES
from .operations import ImportRefused
from .runs import RunFilter, list_runs
from .runtime import Runtime, current_runtime

EXIT_FAILED, EXIT_INVALID, EXIT_NOT_FOUND, EXIT_CONFLICT, EXIT_REFUSED = 1, 2, 3, 4, 5

jobservice_cli = AppGroup("jobservice", help="jobservice: jobs, runs, the cluster, and its own tables.")
jobs_cli = AppGroup("jobs", help="List, inspect and change jobs.")
scheduler_cli = AppGroup("scheduler", help="The cluster: who leads, pause and resume processing.")
db_cli = AppGroup("db", help="jobservice's own tables (never the app's own migrations).")
COMMANDS = (jobs_cli, scheduler_cli, db_cli)


def init_app(app: Flask) -> None:
    app.cli.add_command(jobservice_cli)


@contextmanager
def failures() -> Iterator[None]:
    """Turn the service's errors into a message on stderr and an exit code scripts can trust."""
    try:
        yield
    except InvalidJob as exc:
        fail(EXIT_INVALID, exc.message)
    except JobLookupError as exc:
        fail(EXIT_NOT_FOUND, exc.args[0])
    except ConflictingIdError as exc:
        fail(EXIT_CONFLICT, str(exc.args[0]))
    except StaleJobError as exc:
        fail(EXIT_CONFLICT, f"job {exc.args[0]} keeps changing under concurrent writes; try again")
    except BrokenJobError as exc:
        fail(EXIT_CONFLICT, f"job {exc.job_id} cannot be read from the store ({exc.error}): remove it")
    except ProtectedJob as exc:
        fail(EXIT_REFUSED, exc.message)
    except ImportRefused as exc:
        for error in exc.errors:
            click.echo(f"  jobs[{error.index}] {error.id or ''}: {error.error_message}", err=True)
        conflicts = all("already exists" in e.error_message for e in exc.errors)
        fail(EXIT_CONFLICT if conflicts else EXIT_INVALID, str(exc))
    except SQLAlchemyError as exc:
        fail(EXIT_FAILED, f"the database is unavailable ({exc.__class__.__name__})")


def fail(code: int, message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def output(data: Any, as_json: bool, table: Callable[[Any], None]) -> None:
    if as_json:
        click.echo(dumps(data, indent=2))
    else:
        table(data)


def print_table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> None:
    cells = [[("" if v is None else str(v)) for v in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    for row in [list(headers), *cells]:
        click.echo("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


def read_json(source: str) -> Any:
    """JSON given inline, as @file, or - for standard input."""
    if source == "-":
        text = sys.stdin.read()
    elif source.startswith("@"):
        with open(source[1:]) as handle:
            text = handle.read()
    else:
        text = source
    try:
        return json.loads(text)
    except ValueError:
        raise InvalidJob(None, "the definition is not valid JSON") from None


# jobs -----------------------------------------------------------------------------------


def job_table(jobs: list[dict[str, Any]]) -> None:
    rows = []
    stored = current_runtime().store.lookup_many([job["id"] for job in jobs])
    triggers = {job_id: str(job.trigger) for job_id, job in stored.items()}
    for job in jobs:
        last = job["last_run"]
        if "error" in job:
            rows.append([job["id"], "", "", "", job["error"]])
            continue
        rows.append(
            [
                job["id"],
                job["func"],
                triggers.get(job["id"], job["trigger"]),
                job["next_run_time"].isoformat() if job["next_run_time"] else "paused",
                f"{last['status']} {last['scheduled_at'].isoformat()}" if last else "",
            ]
        )
    print_table(rows, ["ID", "FUNC", "TRIGGER", "NEXT RUN", "LAST RUN"])


@jobs_cli.command("list")
@click.option("--limit", type=click.IntRange(1, 1000), help="Show one page of this many jobs.")
@click.option("--offset", type=click.IntRange(0), default=0)
@click.option("--json", "as_json", is_flag=True, help="JSON, as GET /scheduler/jobs.")
def list_jobs(limit: int | None, offset: int, as_json: bool) -> None:
    """List jobs in the order of their next run (paused last)."""
    with failures():
        service = current_runtime()
        jobs = service.store.page(limit, offset) if limit else service.store.entries()
        output(job_payloads(service.engine, jobs), as_json, job_table)


@jobs_cli.command("show")
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True)
def show_job(job_id: str, as_json: bool) -> None:
    """Show one job."""
    with failures():
        service = current_runtime()
        entry = service.store.lookup_entry(job_id)
        if entry is None:
            raise JobLookupError(job_id)
        output(job_payloads(service.engine, [entry])[0], as_json, lambda job: _fields(job))


@jobs_cli.command("add")
@click.argument("definition")
@click.option("--json", "as_json", is_flag=True)
def add_job(definition: str, as_json: bool) -> None:
    """Add a job: DEFINITION is the API's JSON, inline, as @file.json, or - for stdin.

    \b
    flask --app run jobs add '{"id": "report", "func": "jobs.reports:daily_run_summary",
                               "trigger": "cron", "hour": 6}'
    """
    with failures():
        service = current_runtime()
        job = service.operations.add(read_json(definition))
        output(job_payloads(service.engine, [_job(service, job.id)])[0], as_json, lambda job: _fields(job))


def job_action(name: str, help_text: str, act: Callable[[Runtime, str], None]) -> None:
    @jobs_cli.command(name, help=help_text)
    @click.argument("job_id")
    def command(job_id: str) -> None:
        with failures():
            act(current_runtime(), job_id)
            click.echo(f"{job_id}: {name} done")


job_action("pause", "Pause a job (on every process).", lambda s, i: s.operations.pause(i))
job_action("resume", "Resume a paused job.", lambda s, i: s.operations.resume(i))
job_action(
    "run", "Run a job now (the leader runs it; this returns at once).", lambda s, i: s.operations.run_now(i)
)
job_action("remove", "Remove a job.", lambda s, i: s.operations.remove(i))


@jobs_cli.command("export")
@click.option(
    "-o", "--output", "path", type=click.Path(dir_okay=False, writable=True), help="File (default stdout)."
)
def export_command(path: str | None) -> None:
    """Write every job to one JSON file (the API's job form)."""
    with failures():
        text = dumps(export_jobs(current_runtime().store, current_runtime().timezone), indent=2)
    if path is None:
        click.echo(text)
    else:
        with open(path, "w") as handle:
            handle.write(text + "\n")


@jobs_cli.command("import")
@click.argument("source")
@click.option("--replace", is_flag=True, help="Replace jobs with the same ids instead of refusing.")
def import_command(source: str, replace: bool) -> None:
    """Import an export: SOURCE is a file path, or - for stdin. All jobs or none."""
    with failures():
        document = read_json(source if source == "-" else f"@{source}")
        ids = import_jobs(current_runtime().operations, document, replace=replace)
        click.echo(f"imported {len(ids)} jobs")


# runs and scheduler ------------------------------------------------------------------


@click.command("runs")
@with_appcontext
@click.option("--job", "job_id", help="Only this job's runs.")
@click.option("--status", type=click.Choice(STATUSES))
@click.option("--limit", type=click.IntRange(1, 500), default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="JSON, as GET /scheduler/runs.")
def runs_command(job_id: str | None, status: str | None, limit: int, as_json: bool) -> None:
    """Show runs, newest first."""
    with failures():
        items = list_runs(current_runtime().engine, RunFilter(job_id=job_id, status=status), limit)

    def table(rows: list[dict[str, Any]]) -> None:
        print_table(
            [
                [
                    r["id"],
                    r["job_id"],
                    r["trigger"],
                    r["attempt"],
                    r["status"],
                    r["scheduled_at"].isoformat(),
                    r["duration_ms"],
                    r["worker"],
                    r["fence"],
                    _last_line(r["error"]),
                ]
                for r in rows
            ],  # fmt: skip
            ["RUN", "JOB", "TRIGGER", "TRY", "STATUS", "SCHEDULED", "MS", "WORKER", "FENCE", "ERROR"],
        )

    output(items, as_json, table)


@scheduler_cli.command("status")
@click.option("--json", "as_json", is_flag=True)
def status_command(as_json: bool) -> None:
    """Who leads, with which fence and lease, whether processing is paused, the last pass."""
    with failures():
        service = current_runtime()
        state = service.cluster.snapshot()
        leader = service.leader()
        status = {
            "state": service.cluster.state(),
            "leader": leader.worker if leader else None,
            "fence": leader.fence if leader else None,
            "lease_seconds_left": service.lease_seconds_left(),
            "last_pass_at": state["last_pass_at"],
            "jobs": service.store.count(),
        }
    output(status, as_json, _fields)


def cluster_action(name: str, paused: bool, help_text: str) -> None:
    @scheduler_cli.command(name, help=help_text)
    def command() -> None:
        operations = current_runtime().operations
        with failures():
            changed = operations.pause_cluster() if paused else operations.resume_cluster()
        click.echo(f"processing {'paused' if paused else 'resumed'}" + ("" if changed else " (already)"))


cluster_action("pause", True, "Pause processing on every process (persisted).")
cluster_action("resume", False, "Resume processing on every process.")


def _job(service: Runtime, job_id: str) -> Any:
    job = service.store.lookup_job(job_id)
    if job is None:
        raise JobLookupError(job_id)
    return job


def _fields(data: dict[str, Any]) -> None:
    width = max(len(key) for key in data)
    for key, value in data.items():
        if isinstance(value, (dict, list, tuple)):
            value = dumps(value)
        elif hasattr(value, "isoformat"):
            value = value.isoformat()
        click.echo(f"{key.ljust(width)}  {'' if value is None else value}")


def _last_line(error: str | None) -> str:
    """The exception line of a traceback, which says what went wrong."""
    lines = (error or "").strip().splitlines()
    return lines[-1] if lines else ""


# worker: an RQ worker of the app (SCHEDULER_EXECUTOR=rq) ----------------------------------


@click.command("worker")
@with_appcontext
@click.option(
    "--queue",
    "-q",
    "queues",
    multiple=True,
    default=("default",),
    show_default=True,
    help="A queue to work (a job's `queue` field), without RQ_QUEUE_PREFIX; repeat for several.",
)
@click.option("--burst", is_flag=True, help="Stop once the queues are empty.")
def worker_command(queues: tuple[str, ...], burst: bool) -> None:
    """Run jobs as an RQ worker, inside this app's context; start as many as you like, anywhere."""
    service = current_runtime()
    if service.settings.executor != "rq":
        fail(EXIT_INVALID, "SCHEDULER_EXECUTOR is 'threads': the leader runs every job; set it to 'rq'")
    from .rqworker import serve  # rq is needed by RQ deployments only

    with failures():
        serve(service.app, queues, burst)


# db: the service's own migrations ----------------------------------------------------


@db_cli.command("upgrade")
@click.argument("revision", default="head")
def db_upgrade(revision: str) -> None:
    """Apply jobservice's migrations (its own tables and version table)."""
    with failures():
        database.upgrade(current_runtime().engine, revision)
        click.echo(f"jobservice tables at {database.current_revision(current_runtime().engine)}")


@db_cli.command("current")
def db_current() -> None:
    """The revision jobservice's tables are at."""
    with failures():
        revision = database.current_revision(current_runtime().engine)
    click.echo(f"{revision} (head)" if revision == database.HEAD_REVISION else revision or "none")


@db_cli.command("history")
def db_history() -> None:
    """jobservice's migrations, newest first."""
    from alembic.script import ScriptDirectory

    for script in ScriptDirectory(database.MIGRATIONS_DIR).walk_revisions():
        click.echo(f"{script.revision}  {script.doc}")


for _command in (*COMMANDS, runs_command, worker_command):
    jobservice_cli.add_command(_command)
