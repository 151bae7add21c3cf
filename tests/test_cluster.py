"""Exactly one scheduler across workers and hosts, judged from what the jobs wrote.

Two gunicorn masters on different ports stand for two hosts (3 workers each),
sharing a MariaDB database of the test's own and a Redis. A 1-second interval
job writes every start into `test_fires`; duplicates and gaps are counted there.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.cluster import Cluster, RedisServer, Server, free_port
from tests.conftest import wait_for

pytestmark = pytest.mark.processes

LEASE_S = 2.0
EVERY_SECOND = {"id": "tick", "func": "tests.jobfuncs:record", "trigger": "interval", "seconds": 1}


@pytest.fixture
def cluster(mariadb_url: str, redis_url: str, tmp_path: Path) -> Iterator[Cluster]:
    cluster = Cluster(mariadb_url, redis_url, tmp_path)
    yield cluster
    cluster.close()


def duplicates(fires: list[Any]) -> list[datetime]:
    counts = Counter(fire.scheduled_at for fire in fires)
    return [at for at, n in counts.items() if n > 1]


def gaps(fires: list[Any]) -> list[float]:
    starts = [fire.started_at for fire in fires]
    return [(b - a).total_seconds() for a, b in zip(starts, starts[1:], strict=False)]


def largest_gap_around(fires: list[Any], moment: float) -> float:
    """The gap between the last start before `moment` (epoch s) and the first after it."""
    before = [f.started_at.timestamp() for f in fires if f.started_at.timestamp() <= moment]
    after = [f.started_at.timestamp() for f in fires if f.started_at.timestamp() > moment]
    assert before and after, "fires on both sides of the event"
    return min(after) - max(before)


def watch(seconds: float) -> None:
    time.sleep(seconds)


def just_before_next_fire(cluster: Cluster, margin_s: float = 0.1) -> None:
    """Sleep until `margin_s` before the tick job's next fire, so it falls inside the failover."""
    last = cluster.fires()[-1].scheduled_at.timestamp()
    next_fire = last + 1.0
    while next_fire - margin_s < time.time():
        next_fire += 1.0
    time.sleep(next_fire - margin_s - time.time())


def report(name: str, **figures: Any) -> None:
    """Measured figures, printed for `pytest -s` and the closing note."""
    print(f"\n[measured] {name}: " + ", ".join(f"{k}={v}" for k, v in figures.items()))


def test_two_hosts_run_each_fire_once_without_gaps(cluster: Cluster) -> None:
    host1, host2 = cluster.host(), cluster.host()
    assert host2.post("/scheduler/jobs", EVERY_SECOND)[0] == 200
    watch(21)
    fires = cluster.fires()
    assert len(fires) >= 19
    assert duplicates(fires) == []
    assert max(gaps(fires)) <= 1.5
    assert len({fire.pid for fire in fires}) == 1  # one leader all along
    leaders = cluster.leaders_seen(host1) | cluster.leaders_seen(host2)
    assert len(leaders) == 1 and None not in leaders
    report(
        "two hosts x 3 workers, 21 s",
        fires=len(fires),
        duplicates=0,
        largest_gap_s=round(max(gaps(fires)), 3),
    )


def test_kill_9_of_the_leader_fails_over_within_the_lease(cluster: Cluster) -> None:
    cluster.host(), cluster.host()
    cluster.hosts[0].post("/scheduler/jobs", EVERY_SECOND)
    watch(4)
    _, leader_pid = cluster.leader()
    just_before_next_fire(cluster)
    killed_at = time.time()
    os.kill(leader_pid, signal.SIGKILL)  # a worker of a master this test started
    watch(8)
    fires = cluster.fires()
    assert duplicates(fires) == []
    gap = largest_gap_around(fires, killed_at)
    assert gap <= LEASE_S + 1.0
    after = [f for f in fires if f.started_at.timestamp() > killed_at]
    assert leader_pid not in {f.pid for f in after}
    first_after = min(f.started_at.timestamp() for f in after)
    report(
        "kill -9 of the leader",
        gap_s=round(gap, 3),
        kill_to_next_fire_s=round(first_after - killed_at, 3),
        duplicates=0,
    )


def test_sigterm_of_the_leaders_master_hands_over_at_once(cluster: Cluster) -> None:
    cluster.host(), cluster.host()
    cluster.hosts[0].post("/scheduler/jobs", EVERY_SECOND)
    watch(4)
    leading_host, _ = cluster.leader()
    just_before_next_fire(cluster)
    stopped_at = time.time()
    leading_host.signal(signal.SIGTERM)
    watch(6)
    fires = cluster.fires()
    assert duplicates(fires) == []
    gap = largest_gap_around(fires, stopped_at)
    assert gap <= 1.5
    first_after = min(f.started_at.timestamp() for f in fires if f.started_at.timestamp() > stopped_at)
    report(
        "SIGTERM of the leader's master",
        gap_s=round(gap, 3),
        term_to_next_fire_s=round(first_after - stopped_at, 3),
    )


def test_redis_outage_stops_processing_then_one_leader_returns(mariadb_url: str, tmp_path: Path) -> None:
    private_redis = RedisServer(free_port(), tmp_path).start()
    cluster = Cluster(mariadb_url, private_redis.url, tmp_path)
    try:
        host1, host2 = cluster.host(), cluster.host()
        host1.post("/scheduler/jobs", EVERY_SECOND)
        watch(4)
        down_at = time.time()
        private_redis.stop()
        watch(6)
        up_at = time.time()  # Redis accepts connections from here on
        private_redis.start()
        watch(6)
        fires = cluster.fires()
        assert duplicates(fires) == []
        during = [f for f in fires if down_at + LEASE_S + 0.5 < f.started_at.timestamp() < up_at]
        assert during == []  # the leader stepped down within its lease; nobody took over
        assert [f for f in fires if f.started_at.timestamp() > up_at]  # processing came back
        fences_before = {f.fence for f in fires if f.started_at.timestamp() < down_at}
        fences_after = {f.fence for f in fires if f.started_at.timestamp() > up_at}
        assert min(fences_after) > max(fences_before)  # the restarted Redis had lost the counter
        leaders = cluster.leaders_seen(host1) | cluster.leaders_seen(host2)
        assert len(leaders) == 1 and None not in leaders
        last_before = max(f.started_at.timestamp() for f in fires if f.started_at.timestamp() < up_at)
        first_after = min(f.started_at.timestamp() for f in fires if f.started_at.timestamp() > up_at)
        report(
            "Redis down 6 s",
            last_fire_after_stop_s=round(last_before - down_at, 3),
            first_fire_after_restart_s=round(first_after - up_at, 3),
            duplicates=0,
        )
    finally:
        cluster.close()
        private_redis.stop()


def test_jobs_posted_to_random_workers_fire_on_time(cluster: Cluster) -> None:
    cluster.host(), cluster.host()
    lateness: list[float] = []
    for n in range(10):
        run_date = datetime.now(UTC) + timedelta(seconds=1)
        body = {
            "id": f"once-{n}",
            "func": "tests.jobfuncs:record",
            "trigger": "date",
            "run_date": run_date.isoformat(),
        }
        status, _ = random.choice(cluster.hosts).post("/scheduler/jobs", body)
        assert status == 200
        time.sleep(random.uniform(0.05, 0.3))
    watch(2.5)
    for n in range(10):
        fires = cluster.fires(f"once-{n}")
        assert len(fires) == 1, f"once-{n} fired {len(fires)} times"
        lateness.append((fires[0].started_at - fires[0].scheduled_at).total_seconds())
    assert max(lateness) <= 0.5
    report("10 date jobs on random workers", max_lateness_ms=round(max(lateness) * 1000, 1))


def test_pause_through_a_follower_stops_the_job(cluster: Cluster) -> None:
    host1, host2 = cluster.host(), cluster.host()
    host1.post("/scheduler/jobs", EVERY_SECOND)
    watch(3)
    leading_host, _ = cluster.leader()
    follower_host = host2 if leading_host is host1 else host1
    status, body = follower_host.post("/scheduler/jobs/tick/pause")
    paused_at = time.time()
    assert status == 200 and body["next_run_time"] is None
    watch(3)
    fires = cluster.fires()
    assert fires and all(f.started_at.timestamp() <= paused_at for f in fires)
    assert leading_host.get("/scheduler/jobs/tick")[1]["next_run_time"] is None


def test_cluster_pause_from_any_worker_survives_restarts(cluster: Cluster) -> None:
    host1 = cluster.host(workers=2)
    host1.post("/scheduler/jobs", EVERY_SECOND)
    watch(2)
    assert host1.post("/scheduler/pause")[0] == 204
    paused_at = time.time()
    host1.stop()
    host2 = cluster.host(workers=2)
    assert host2.get("/scheduler")[1]["state"] == "paused"
    watch(3)
    # A run the leader had already claimed when the pause landed may still start (as
    # APScheduler's pause leaves submitted runs alone); no later fire time runs.
    assert all(f.scheduled_at.timestamp() <= paused_at for f in cluster.fires())
    assert all(f.started_at.timestamp() <= paused_at + 0.5 for f in cluster.fires())
    assert host2.post("/scheduler/resume")[0] == 204
    wait_for(lambda: [f for f in cluster.fires() if f.started_at.timestamp() > paused_at], timeout_s=5)


Factory = Callable[..., Server]


def test_sigterm_lets_the_running_job_finish_while_the_next_leader_takes_over(cluster: Cluster) -> None:
    host1, host2 = cluster.host(), cluster.host()
    host1.post("/scheduler/jobs", EVERY_SECOND)
    watch(2)
    leading_host, leader_pid = cluster.leader()
    slow = {"id": "slow", "func": "tests.jobfuncs:slow", "args": [3], "trigger": "interval", "hours": 1}
    leading_host.post("/scheduler/jobs", slow)
    leading_host.post("/scheduler/jobs/slow/run")
    wait_for(lambda: cluster.fires("slow"), timeout_s=5)  # it started, in the leader
    stopped_at = time.time()
    leading_host.signal(signal.SIGTERM)
    watch(5)
    start, end = cluster.fires("slow")
    assert start.pid == end.pid == leader_pid and end.note == "end"  # it finished where it started
    ticks = [f for f in cluster.fires() if f.started_at.timestamp() > stopped_at]
    assert min(f.started_at.timestamp() for f in ticks) - stopped_at <= 1.5  # while it was finishing
    assert {f.pid for f in ticks} != {leader_pid}
    other = host2 if leading_host is host1 else host1
    [run] = other.get("/scheduler/jobs/slow/runs")[1]
    assert run["status"] == "succeeded" and run["trigger"] == "manual"
    assert duplicates(cluster.fires()) == []


def test_a_host_outside_allowed_hosts_never_leads(cluster: Cluster) -> None:
    """SCHEDULER_ALLOWED_HOSTS as in Flask-APScheduler: only the hosts listed campaign. Both
    masters run on this machine, so one lists this host's name and the other does not."""
    here = socket.gethostname()
    allowed = cluster.host(SCHEDULER_ALLOWED_HOSTS=here)
    elsewhere = cluster.host(SCHEDULER_ALLOWED_HOSTS="not-this-host")
    assert elsewhere.get("/scheduler")[1]["allowed_hosts"] == ["not-this-host"]
    assert elsewhere.post("/scheduler/jobs", EVERY_SECOND)[0] == 200  # it serves the API
    watch(4)
    fires = cluster.fires()
    assert fires and {f.pid for f in fires} <= set(allowed.children())
    stopped_at = time.time()
    allowed.stop()
    watch(4)
    assert [f for f in cluster.fires() if f.started_at.timestamp() > stopped_at + 0.5] == []
    status, body = elsewhere.get("/health")
    assert status == 200 and body["leader"] is None and body["status"] == "degraded"
