"""The fault matrix: a burst of due jobs, and the leader broken in every way an operator can.

Two gunicorn masters stand for two hosts (3 workers each). Each host reaches Redis through
a TCP proxy of the test's own (cut one: that host is partitioned from Redis; cut all: Redis
is gone). The service's database is a per-test database on the shared MariaDB, or a private
mariadbd the test stops by its pid. The probe job writes every start into a table of a
separate database that stays up, so the verdict comes from what ran:

* every due fire time ran once, none twice;
* none is lost: a run that did not happen says why in its row (missed, or interrupted by
  the death of the process running it);
* every run row ends (none stays `running`).
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import select

from jobservice.models import jobs_table
from tests.cluster import Cluster, PrivateMariaDB, Server, overlaps
from tests.conftest import drop_mariadb_database, mysql_url, new_mariadb_database, wait_for
from tests.netproxy import CommitAnswerEater
from tests.orm import ClusterState, JobRun

pytestmark = pytest.mark.processes

LEASE_S = 2.0
BURST = 600
#: Job threads of the leading process: at most this many runs can be cut short by its death.
MAX_WORKERS = 20
#: A run whose process died is closed within this long (heartbeats stop; a few leases).
DEAD_RUN_BOUND_S = 8 * LEASE_S
PROBE = "tests.jobfuncs:probe"


@dataclass
class Verdict:
    """What became of each due fire time, from the probe table and the run history."""

    due: int
    once: int
    twice: int
    missed: int
    interrupted: int
    lost: list[str]
    unended: list[str]
    first_run_after_fault_s: float | None
    last_run_after_fault_s: float | None
    settled_after_fault_s: float

    def figures(self) -> dict[str, Any]:
        return {
            "due": self.due,
            "once": self.once,
            "twice": self.twice,
            "missed": self.missed,
            "interrupted": self.interrupted,
            "lost": len(self.lost),
            "unended": len(self.unended),
            "first_run_after_fault_s": self.first_run_after_fault_s,
            "last_run_after_fault_s": self.last_run_after_fault_s,
            "settled_after_fault_s": self.settled_after_fault_s,
        }


def report(name: str, **figures: Any) -> None:
    """Measured figures, printed for `pytest -s` and the closing note."""
    print(f"\n[measured] {name}: " + ", ".join(f"{k}={v}" for k, v in figures.items()))


def burst(cluster: Cluster, count: int = BURST, due_in_s: float = 3.0) -> tuple[list[str], datetime]:
    """Import `count` date jobs due at one instant, in one request; return their ids and due time."""
    due_at = datetime.now(UTC) + timedelta(seconds=due_in_s)
    ids = [f"burst-{n:04d}" for n in range(count)]
    jobs = [
        {"id": job_id, "func": PROBE, "trigger": "date", "run_date": due_at.isoformat()} for job_id in ids
    ]
    status, body = cluster.hosts[0].post("/scheduler/jobs/import", {"jobs": jobs})
    assert status == 200, body
    return ids, due_at


def sleep_until(moment: datetime) -> None:
    time.sleep(max((moment - datetime.now(UTC)).total_seconds(), 0))


def settle(cluster: Cluster, ids: list[str], timeout_s: float = 45.0) -> None:
    """Wait until none of these jobs is left in the store and none of their runs is open."""
    active = ("running", "overrunning")

    def settled() -> bool:
        with cluster.engine.connect() as conn:
            left = conn.execute(select(jobs_table.c.id).where(jobs_table.c.id.in_(ids))).first()
            runs = JobRun.__table__
            open_run = conn.execute(
                select(runs.c.id).where(runs.c.job_id.in_(ids), runs.c.status.in_(active))
            ).first()
        return left is None and open_run is None

    try:
        wait_for(settled, timeout_s=timeout_s, interval_s=0.2)
    except AssertionError:
        pass  # the verdict says what is left


def verdict(cluster: Cluster, ids: list[str], fault_at: float, timeout_s: float = 45.0) -> Verdict:
    settle(cluster, ids, timeout_s)
    settled_at = time.time()
    probes = Counter(fire.job_id for fire in cluster.all_fires())
    starts = [fire.started_at.timestamp() for fire in cluster.all_fires() if fire.job_id in set(ids)]
    runs = JobRun.__table__
    with cluster.engine.connect() as conn:
        rows = conn.execute(
            select(runs.c.job_id, runs.c.status, runs.c.error).where(runs.c.job_id.in_(ids))
        ).all()
    by_job: dict[str, list[Any]] = {}
    for row in rows:
        by_job.setdefault(row.job_id, []).append(row)
    missed = interrupted = 0
    lost: list[str] = []
    for job_id in ids:
        if probes[job_id]:
            continue
        statuses = {row.status for row in by_job.get(job_id, [])}
        errors = " ".join(row.error or "" for row in by_job.get(job_id, []))
        if statuses == {"missed"}:
            missed += 1
        elif statuses == {"failed"} and "stopped" in errors:
            interrupted += 1
        else:
            lost.append(f"{job_id}: {sorted(statuses) or 'no run'} {errors[:120]}")
    unended = [f"{row.job_id}: {row.status}" for row in rows if row.status in ("running", "overrunning")]
    after = sorted(start - fault_at for start in starts if start > fault_at)
    return Verdict(
        due=len(ids),
        once=sum(1 for job_id in ids if probes[job_id] == 1),
        twice=sum(1 for job_id in ids if probes[job_id] > 1),
        missed=missed,
        interrupted=interrupted,
        lost=lost,
        unended=unended,
        first_run_after_fault_s=round(after[0], 3) if after else None,
        last_run_after_fault_s=round(after[-1], 3) if after else None,
        settled_after_fault_s=round(settled_at - fault_at, 3),
    )


def superseded_writes(cluster: Cluster) -> list[str]:
    """Claims and starts made under a fence lower than the recorded one after it was recorded.

    A newer leader records its fence before its first write; from then on the database
    refuses every write of an older fence. Timestamps are the writers' own clocks (one machine).
    """
    runs = JobRun.__table__
    state = ClusterState.__table__
    with cluster.engine.connect() as conn:
        fence, fence_at = conn.execute(select(state.c.fence, state.c.fence_at)).one()
        rows = conn.execute(
            select(runs.c.id, runs.c.fence, runs.c.created_at, runs.c.started_at, runs.c.worker).where(
                runs.c.fence < fence
            )
        ).all()
    late = []
    for row in rows:
        for what, moment in (("claimed", row.created_at), ("started", row.started_at)):
            if moment is not None and moment > fence_at:
                late.append(f"run {row.id} {what} by {row.worker} under fence {row.fence} at {moment}")
    return late


@pytest.fixture
def probe_url(mariadb_server: dict[str, Any]) -> Iterator[str]:
    """The probe's own database on the shared MariaDB: it stays up whatever the test breaks."""
    name = new_mariadb_database()
    yield mysql_url(name)
    drop_mariadb_database(name)


#: Who runs the runs: the leader's pool (the default), or every serving process (spreading).
MODES = {"leader": {}, "spread": {"SPREAD_RUNS": "true"}}
#: The burst faults hold in both modes.
both_modes = pytest.mark.parametrize("cluster", sorted(MODES), indirect=True)


@pytest.fixture
def cluster(
    request: pytest.FixtureRequest, mariadb_url: str, redis_url: str, probe_url: str, tmp_path: Path
) -> Iterator[Cluster]:
    """Two hosts x 3 workers on the shared MariaDB, each reaching Redis through its own proxy."""
    env = MODES[getattr(request, "param", "leader")]
    cluster = Cluster(
        mariadb_url, None, tmp_path, redis_target=("127.0.0.1", 6379), probe_url=probe_url, env=env
    )
    yield cluster
    cluster.close()


def start_hosts(cluster: Cluster, **env: str) -> tuple[Server, Server]:
    return cluster.host(**env), cluster.host(**env)


def assert_every_fire_time_ran_once(result: Verdict, interrupted_allowed: int = 0) -> None:
    assert result.twice == 0, result.figures()
    assert result.lost == [], result.lost[:10]
    assert result.unended == [], result.unended[:10]
    assert result.missed == 0, result.figures()
    assert result.interrupted <= interrupted_allowed, result.figures()
    assert result.once + result.interrupted == result.due, result.figures()


# A burst, and the leader broken while it runs it ------------------------------------------


def break_during_burst(
    cluster: Cluster,
    offset_s: float,
    fault: Callable[[], None],
    mend: Callable[[], None] | None = None,
    hold_s: float = 3 * LEASE_S,
) -> tuple[Verdict, float]:
    """Import a burst, apply `fault` `offset_s` after it is due (before, if negative), undo
    it with `mend` after `hold_s`, and judge; returns the verdict and when the fault came."""
    ids, due_at = burst(cluster)
    sleep_until(due_at + timedelta(seconds=offset_s))
    fault_at = time.time()
    try:
        fault()
        if mend is not None:
            time.sleep(hold_s)
    finally:
        if mend is not None:
            mend()
    return verdict(cluster, ids, fault_at), fault_at


@both_modes
def test_kill_9_of_the_leader_during_a_burst(cluster: Cluster) -> None:
    start_hosts(cluster)
    _, leader_pid = cluster.leader()
    # A worker of a master this test started, stopped by its pid.
    result, _ = break_during_burst(cluster, 0.25, lambda: os.kill(leader_pid, signal.SIGKILL))
    report("kill -9 of the leader 0.25 s into a burst of 600", **result.figures())
    # Runs that were executing in the killed process are cut short: closed failed, never rerun.
    assert_every_fire_time_ran_once(result, interrupted_allowed=MAX_WORKERS)


@both_modes
def test_sigterm_of_the_leaders_master_during_a_burst(cluster: Cluster) -> None:
    start_hosts(cluster)
    leading_host, _ = cluster.leader()
    # A deploy: the master stops its workers gracefully.
    result, _ = break_during_burst(cluster, 0.25, lambda: leading_host.signal(signal.SIGTERM))
    report("SIGTERM of the leader's master 0.25 s into a burst of 600", **result.figures())
    assert_every_fire_time_ran_once(result)


@pytest.mark.parametrize("mode", ["leader", "spread"])
def test_database_stopped_for_10_s_during_a_burst(
    redis_url: str, probe_url: str, tmp_path: Path, mode: str
) -> None:
    """Killed with -9 while start transactions commit: a start whose COMMIT got no answer is
    asked about once the database is back, and its runs run if it had landed (with spreading,
    five processes start batches at once, so a kill meets a COMMIT more often)."""
    database = PrivateMariaDB(tmp_path / "mariadb").install()
    cluster = Cluster(
        database.url, None, tmp_path, redis_target=("127.0.0.1", 6379), probe_url=probe_url, env=MODES[mode]
    )
    try:
        start_hosts(cluster)
        cluster.leader()
        result, fault_at = break_during_burst(cluster, 0.4, database.kill, database.start, hold_s=10)
        restarted_at = fault_at + 10
        after_restart = max(f.started_at.timestamp() for f in cluster.all_fires()) - restarted_at
        report(
            "database stopped 10 s, 0.4 s into a burst of 600",
            **result.figures(),
            last_run_after_restart_s=round(after_restart, 3),
        )
        assert_every_fire_time_ran_once(result)
        assert result.last_run_after_fault_s is not None and result.last_run_after_fault_s > 10
    finally:
        cluster.close()
        database.stop()


#: Start COMMITs whose answer is taken away in the test below (half of them had landed).
LOST_ANSWERS = 6


@pytest.mark.parametrize("mode", ["leader", "spread"])
def test_answers_to_start_commits_lost_during_a_burst(
    mariadb_url: str, redis_url: str, probe_url: str, tmp_path: Path, mode: str
) -> None:
    """What a database killed mid-COMMIT does, on purpose and every time: the answers to six
    start COMMITs never reach the processes (three had landed, three had not)."""
    eater = CommitAnswerEater("127.0.0.1", 3306)
    url = mariadb_url.replace("127.0.0.1:3306", f"127.0.0.1:{eater.port}")
    cluster = Cluster(
        url, None, tmp_path, redis_target=("127.0.0.1", 6379), probe_url=probe_url, env=MODES[mode]
    )
    try:
        start_hosts(cluster)
        cluster.leader()
        result, _ = break_during_burst(cluster, 0.0, lambda: eater.take(LOST_ANSWERS))
        report(
            f"answers to {LOST_ANSWERS} start COMMITs lost in a burst of 600",
            **result.figures(),
            **{f"commits_{outcome.replace(' ', '_')}": n for outcome, n in eater.eaten.items()},
        )
        assert eater.eaten == {"landed": LOST_ANSWERS // 2, "not landed": LOST_ANSWERS // 2}
        assert_every_fire_time_ran_once(result)
    finally:
        cluster.close()
        eater.close()


@pytest.mark.parametrize("offset_s", [0.25, -1.0], ids=["0.25s-into", "1s-before"])
@both_modes
def test_redis_cut_for_everyone_during_a_burst(cluster: Cluster, offset_s: float) -> None:
    """0.25 s into the burst, runs are in flight; 1 s before, the leader stops trusting its
    lease part-way through the burst and drops what it had not started, for the next term."""
    start_hosts(cluster)
    cluster.leader()
    proxies = list(cluster.proxies.values())

    def cut() -> None:
        for proxy in proxies:
            proxy.cut()

    def restore() -> None:
        for proxy in proxies:
            proxy.restore()

    result, fault_at = break_during_burst(cluster, offset_s, cut, restore)
    restored_at = fault_at + 3 * LEASE_S
    after_restore = max(f.started_at.timestamp() for f in cluster.all_fires()) - restored_at
    report(
        f"Redis cut for 6 s, {offset_s} s from the due time of a burst of 600",
        **result.figures(),
        last_run_after_restore_s=round(after_restore, 3),
    )
    assert_every_fire_time_ran_once(result)


@both_modes
def test_leader_partitioned_from_redis_is_fenced_out_at_the_database(cluster: Cluster) -> None:
    """The followers see the leader's Redis connection vanish and take over at once, while
    the old leader still trusts its lease: the database must refuse its writes."""
    start_hosts(cluster)
    leading_host, _ = cluster.leader()
    proxy = cluster.proxies[leading_host.name]
    result, _ = break_during_burst(cluster, -0.3, proxy.cut, proxy.restore)
    late = superseded_writes(cluster)
    report(
        "leader's host cut from Redis 0.3 s before a burst of 600",
        **result.figures(),
        superseded_writes=len(late),
    )
    assert late == [], late[:5]
    assert_every_fire_time_ran_once(result)


@both_modes
def test_frozen_leader_is_replaced_and_acts_on_nothing_when_it_thaws(cluster: Cluster) -> None:
    start_hosts(cluster)
    _, leader_pid = cluster.leader()
    result, _ = break_during_burst(
        cluster, 0.1, lambda: os.kill(leader_pid, signal.SIGSTOP), lambda: os.kill(leader_pid, signal.SIGCONT)
    )
    late = superseded_writes(cluster)
    report(
        "leader frozen (SIGSTOP) for 3 leases, 0.1 s into a burst of 600",
        **result.figures(),
        superseded_writes=len(late),
    )
    assert late == [], late[:5]
    assert_every_fire_time_ran_once(result)
    # Taken over while it was still frozen: its lease ran out, and the database ended the
    # write transaction it was frozen in, which held the row lock the new fence needs.
    assert result.first_run_after_fault_s is not None and result.first_run_after_fault_s < 2 * LEASE_S + 1


# Spreading: the processes that take the leader's runs, broken during a burst ----------------

spread_only = pytest.mark.parametrize("cluster", ["spread"], indirect=True)


def a_taker(cluster: Cluster) -> int:
    """A follower's pid (it takes runs), on the host that does not lead."""
    leading_host, _ = cluster.leader()
    return next(host for host in cluster.hosts if host is not leading_host).children()[0]


def run_queue_key(cluster: Cluster) -> str:
    with cluster.engine.connect() as conn:
        cluster_id = conn.execute(select(ClusterState.cluster_id)).scalar_one()
    return f"jobservice:{cluster_id}:runs"


@both_modes
def test_a_burst_runs_once_each_and_spread_runs_on_the_followers(cluster: Cluster) -> None:
    start_hosts(cluster)
    _, leader_pid = cluster.leader()
    ids, due_at = burst(cluster)
    result = verdict(cluster, ids, due_at.timestamp())
    pids = Counter(fire.pid for fire in cluster.all_fires())
    report(f"a burst of 600 on 2 hosts x 3 workers, {cluster.env or 'leader runs'}", **result.figures(),
           runs_per_pid=sorted(pids.values()))  # fmt: skip
    assert_every_fire_time_ran_once(result)
    if cluster.env:  # spreading: the leader claims, the five followers run
        assert leader_pid not in pids
        assert len(pids) >= 4, pids
    else:
        assert set(pids) == {leader_pid}


def a_running_follower(cluster: Cluster, leader_pid: int, timeout_s: float = 5.0) -> int:
    """The pid of a follower that has started a run and not finished it (polled)."""
    runs = JobRun.__table__

    def find() -> int | None:
        with cluster.engine.connect() as conn:
            workers = conn.execute(
                select(runs.c.worker).where(runs.c.status == "running", runs.c.started_at.is_not(None))
            ).scalars()
            pids = {int(worker.rsplit(":", 1)[1]) for worker in workers} - {leader_pid}
        return min(pids) if pids else None

    return wait_for(find, timeout_s=timeout_s, interval_s=0.01)


@spread_only
def test_kill_9_of_a_follower_running_a_spread_burst(cluster: Cluster) -> None:
    start_hosts(cluster)
    _, leader_pid = cluster.leader()
    killed: list[int] = []

    def kill() -> None:
        killed.append(a_running_follower(cluster, leader_pid))
        os.kill(killed[0], signal.SIGKILL)

    result, _ = break_during_burst(cluster, 0.0, kill)
    report("kill -9 of a follower running runs of a spread burst of 600", **result.figures())
    # What it had started is cut short and closed failed, naming it; what it had taken but
    # not started is adopted by the leader and run elsewhere.
    assert_every_fire_time_ran_once(result, interrupted_allowed=MAX_WORKERS)
    assert result.interrupted > 0
    with cluster.engine.connect() as conn:
        errors = conn.execute(select(JobRun.error).where(JobRun.status == "failed")).scalars().all()
    assert all(f":{killed[0]} stopped" in error for error in errors), errors[:3]


@spread_only
def test_a_follower_frozen_during_a_spread_burst(cluster: Cluster) -> None:
    start_hosts(cluster)
    pid = a_taker(cluster)
    result, _ = break_during_burst(
        cluster, 0.1, lambda: os.kill(pid, signal.SIGSTOP), lambda: os.kill(pid, signal.SIGCONT)
    )
    report("a follower frozen (SIGSTOP) for 3 leases, 0.1 s into a spread burst of 600", **result.figures())
    assert_every_fire_time_ran_once(result)


@spread_only
def test_the_run_queue_lost_during_a_spread_burst(cluster: Cluster) -> None:
    """Redis loses the queued runs (a restart without persistence, a flush): the claims are
    still in the database, unstarted, and the leader adopts them."""
    start_hosts(cluster)
    cluster.leader()
    key = run_queue_key(cluster)
    client = redis.Redis(port=6379)
    dropped: list[int] = []

    def drop() -> None:
        """Delete the queue the first time it holds runs, counting what it held."""
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            pipe = client.pipeline(transaction=True)
            queued, _ = pipe.llen(key).delete(key).execute()
            if queued:
                dropped.append(queued)
                return

    result, _ = break_during_burst(cluster, -0.1, drop)
    report("the run queue deleted during a spread burst of 600", **result.figures(), dropped=dropped)
    assert_every_fire_time_ran_once(result)
    assert dropped and dropped[0] > 0  # runs were lost from Redis, and ran anyway


@spread_only
def test_a_follower_host_cut_from_redis_during_a_spread_burst(cluster: Cluster) -> None:
    start_hosts(cluster)
    leading_host, _ = cluster.leader()
    other = next(host for host in cluster.hosts if host is not leading_host)
    proxy = cluster.proxies[other.name]
    result, _ = break_during_burst(cluster, 0.1, proxy.cut, proxy.restore)
    report("a following host cut from Redis 0.1 s into a spread burst of 600", **result.figures())
    assert_every_fire_time_ran_once(result)


@spread_only
def test_max_instances_holds_across_the_processes_taking_runs(cluster: Cluster) -> None:
    """A job firing every second whose runs take 2.5 s, max_instances 1: whichever follower
    takes a fire, none starts while another process runs the job; those fires are skipped."""
    host = cluster.host(workers=4)
    cluster.leader()
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=2)
    body = {"id": "wide", "func": "tests.jobfuncs:slow_probe", "args": [2.5], "trigger": "interval",
            "seconds": 1, "start_date": start.isoformat(), "max_instances": 1}  # fmt: skip
    assert host.post("/scheduler/jobs", body)[0] == 200
    time.sleep(10)
    assert host.delete("/scheduler/jobs/wide")[0] == 204
    time.sleep(3)
    fires = cluster.fires("wide")
    count, overlapping = overlaps(fires)
    with cluster.engine.connect() as conn:
        statuses = Counter(conn.execute(select(JobRun.status).where(JobRun.job_id == "wide")).scalars())
    report("max_instances 1 across 3 taking processes", runs=count, overlaps=overlapping,
           pids=len({f.pid for f in fires}), **statuses)  # fmt: skip
    assert count >= 3 and overlapping == 0
    assert statuses["skipped"] >= 3


@spread_only
def test_a_lone_worker_spreading_runs_runs_them_itself(cluster: Cluster) -> None:
    cluster.host(workers=1)
    _, leader_pid = cluster.leader()
    ids, due_at = burst(cluster, count=100, due_in_s=2.0)
    result = verdict(cluster, ids, due_at.timestamp())
    assert_every_fire_time_ran_once(result)
    assert {fire.pid for fire in cluster.all_fires()} == {leader_pid}


# Every run ends ---------------------------------------------------------------------------


def run_row(cluster: Cluster, job_id: str) -> Any:
    runs = JobRun.__table__
    with cluster.engine.connect() as conn:
        return conn.execute(select(runs).where(runs.c.job_id == job_id).order_by(runs.c.id.desc())).first()


def start_long_run(cluster: Cluster, host: Server, seconds: float) -> Any:
    body = {
        "id": "long",
        "func": "tests.jobfuncs:slow_probe",
        "args": [seconds],
        "trigger": "interval",
        "hours": 1,
    }
    assert host.post("/scheduler/jobs", body)[0] == 200
    assert host.post("/scheduler/jobs/long/run")[0] == 200
    wait_for(lambda: cluster.fires("long"), timeout_s=10)
    return run_row(cluster, "long")


def closed_as_stopped(cluster: Cluster, since: float) -> tuple[Any, float]:
    def closed() -> Any:
        row = run_row(cluster, "long")
        return row if row.status not in ("running", "overrunning") else None

    row = wait_for(closed, timeout_s=DEAD_RUN_BOUND_S + 10, interval_s=0.2)
    return row, time.time() - since


def test_a_run_whose_process_is_killed_is_closed_failed_naming_the_worker(cluster: Cluster) -> None:
    start_hosts(cluster)
    leading_host, leader_pid = cluster.leader()
    run = start_long_run(cluster, leading_host, 20)
    assert run.status == "running" and run.worker.endswith(f":{leader_pid}")
    killed_at = time.time()
    os.kill(leader_pid, signal.SIGKILL)
    row, after_s = closed_as_stopped(cluster, killed_at)
    report("run closed after kill -9 of its process", seconds=round(after_s, 2), error=row.error)
    assert row.status == "failed" and f"worker {run.worker} stopped" in row.error
    assert row.finished_at is not None
    assert after_s <= DEAD_RUN_BOUND_S
    assert [f.note for f in cluster.fires("long")] == ["start"]  # never run a second time


def test_a_run_outlasting_the_graceful_timeout_is_closed_failed(cluster: Cluster) -> None:
    cluster.host(), cluster.host()
    leading_host, leader_pid = cluster.leader()
    run = start_long_run(cluster, leading_host, 20)
    stopped_at = time.time()
    leading_host.signal(signal.SIGTERM)  # its gunicorn kills the worker after --graceful-timeout (10 s)
    row, after_s = closed_as_stopped(cluster, stopped_at)
    report("run closed after its worker outlasted the graceful timeout", seconds=round(after_s, 2))
    assert row.status == "failed" and f"worker {run.worker} stopped" in row.error
    assert after_s <= 10 + DEAD_RUN_BOUND_S
    assert [f.note for f in cluster.fires("long")] == ["start"]


def test_a_sigterm_leader_finishing_a_run_and_its_successor_never_overlap(cluster: Cluster) -> None:
    """max_instances holds across processes: while the old leader (SIGTERM, graceful stop)
    finishes a run, the new leader skips the job's fires instead of starting a second one."""
    cluster.host(), cluster.host()
    leading_host, _pid = cluster.leader()
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=2)
    body = {"id": "wide", "func": "tests.jobfuncs:slow_probe", "args": [4], "trigger": "interval",
            "seconds": 1, "start_date": start.isoformat(), "max_instances": 1}  # fmt: skip
    assert leading_host.post("/scheduler/jobs", body)[0] == 200
    wait_for(lambda: cluster.fires("wide"), timeout_s=10)
    leading_host.signal(signal.SIGTERM)  # its worker finishes the 4 s run, then exits
    time.sleep(9)
    fires = cluster.fires("wide")
    count, overlapping = overlaps(fires)
    with cluster.engine.connect() as conn:
        skipped = (
            conn.execute(select(JobRun.error).where(JobRun.job_id == "wide", JobRun.status == "skipped"))
            .scalars()
            .all()
        )
    report("SIGTERM'd leader finishing a run vs its successor", runs=count, overlaps=overlapping,
           skipped=len(skipped), pids=len({f.pid for f in fires}))  # fmt: skip
    assert len({f.pid for f in fires}) >= 2  # the successor ran it too, afterwards
    assert overlapping == 0
    assert any("already running in the cluster" in (e or "") for e in skipped)
