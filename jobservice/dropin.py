"""Flask-APScheduler 1.13's `APScheduler`, over the cluster: code written for it works with
its import line changed (`from jobservice import APScheduler`).

Same constructor, methods, properties and settings. What differs, on purpose:

* every change goes through `operations`, so only public functions of the job packages can
  be scheduled (`os:system` is refused with ValueError), whether given as text or as the
  function itself;
* jobs added before `start()` (with `add_job` or `@task`) are declared, like JOBS: they are
  reconciled at start-up and never duplicated by a restart or by a second worker;
* `start()`, `shutdown()`, `pause()`, `resume()` act on the whole cluster, as the REST
  routes do; `running` is true once this process has started and the cluster is not shut
  down, `state` is APScheduler's number for that;
* `run_job()` queues a run for the leader, which runs it once, in the app context, and
  records it, instead of calling the function in the caller's thread.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

from apscheduler.events import EVENT_ALL
from apscheduler.job import Job
from apscheduler.schedulers.base import (
    STATE_PAUSED,
    STATE_RUNNING,
    STATE_STOPPED,
    SchedulerNotRunningError,
)
from flask import Flask

from . import extension
from .cluster import PAUSED, STOPPED
from .errors import ConfigError
from .options import ServiceJob
from .runtime import Runtime
from .scheduler import ClusterScheduler


class APScheduler:
    """Provides a scheduler integrated to Flask, shared by every process of the deployment."""

    def __init__(self, scheduler: Any = None, app: Flask | None = None) -> None:
        if scheduler is not None:
            raise ConfigError(
                "APScheduler(scheduler=...) is not supported: jobservice brings its own scheduler, "
                "one per cluster, configured by the app's SCHEDULER_* settings"
            )
        self._host_name = socket.gethostname().lower()
        self._authentication_callback: Callable[[Any], bool] | None = None
        self._declared: dict[str, dict[str, Any]] = {}
        self._started = False
        self._runtime: Runtime | None = None
        self.allowed_hosts = ["*"]
        self.auth: Any = None
        self.api_enabled = False
        self.api_prefix = "/scheduler"
        self.endpoint_prefix = "scheduler."
        self.app: Flask | None = None
        if app is not None:
            self.init_app(app)

    # Properties ------------------------------------------------------------------------

    @property
    def host_name(self) -> str:
        return self._host_name

    @property
    def running(self) -> bool:
        """True once this process has started and the cluster is not shut down."""
        return self.state != STATE_STOPPED

    @property
    def state(self) -> int:
        """APScheduler's numbers: 0 stopped, 1 running, 2 paused (for the whole cluster)."""
        if self._runtime is None or not self._started:
            return STATE_STOPPED
        state = self._runtime.cluster.state()
        return STATE_STOPPED if state == STOPPED else STATE_PAUSED if state == PAUSED else STATE_RUNNING

    @property
    def scheduler(self) -> ClusterScheduler:
        return self._bound().scheduler

    @property
    def task(self) -> Callable[..., Callable[[Callable[..., Any]], Callable[..., Any]]]:
        """`@scheduler.task('interval', seconds=10, id='job1')`: declares the function as a job."""

        def task(trigger: Any = None, **options: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
            def declare(func: Callable[..., Any]) -> Callable[..., Any]:
                job_id = options.pop("id", None) or f"{func.__module__}.{func.__qualname__}"
                self.add_job(job_id, func, trigger=trigger, **options)
                return func

            return declare

        return task

    # Set-up, start and stop ------------------------------------------------------------

    def init_app(self, app: Flask) -> None:
        """Initialise on a Flask app (the app's one jobservice Runtime is made, or reused).
        As upstream, attributes set before this are the defaults of the SCHEDULER_* keys."""
        for key, value in (
            ("SCHEDULER_API_ENABLED", self.api_enabled),
            ("SCHEDULER_API_PREFIX", self.api_prefix),
            ("SCHEDULER_ENDPOINT_PREFIX", self.endpoint_prefix),
            ("SCHEDULER_ALLOWED_HOSTS", self.allowed_hosts),
            ("SCHEDULER_AUTH", self.auth),
        ):
            if key not in app.config and not (
                key == "SCHEDULER_API_ENABLED" and "SCHEDULER_VIEWS_ENABLED" in app.config
            ):
                app.config[key] = value
        self._attach(app, extension.init_app(app, start=False))

    def _attach(self, app: Flask, runtime: Runtime) -> None:
        self.app = app
        self._runtime = runtime
        self._started = self._started or runtime.started
        app.apscheduler = self  # type: ignore[attr-defined]
        settings = runtime.settings
        self.allowed_hosts = list(settings.allowed_hosts)
        self.auth = settings.auth
        self.api_enabled = settings.api_enabled
        self.api_prefix = settings.api_prefix
        self.endpoint_prefix = settings.endpoint_prefix
        if self._authentication_callback is not None:
            runtime.authenticate = self._authentication_callback

    def start(self, paused: bool = False) -> None:
        """Start: reconcile the declared jobs, join the election (a serving process on an
        allowed host), and start the cluster if it was shut down (paused, if asked)."""
        runtime = self._bound()
        extension.start_runtime(runtime, list(self._declared.values()))
        # As upstream, a host outside SCHEDULER_ALLOWED_HOSTS does not start (it serves).
        self._started = runtime.settings.this_host_may_lead()
        runtime.operations.start_cluster(paused=paused)
        if paused:
            runtime.operations.pause_cluster()

    def shutdown(self, wait: bool = True) -> None:
        """Shut the whole cluster down, as POST /scheduler/shutdown (this process stays up,
        in standby). To stop only this process, let it exit: its lease is handed over."""
        if not self._bound().operations.stop_cluster():
            raise SchedulerNotRunningError

    def pause(self) -> None:
        """Pause processing on every process (running jobs finish)."""
        self._bound().operations.pause_cluster()

    def resume(self) -> None:
        self._bound().operations.resume_cluster()

    def add_listener(self, callback: Callable[[Any], None], mask: int = EVENT_ALL) -> None:
        """APScheduler events of this process: run events where it leads, job events where it
        makes the change."""
        self.scheduler.add_listener(callback, mask)

    def remove_listener(self, callback: Callable[[Any], None]) -> None:
        self.scheduler.remove_listener(callback)

    # Jobs ------------------------------------------------------------------------------

    def add_job(self, id: str, func: Any, **kwargs: Any) -> Job:  # noqa: A002 (upstream's name)
        """Add a job: declared until `start()`, added to the shared store after."""
        definition = {**kwargs, "id": id, "func": func}
        definition["name"] = definition.get("name") or id
        if not self._started:
            self._declared[id] = definition
            return self._pending(definition)
        return self._bound().operations.add(definition)

    def remove_job(self, id: str, jobstore: str | None = None) -> None:  # noqa: A002
        if self._declared.pop(id, None) is not None and not self._started:
            return
        self._bound().operations.remove(id)

    def remove_all_jobs(self, jobstore: str | None = None) -> None:
        """Every job but the service's own."""
        self._declared.clear()
        if self._runtime is not None:
            self._runtime.operations.remove_all()

    def get_job(self, id: str, jobstore: str | None = None) -> Job | None:  # noqa: A002
        """The job, or None; before `start()` also a declared one."""
        job = self._runtime.store.lookup_job(id) if self._runtime is not None else None
        if job is None and not self._started and id in self._declared:
            return self._pending(self._declared[id])
        return job

    def get_jobs(self, jobstore: str | None = None) -> list[Job]:
        """Every job of the store; before `start()` also the declared ones not stored yet."""
        jobs: list[Job] = list(self._runtime.store.get_all_jobs()) if self._runtime is not None else []
        if not self._started:
            stored = {job.id for job in jobs}
            jobs += [self._pending(d) for job_id, d in self._declared.items() if job_id not in stored]
        return jobs

    def modify_job(self, id: str, jobstore: str | None = None, **changes: Any) -> Job:  # noqa: A002
        """Change fields; a `trigger` with its fields replaces the job's trigger."""
        return self._bound().operations.change(id, changes)

    def pause_job(self, id: str, jobstore: str | None = None) -> Job:  # noqa: A002
        return self._bound().operations.pause(id)

    def resume_job(self, id: str, jobstore: str | None = None) -> Job | None:  # noqa: A002
        return self._bound().operations.resume(id)

    def run_job(self, id: str, jobstore: str | None = None) -> None:  # noqa: A002
        """Run the job now: queued for the leader, which runs it once and records it."""
        self._bound().operations.run_now(id)

    def authenticate(self, func: Callable[[Any], bool]) -> Callable[[Any], bool]:
        """`@scheduler.authenticate`: judges the credentials SCHEDULER_AUTH reads (HTTP Basic)."""
        self._authentication_callback = func
        if self._runtime is not None:
            self._runtime.authenticate = func
        return func

    # Helpers ---------------------------------------------------------------------------

    def _bound(self) -> Runtime:
        if self._runtime is None:
            raise RuntimeError("call init_app(app) first: the jobs live in the app's database")
        return self._runtime

    def _pending(self, definition: dict[str, Any]) -> Job:
        """A declared job as APScheduler shows it (validated by the app's rules once bound)."""
        if self._runtime is not None:
            scheduler = self._runtime.scheduler
            spec = self._runtime.rules.new_job(definition)
            spec.pop("replace_existing", None)
            fields = {**scheduler._job_defaults, "executor": "default", **spec, "next_run_time": None}
            return ServiceJob(scheduler, **fields)
        return _UnboundJob(definition)


class _UnboundJob(Job):
    """A job declared before the scheduler has an app: only what was given is known."""

    def __init__(self, definition: dict[str, Any]) -> None:  # noqa: D107 (no scheduler to build on)
        self.id = definition["id"]
        self.name = definition["name"]
        self.func = definition["func"]
        self.func_ref = definition["func"] if isinstance(definition["func"], str) else None
        self.trigger = definition.get("trigger")
        self.args = tuple(definition.get("args", ()))
        self.kwargs = dict(definition.get("kwargs", {}))
        self.next_run_time = None
