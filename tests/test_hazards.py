"""APScheduler 3's hazards with a shared job store, each shown on plain APScheduler and closed here.

Every scenario runs twice: on plain APScheduler 3.11 (BackgroundScheduler and
SQLAlchemyJobStore, as users run it), marked xfail(strict=True) so the suite fails
if the hazard ever stops showing there; and on jobservice, which must pass.
"""

from __future__ import annotations

import pickle
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from apscheduler.events import EVENT_JOB_EXECUTED, JobExecutionEvent
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger
from flask import Flask
from sqlalchemy import create_engine, event, select, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError

from tests import jobfuncs
from tests.conftest import session, wait_for
from tests.orm import JobRun

PLAIN = pytest.param(
    "plain",
    marks=[
        pytest.mark.xfail(strict=True, raises=AssertionError, reason="the hazard, on plain APScheduler 3"),
        pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning"),
    ],
)
KINDS = [PLAIN, "jobservice"]


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return request.param


def tag() -> str:
    return secrets.token_hex(4)


SCHEDULER_THREADS = ("APScheduler", "jobservice-scheduler")


@contextmanager
def failing_commits(
    engine: Engine, count: int, threads: tuple[str, ...] | None = None
) -> Iterator[list[int]]:
    """The next `count` commits on this engine (from these threads, if given) fail as if
    the connection dropped at COMMIT."""
    remaining = [count]

    def fail(conn: Any) -> None:
        if threads is not None and threading.current_thread().name not in threads:
            return
        if remaining[0] > 0:
            remaining[0] -= 1
            raise OperationalError("COMMIT", {}, ConnectionError("injected: connection lost at commit"))

    event.listen(engine, "commit", fail)
    try:
        yield remaining
    finally:
        event.remove(engine, "commit", fail)


def plain_scheduler(engine: Engine, **options: Any) -> BackgroundScheduler:
    return BackgroundScheduler(
        jobstores={"default": SQLAlchemyJobStore(engine=engine)}, timezone=UTC, **options
    )


def fire_times(scheduler: Any) -> list[datetime]:
    """Collect each run's scheduled time from APScheduler's own events."""
    seen: list[datetime] = []

    def on_event(ev: JobExecutionEvent) -> None:
        seen.append(ev.scheduled_run_time)

    scheduler.add_listener(on_event, EVENT_JOB_EXECUTED)
    return seen


def leading(make_app: Callable[..., Flask], **overrides: Any) -> Flask:
    app = make_app(SCHEDULER_AUTOSTART=True, **overrides)
    wait_for(lambda: app.extensions["jobservice"].role == "leader")
    return app


# 1. A database error in the middle of a pass, even at commit --------------------------


def test_database_error_at_commit_does_not_kill_the_scheduler(
    kind: str, make_app: Callable[..., Flask], database_url: str
) -> None:
    name = tag()
    job = {"func": "tests.jobfuncs:count", "args": [name], "trigger": "interval", "seconds": 1}
    if kind == "plain":
        engine = create_engine(database_url)
        scheduler = plain_scheduler(engine)
        scheduler.start()
        scheduler.add_job(id="tick", **job)
    else:
        app = leading(make_app)
        engine = app.extensions["jobservice"].engine
        app.test_client().post("/scheduler/jobs", json={"id": "tick", **job})
    wait_for(lambda: len(jobfuncs.COUNTS.get(name, [])) >= 2)
    with failing_commits(engine, 1, SCHEDULER_THREADS) as remaining:
        wait_for(lambda: remaining[0] == 0, timeout_s=5)  # the scheduler's own pass hit it
    armed_at = time.time()
    time.sleep(3.5)
    later = [t for t in jobfuncs.COUNTS[name] if t > armed_at]
    if kind == "plain":
        scheduler.shutdown(wait=False)
    assert len(later) >= 2, "the scheduler stopped running jobs after a failed commit"


def test_database_outage_of_seconds_then_processing_resumes(make_app: Callable[..., Flask]) -> None:
    app = leading(make_app)
    name = tag()
    body = {"id": "tick", "func": "tests.jobfuncs:count", "args": [name], "trigger": "interval", "seconds": 1}
    app.test_client().post("/scheduler/jobs", json=body)
    wait_for(lambda: jobfuncs.COUNTS.get(name))
    with failing_commits(app.extensions["jobservice"].engine, 10_000):
        time.sleep(3)  # every write fails for three seconds
    back_at = time.time()
    wait_for(lambda: [t for t in jobfuncs.COUNTS[name] if t > back_at], timeout_s=5)
    assert app.extensions["jobservice"].scheduler._thread.is_alive()


# 2. shutdown() must not lose a due run -------------------------------------------------


def test_shutdown_never_loses_a_due_run(kind: str, make_app: Callable[..., Flask], database_url: str) -> None:
    name = tag()
    now = datetime.now(UTC)
    slow_at, due_at = now + timedelta(seconds=0.3), now + timedelta(seconds=1.2)
    slow = {"func": "tests.jobfuncs:sleep_then_count", "args": [name + "-slow", 2.0], "trigger": "date"}
    hourly = {"func": "tests.jobfuncs:count", "args": [name], "trigger": "interval", "hours": 1}
    if kind == "plain":
        engine = create_engine(database_url)
        scheduler = plain_scheduler(engine)
        scheduler.start()
        scheduler.add_job(id="slow", run_date=slow_at, **slow)
        scheduler.add_job(id="hourly", next_run_time=due_at, **hourly)
        stop = scheduler.shutdown
        store = SQLAlchemyJobStore(engine=engine)
    else:
        app = leading(make_app)
        client = app.test_client()
        client.post("/scheduler/jobs", json={"id": "slow", "run_date": slow_at.isoformat(), **slow})
        client.post("/scheduler/jobs", json={"id": "hourly", "next_run_time": due_at.isoformat(), **hourly})
        stop = app.extensions["jobservice"].scheduler.shutdown
        store = app.extensions["jobservice"].store
    wait_for(lambda: jobfuncs.COUNTS.get(name + "-slow-start"))
    time.sleep(0.3)  # the scheduler's loop is asleep again, waiting for `hourly`
    assert datetime.now(UTC) < due_at - timedelta(seconds=0.2)
    stop(wait=True)  # blocks on the running slow job while `hourly` comes due
    assert jobfuncs.COUNTS.get(name + "-slow"), "the running job was allowed to finish"
    ran = jobfuncs.COUNTS.get(name, [])
    next_run = store.lookup_job("hourly").next_run_time
    assert ran or next_run <= due_at, "the due run neither ran nor stayed due: it is lost"


def test_a_run_left_at_shutdown_runs_once_on_the_next_leader(make_app: Callable[..., Flask]) -> None:
    first = leading(make_app)
    name = tag()
    due_at = datetime.now(UTC) + timedelta(seconds=1)
    body = {"id": "due", "func": "tests.jobfuncs:count", "args": [name], "run_date": due_at.isoformat()}
    first.test_client().post("/scheduler/jobs", json=body)
    first.extensions["jobservice"].close()
    time.sleep(1.5)
    assert name not in jobfuncs.COUNTS
    leading(make_app)
    wait_for(lambda: jobfuncs.COUNTS.get(name))
    time.sleep(1)
    assert len(jobfuncs.COUNTS[name]) == 1


# 3. A process that cannot import a job's function never deletes it --------------------


def raw_job_row(job_id: str, func_ref: str) -> dict[str, Any]:
    state = {
        "version": 1, "id": job_id, "func": func_ref, "trigger": IntervalTrigger(hours=1, timezone=UTC),
        "executor": "default", "args": (), "kwargs": {}, "name": job_id, "misfire_grace_time": 60,
        "coalesce": True, "max_instances": 1, "next_run_time": datetime.now(UTC) + timedelta(hours=1),
    }  # fmt: skip
    return {
        "id": job_id,
        "next_run_time": state["next_run_time"].timestamp(),
        "job_state": pickle.dumps(state),
    }


def test_unimportable_job_is_never_deleted(
    kind: str, make_app: Callable[..., Flask], database_url: str
) -> None:
    """An older release during a rolling deploy, or a follower, lists jobs it cannot import."""
    row = raw_job_row("from-newer-release", "jobs.not_deployed_here:run")
    if kind == "plain":
        engine = create_engine(database_url)
        store = SQLAlchemyJobStore(engine=engine)
        scheduler = plain_scheduler(engine)
        scheduler.start(paused=True)
        with engine.begin() as conn:
            conn.execute(store.jobs_t.insert().values(**row))
        scheduler.get_jobs()
        scheduler.shutdown()
    else:
        app = leading(make_app)
        engine = app.extensions["jobservice"].engine
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO apscheduler_jobs (id, next_run_time, job_state, version) "
                              "VALUES (:id, :next_run_time, :job_state, 1)"), row)  # fmt: skip
        assert app.test_client().get("/scheduler/jobs").status_code == 200
        app.extensions["jobservice"].notify()
        time.sleep(0.5)
    with engine.connect() as conn:
        left = conn.execute(text("SELECT id FROM apscheduler_jobs")).scalars().all()
    assert "from-newer-release" in left, "the job was deleted"


# 4. A pause made through a follower is not undone by the leader's stale copy -----------


def test_pause_through_a_follower_survives_the_leaders_write_back(
    kind: str, make_app: Callable[..., Flask], database_url: str
) -> None:
    name = tag()
    job = {"func": "tests.jobfuncs:count", "args": [name], "trigger": "interval", "seconds": 1}
    paused = threading.Event()
    if kind == "plain":
        engine = create_engine(database_url)
        leader, follower = plain_scheduler(engine), plain_scheduler(engine)
        follower.start(paused=True)
        follower.add_job(id="tick", **job)
        store = leader._jobstores["default"]

        def pause() -> None:
            follower.pause_job("tick")

        def is_paused() -> bool:
            return follower.get_job("tick").next_run_time is None
    else:
        leader_app, follower_app = leading(make_app), make_app()
        follower_app.test_client().post("/scheduler/jobs", json={"id": "tick", **job})
        store = leader_app.extensions["jobservice"].store

        def pause() -> None:
            assert follower_app.test_client().post("/scheduler/jobs/tick/pause").status_code == 200

        def is_paused() -> bool:
            return follower_app.test_client().get("/scheduler/jobs/tick").json["next_run_time"] is None

    def then_pause(jobs: list[Any]) -> list[Any]:
        if jobs and not paused.is_set():
            pause()  # between the leader's read and its write-back
            paused.set()
        return jobs

    if kind == "plain":
        read_due = store.get_due_jobs
        store.get_due_jobs = lambda now: then_pause(read_due(now))  # type: ignore[method-assign]
    else:  # jobservice's pass reads its due jobs a chunk at a time
        read_chunks = store.due_chunks
        store.due_chunks = lambda now, size: map(then_pause, read_chunks(now, size))  # type: ignore[method-assign]
    if kind == "plain":
        leader.start()
    else:
        leader_app.extensions["jobservice"].notify()
    wait_for(paused.is_set, timeout_s=5)
    paused_at = time.time()
    time.sleep(2.5)
    still_paused = is_paused()
    after = [t for t in jobfuncs.COUNTS.get(name, []) if t > paused_at + 0.05]
    if kind == "plain":
        leader.shutdown(wait=False)
        follower.shutdown(wait=False)
    assert still_paused, "the leader wrote its stale copy back over the pause"
    assert after == [], "the job kept running after it was paused"


# 5. A fire time that falls inside a failover runs once after it ----------------------


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # the simulated death
def test_fire_time_inside_a_failover_runs_once(
    kind: str, make_app: Callable[..., Flask], database_url: str, redis_url: str
) -> None:
    """The leader dies after handing out a run and before saving the next run time; a
    standby takes over. No fire time may run twice, the interrupted one must run once."""
    job = {"func": "tests.jobfuncs:noop", "trigger": "interval", "seconds": 1}
    died = threading.Event()
    if kind == "plain":
        engine = create_engine(database_url)
        first, standby = plain_scheduler(engine), plain_scheduler(engine)
        seen_first, seen_standby = fire_times(first), fire_times(standby)
        first.start()
        first.add_job(id="tick", **job)
        store = first._jobstores["default"]
        write = store.update_job

        def update_then_die(j: Any) -> None:
            if len(seen_first) >= 2 and not died.is_set():
                died.set()
                raise SystemExit("the process dies before saving the next run time")
            write(j)

        store.update_job = update_then_die  # type: ignore[method-assign]
        wait_for(died.is_set, timeout_s=10)
        standby.start()  # a file-lock standby takes over as soon as the process is gone
        time.sleep(3)
        first.shutdown(wait=False)
        standby.shutdown(wait=False)
        fires = seen_first + seen_standby
    else:
        first = leading(make_app, JOBSERVICE_REDIS_URL=redis_url)
        first_service = first.extensions["jobservice"]
        first.test_client().post("/scheduler/jobs", json={"id": "tick", **job})
        seen_first = fire_times(first_service.scheduler)
        store = first_service.store
        advance = store.advance

        def advance_then_die(moves: Any, fence: int) -> None:
            if len(seen_first) >= 2 and not died.is_set():
                died.set()
                first_service.elector._stopped.set()  # stops renewing: it is gone
                first_service.elector._term = None
                raise SystemExit("the process dies before saving the next run time")
            advance(moves, fence)

        store.advance = advance_then_die  # type: ignore[method-assign]
        wait_for(died.is_set, timeout_s=10)
        standby = make_app(SCHEDULER_AUTOSTART=True, JOBSERVICE_REDIS_URL=redis_url)
        seen_standby = fire_times(standby.extensions["jobservice"].scheduler)
        time.sleep(5)  # the lease (2 s) runs out, the standby leads
        fires = seen_first + seen_standby
        with standby.app_context(), session(standby) as db_session:
            query = select(JobRun.scheduled_at, JobRun.status, JobRun.fence).where(JobRun.job_id == "tick")
            runs = db_session.execute(query).all()
        interrupted = max(at for at, _, fence in runs if fence == 1)
        # The dead leader's last claim ran once: by itself if it had started it, else adopted.
        assert [status for at, status, _ in runs if at == interrupted] == ["succeeded"]
        assert {fence for at, _, fence in runs if at > interrupted} == {2}
    counts = Counter(fires)
    assert seen_standby, "the standby took over"
    assert [at for at, n in counts.items() if n > 1] == [], "a fire time ran twice"
