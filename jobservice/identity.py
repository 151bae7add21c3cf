"""Who this process is, as shown in run records, leader info and /health."""

from __future__ import annotations

import os
import socket

_HOST = socket.gethostname()


def worker_id() -> str:
    """host:pid, computed on each call because a fork changes the pid."""
    return f"{_HOST}:{os.getpid()}"


def host_name() -> str:
    return _HOST
