"""When a process joins the election, and how it leaves: forks and interpreter exit.

No server hooks are needed. A fork made from the main thread is a pre-fork
server (gunicorn --preload, uWSGI) starting workers: the parent leaves the
election before forking and each child joins afresh. A fork from any other
thread (a job using multiprocessing) leaves the parent alone and keeps the child
out. At exit, the lease is released before the interpreter waits for running
jobs, and their outcomes are written after.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import weakref
from typing import Protocol

import click
from flask.helpers import get_debug_flag
from werkzeug.serving import is_running_from_reloader

logger = logging.getLogger(__name__)


class Participant(Protocol):
    """What takes part in the election in this process (a Runtime)."""

    started: bool
    pid: int
    should_restart_after_fork: bool

    def start(self) -> None: ...

    def stop(self, forking: bool = False) -> None: ...

    def after_fork(self) -> None: ...

    def flush_outcomes(self) -> None: ...


_services: weakref.WeakSet[Participant] = weakref.WeakSet()
_hooks_installed = False
_forking_from_main_thread = False


def is_serving() -> bool:
    """True in serving processes; False for `flask <command>` and the reloader's watcher."""
    ctx = click.get_current_context(silent=True)
    if ctx is None:
        return True  # gunicorn, python run.py, a WSGI server
    if ctx.info_name != "run":
        return False  # CLI commands use the store without leading
    reload = ctx.params.get("reload")
    if reload is None:
        reload = get_debug_flag()
    # With the reloader, the first process only watches files; its child serves.
    return not reload or is_running_from_reloader()


def register(service: Participant) -> None:
    """Track a started service for fork and exit handling."""
    global _hooks_installed
    _services.add(service)
    if not _hooks_installed:
        os.register_at_fork(before=_before_fork, after_in_child=_after_fork_in_child)
        # Runs when the interpreter starts shutting down, before it waits for
        # non-daemon threads (running jobs): the lease is handed over at once.
        threading._register_atexit(_leave_all)  # type: ignore[attr-defined]
        atexit.register(_flush_all)
        _hooks_installed = True


def _before_fork() -> None:
    global _forking_from_main_thread
    _forking_from_main_thread = threading.current_thread() is threading.main_thread()
    if _forking_from_main_thread:
        for service in list(_services):
            if service.started:
                logger.info("Forking workers: this process leaves the election to them")
                service.stop(forking=True)


def _after_fork_in_child() -> None:
    for service in list(_services):
        service.after_fork()
        if _forking_from_main_thread and service.should_restart_after_fork:
            service.start()


def _leave_all() -> None:
    for service in list(_services):
        if service.started and service.pid == os.getpid():
            service.stop()


def _flush_all() -> None:
    for service in list(_services):
        if service.pid == os.getpid():
            service.flush_outcomes()
