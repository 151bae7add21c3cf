"""Where the leader spends its time during S3 and S4: py-spy samples, sorted into categories.

py-spy samples only the thread holding the GIL (`--gil`), without pausing the process
(`--nonblocking`): one process runs every job, so its Python CPU is what bounds a burst,
and these shares are shares of that CPU (MariaDB's own CPU is measured apart, in the
scenario's costs). Each stack is put in the first category that matches. Shares are given
for the whole process, for the scheduler thread (from a fire time to its claim) and for
the job threads (run start, app context, the job, its record) separately.
"""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

from . import procs

PY_SPY = Path(sys.executable).parent / "py-spy"
RATE_HZ = 250
IDLE_LEAVES = {
    "wait", "_wait_for_tstate_lock", "get", "select", "poll", "sleep", "accept", "pause",
    "_worker", "run_for_one", "wait_for", "join", "_read_from_socket", "can_read", "get_message",
}  # fmt: skip
CATEGORIES = (
    ("job body (benchmark INSERT)", ("bench/benchjobs.py",)),
    (
        "pickling",
        ("_restore", "__setstate__", "__getstate__", "_reconstitute_job", "pickle.py", "copyreg.py"),
    ),
    ("database (SQLAlchemy, PyMySQL, waits)", ("sqlalchemy/", "pymysql/")),
    ("trigger arithmetic", ("apscheduler/triggers/", "apscheduler/util.py", "zoneinfo", "dateutil/")),
    ("redis (lease, bus)", ("redis/",)),
    ("jobservice (own code)", ("jobservice/",)),
    ("flask (app context)", ("flask/", "werkzeug/")),
    ("apscheduler (other)", ("apscheduler/",)),
    ("logging", ("logging/",)),
)


def record(pid: int, duration_s: int, out: Path) -> subprocess.Popen[bytes]:
    """Start py-spy on a process for `duration_s`, writing collapsed stacks to `out`."""
    argv = [str(PY_SPY), "record", "--pid", str(pid), "--duration", str(duration_s), "--rate", str(RATE_HZ)]
    argv += ["--gil", "--threads", "--nonblocking", "--format", "raw", "--output", str(out)]
    return procs.spawn(argv, {"PATH": "/usr/bin:/bin"}, out.with_suffix(".log"))


def finish(proc: subprocess.Popen[bytes], timeout_s: float = 60.0) -> None:
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        procs.kill_group(proc)


def classify(stack: list[str]) -> str:
    """The category of one stack (frames outermost first, as "func (file:line)")."""
    leaf = stack[-1].split(" (", 1)[0].rsplit(".", 1)[-1] if stack else ""
    for name, needles in CATEGORIES[:3]:
        if any(needle in frame for frame in stack for needle in needles):
            return name
    if not stack or leaf in IDLE_LEAVES or "threading.py" in stack[-1] or "selectors.py" in stack[-1]:
        return "idle"
    for name, needles in CATEGORIES[3:]:
        if any(needle in frame for frame in stack for needle in needles):
            return name
    return "other"


#: Thread groups reported separately, by the thread name py-spy shows.
THREAD_GROUPS = (
    ("scheduler thread", "jobservice-scheduler"),
    ("job threads", "jobservice-job"),
    ("request thread", "MainThread"),
)


WHOLE = "whole process"


def thread_group(first_frame: str) -> str:
    """The group of a stack from its thread frame: "thread (TID): name"."""
    name = first_frame.partition("): ")[2]
    return next((group for group, prefix in THREAD_GROUPS if name.startswith(prefix)), "other threads")


def summarize(path: Path) -> dict[str, dict[str, float]]:
    """Per thread group, the share (0-1) of its non-idle samples in each category."""
    counts: dict[str, Counter[str]] = {}
    if not path.exists():
        return {}
    for line in path.read_text(errors="replace").splitlines():
        stack_text, _, number = line.rpartition(" ")
        if not number.isdigit():
            continue
        frames = stack_text.split(";")
        group = "other threads"
        if frames[0].startswith("thread ("):
            group, frames = thread_group(frames[0]), frames[1:]
        category = classify(frames)
        counts.setdefault(group, Counter())[category] += int(number)
        counts.setdefault(WHOLE, Counter())[category] += int(number)
    out: dict[str, dict[str, float]] = {}
    for group, by_category in counts.items():
        active = sum(n for name, n in by_category.items() if name != "idle")
        if active:
            out[group] = {name: n / active for name, n in by_category.most_common() if name != "idle"}
            out[group]["active_samples"] = active
    return out
