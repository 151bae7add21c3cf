"""GET /health, and the API while the database is unreachable (a real cut connection)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Flask

from tests.conftest import changed_settings, wait_for
from tests.netproxy import TcpProxy


def test_health_of_a_leading_process(make_app: Callable[..., Flask]) -> None:
    app = make_app(SCHEDULER_AUTOSTART=True)
    wait_for(lambda: app.test_client().get("/health").json["seconds_since_last_pass"] is not None)
    response = app.test_client().get("/health")
    assert response.status_code == 200
    body = response.json
    assert body["status"] == "ok" and body["role"] == "leader"
    assert body["leader"] == app.extensions["jobservice"].leader().worker
    assert body["database"] == "ok" and body["redis"] == "not configured"
    assert body["jobs"] == 1 and body["fence"] >= 1  # the built-in maintenance job
    assert (
        0 < body["lease_seconds_left"] <= app.config["JOBSERVICE_LEADER_LEASE_SECONDS"]
    )  # as the leader trusts it
    assert 0 <= body["seconds_since_last_pass"] < 2 * app.config["JOBSERVICE_LEADER_LEASE_SECONDS"]


def test_health_with_redis(make_app: Callable[..., Flask], redis_url: str) -> None:
    app = make_app(SCHEDULER_AUTOSTART=True, JOBSERVICE_REDIS_URL=redis_url)
    wait_for(lambda: app.test_client().get("/health").json["seconds_since_last_pass"] is not None)
    body = app.test_client().get("/health").json
    assert body["status"] == "ok" and body["redis"] == "ok" and body["role"] == "leader"
    assert 0 < body["lease_seconds_left"] <= app.config["JOBSERVICE_LEADER_LEASE_SECONDS"]


def test_follower_without_a_leader_is_degraded(make_app: Callable[..., Flask]) -> None:
    body = make_app().test_client().get("/health").json  # this process never campaigns
    assert body["status"] == "degraded" and body["role"] == "follower" and body["leader"] is None


def test_database_unreachable_gives_503_json_and_recovers(proxied_app: tuple[Flask, TcpProxy]) -> None:
    app, proxy = proxied_app
    client = app.test_client()
    assert client.get("/health").status_code == 200
    proxy.cut()
    response = client.get("/health")
    assert response.status_code == 503
    assert response.json["status"] == "error" and response.json["database"] == "unreachable"
    for method, path in [("GET", "/scheduler/jobs"), ("GET", "/scheduler"), ("POST", "/scheduler/pause")]:
        response = client.open(path, method=method)
        assert response.status_code == 503, (path, response.data[:200])
        assert response.is_json and "database" in response.json["error_message"]
        assert "127.0.0.1" not in response.json["error_message"]
    proxy.restore()
    assert wait_for(lambda: client.get("/health").status_code == 200)
    assert client.get("/scheduler/jobs").status_code == 200


def test_starts_and_serves_while_redis_is_down(make_app: Callable[..., Flask]) -> None:
    from tests.cluster import free_port

    app = make_app(SCHEDULER_AUTOSTART=True, JOBSERVICE_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    client = app.test_client()
    body = client.get("/health").json
    assert body["status"] == "degraded" and body["redis"] == "unreachable" and body["role"] == "follower"
    job = {"id": "j", "func": "tests.jobfuncs:noop", "trigger": "interval", "hours": 1}
    assert client.post("/scheduler/jobs", json=job).status_code == 200  # the API still works


def test_health_is_degraded_when_the_leader_stops_passing(make_app: Callable[..., Flask]) -> None:
    app = make_app(SCHEDULER_AUTOSTART=True, JOBSERVICE_LEADER_LEASE_SECONDS=0.5)
    client = app.test_client()
    seen: list[dict[str, Any]] = []
    try:
        wait_for(lambda: seen.append(client.get("/health").json) or seen[-1]["status"] == "ok")
    except AssertionError:  # seen once in CI (mysqlclient pass): say what /health said instead
        reasons = {reason for body in seen for reason in body["reasons"]}
        raise AssertionError(f"never ok; last: {seen[-1]}; reasons seen: {reasons}") from None
    app.extensions["jobservice"].scheduler.stop_processing()  # leads, but no longer passes
    body = wait_for(lambda: (b := client.get("/health").json)["status"] == "degraded" and b, timeout_s=5)
    assert body["role"] == "leader" and body["seconds_since_last_pass"] > 1.0


def test_without_the_token_health_says_only_its_status(make_app: Callable[..., Flask]) -> None:
    token = "health-token-0123456789abcdef"
    app = make_app(SCHEDULER_API_TOKEN=token)
    client = app.test_client()
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        response = client.get("/health", headers=headers)
        assert response.status_code == 200 and response.json == {"status": "degraded"}  # no leader here
    full = client.get("/health", headers={"Authorization": f"Bearer {token}"}).json
    assert (
        full["status"] == "degraded"
        and "leader" in full
        and full["reasons"] == ["no process leads: due jobs are not being run"]
    )


def test_without_the_token_an_outage_still_answers_503(proxied_app: tuple[Flask, TcpProxy]) -> None:
    app, proxy = proxied_app
    with changed_settings(app, api_token="health-token-0123456789abcdef"):
        proxy.cut()
        response = app.test_client().get("/health")
    assert response.status_code == 503 and response.json == {"status": "error"}
