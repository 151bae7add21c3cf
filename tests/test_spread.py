"""Spreading runs (SPREAD_RUNS), seen from the leader: alone, it runs its runs itself; what
it pushed for a taker that vanished is adopted; a push Redis refuses runs here at once.
Across real processes (followers taking runs, killed, frozen, cut off): tests/test_faults.py."""

from __future__ import annotations

import logging
import pickle
import time
from collections.abc import Callable

import pytest
import redis
from flask import Flask

from jobservice.identity import worker_id
from jobservice.ledger import LEFT_BEHIND_S
from jobservice.spread import POP_TIMEOUT_S, QUEUE_KEY, TAKER_TTL_S, TAKERS_KEY, decode
from tests.conftest import finished_runs, fires, leading_app, soon, wait_for


@pytest.fixture
def spread_app(make_app: Callable[..., Flask], redis_url: str) -> Flask:
    app = leading_app(make_app, JOBSERVICE_SPREAD_RUNS=True, JOBSERVICE_REDIS_URL=redis_url)
    # Before it led, its own taker was waiting for runs; it may take what comes within that
    # wait (harmless: it is one more taker). These tests need the leader alone.
    time.sleep(POP_TIMEOUT_S + 0.2)
    return app


def redis_of(app: Flask) -> redis.Redis:
    return app.extensions["jobservice"].redis


def key(app: Flask, template: str) -> str:
    return template.format(prefix=app.extensions["jobservice"].redis_prefix())


def another_taker_is_there(app: Flask) -> None:
    """A taker of another process says it is there (once: it expires after TAKER_TTL_S)."""
    redis_of(app).zadd(key(app, TAKERS_KEY), {"elsewhere:1": time.time()})


def post_probe(app: Flask, job_id: str) -> None:
    body = {"id": job_id, "func": "tests.jobfuncs:record", "run_date": soon()}
    assert app.test_client().post("/scheduler/jobs", json=body).status_code == 200


def test_alone_the_leader_runs_its_runs_itself(spread_app: Flask) -> None:
    post_probe(spread_app, "alone")
    [run] = finished_runs(spread_app, "alone")
    assert run.status == "succeeded" and run.worker == worker_id()
    assert redis_of(spread_app).llen(key(spread_app, QUEUE_KEY)) == 0  # nothing was pushed


def test_runs_pushed_for_a_taker_that_vanished_are_adopted_and_run_once(spread_app: Flask) -> None:
    another_taker_is_there(spread_app)
    post_probe(spread_app, "orphan")
    queue = key(spread_app, QUEUE_KEY)
    [payload] = finished_or_queued(spread_app, queue)
    claim, _ = decode(payload)
    # Nobody takes it: once the taker's registration expires, the leader adopts the claim.
    [run] = finished_runs(spread_app, "orphan")
    assert run.status == "succeeded" and run.worker == worker_id()
    assert len(fires(spread_app)) == 1
    assert run.claim != claim.token  # adopted: a new claim, so the stale message starts nothing
    late_s = (run.started_at - run.scheduled_at).total_seconds()
    assert max(LEFT_BEHIND_S, TAKER_TTL_S) - 1 < late_s < 10


def finished_or_queued(app: Flask, queue: str) -> list[bytes]:
    """The messages the leader pushed, waited for."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        payloads = redis_of(app).lrange(queue, 0, -1)
        if payloads:
            return payloads
        time.sleep(0.02)
    raise AssertionError("the leader pushed nothing")


def test_a_push_redis_refuses_is_run_here_at_once(
    spread_app: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    queue = key(spread_app, QUEUE_KEY)
    redis_of(spread_app).set(queue, "not a list")  # RPUSH now fails: WRONGTYPE
    try:
        another_taker_is_there(spread_app)
        with caplog.at_level(logging.WARNING, logger="jobservice.spread"):
            post_probe(spread_app, "refused")
            [run] = finished_runs(spread_app, "refused")
    finally:
        redis_of(spread_app).delete(queue)
    assert run.status == "succeeded" and run.worker == worker_id()
    assert (run.started_at - run.scheduled_at).total_seconds() < LEFT_BEHIND_S  # not by adoption
    assert "Could not hand 1 run(s) to other processes (ResponseError); running them here" in caplog.text


def test_a_host_outside_the_allowed_hosts_never_takes_runs(
    make_app: Callable[..., Flask], redis_url: str
) -> None:
    app = make_app(
        SCHEDULER_AUTOSTART=True,
        SCHEDULER_ALLOWED_HOSTS=["some-other-host"],
        JOBSERVICE_SPREAD_RUNS=True,
        JOBSERVICE_REDIS_URL=redis_url,
    )
    time.sleep(POP_TIMEOUT_S + 0.2)  # a taker would have said it is there by now
    runtime = app.extensions["jobservice"]
    assert runtime.role == "follower"
    assert redis_of(app).zrange(key(app, TAKERS_KEY), 0, -1) == []


def test_health_and_the_scheduler_say_who_takes_runs_and_what_waits(spread_app: Flask) -> None:
    another_taker_is_there(spread_app)
    redis_of(spread_app).rpush(key(spread_app, QUEUE_KEY), b"not a run")  # counted, never taken here
    try:
        client = spread_app.test_client()
        for path in ("/health", "/scheduler"):
            body = client.get(path).get_json()
            assert body["spread"] == {"takers": ["elsewhere:1"], "queued": 1}, path
    finally:
        redis_of(spread_app).delete(key(spread_app, QUEUE_KEY))


def test_without_spreading_neither_says_anything_of_it(make_app: Callable[..., Flask]) -> None:
    client = make_app().test_client()
    assert "spread" not in client.get("/health").get_json()
    assert "spread" not in client.get("/scheduler").get_json()


def test_a_taker_drops_a_message_it_cannot_read_and_goes_on_taking(
    spread_app: Flask, make_app: Callable[..., Flask], redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A message of another release, say: it is logged and dropped, and the taker lives on."""
    make_app(SCHEDULER_AUTOSTART=True, JOBSERVICE_SPREAD_RUNS=True, JOBSERVICE_REDIS_URL=redis_url)
    queue = key(spread_app, QUEUE_KEY)
    for garbage in (b"not a run", pickle.dumps(("an", "older", "layout"))):
        redis_of(spread_app).rpush(queue, garbage)
        wait_for(lambda: redis_of(spread_app).llen(queue) == 0)
    wait_for(lambda: len([r for r in caplog.records if "cannot read" in r.getMessage()]) == 2)
