"""SCHEDULER_EXECUTOR=rq with real processes: gunicorn masters standing for hosts, real
`flask jobservice worker` RQ workers (forking a work-horse per run), the shared MariaDB and
Redis. Verdicts come from what the jobs wrote (`test_fires`) and from the run history."""

from __future__ import annotations

import os
import secrets
import signal
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from rq import Queue
from rq.registry import FailedJobRegistry
from sqlalchemy import select

from jobservice.rqexec import PERFORM
from tests.cluster import BIN, Cluster, Server, overlaps, server_env
from tests.conftest import wait_for
from tests.orm import JobRun

pytestmark = pytest.mark.processes

LEASE_S = 1.0
#: A run whose process died is closed within this long (five leases without a heartbeat,
#: then the leader's next sweep).
DEAD_RUN_BOUND_S = 8 * LEASE_S


def report(name: str, **figures: Any) -> None:
    print(f"\n[measured] {name}: " + ", ".join(f"{k}={v}" for k, v in figures.items()))


class RQCluster(Cluster):
    """Hosts and RQ workers on one database, Redis, and a queue prefix of this test's own."""

    def __init__(self, database_url: str, redis_url: str, log_dir: Path) -> None:
        super().__init__(database_url, redis_url, log_dir)
        self.env = {
            "SCHEDULER_EXECUTOR": "rq",
            "RQ_QUEUE_PREFIX": f"test-{secrets.token_hex(4)}-",
            "LEADER_LEASE_SECONDS": str(LEASE_S),
        }
        self.workers: list[Server] = []

    def host(self, workers: int = 3, wait: bool = True, **env: str) -> Server:
        return super().host(workers, wait, **{**self.env, **env})

    def worker(self, *queues: str) -> Server:
        name = f"rqworker{len(self.workers) + 1}"
        argv = [str(BIN / "flask"), "--app", "run", "jobservice", "worker"]
        for queue in queues or ("default",):
            argv += ["--queue", queue]
        env = server_env(self.database_url, self.redis_url, **self.env)
        server = Server(name, argv, env, 0, self.log_dir / f"{name}.log").start()
        self.workers.append(server)
        return server

    def serving(self, workers: int) -> Server:
        """One host of one gunicorn worker, and this many RQ workers, ready."""
        host = self.host(workers=1)
        for _ in range(workers):
            self.worker()
        self.wait_workers(host, workers)
        return host

    def rq_status(self, host: Server) -> dict[str, Any]:
        return host.get("/scheduler")[1]["rq"]

    def wait_workers(self, host: Server, count: int) -> None:
        wait_for(lambda: self.rq_status(host)["workers"] == count, timeout_s=30)

    def post_job(self, host: Server, **job: Any) -> None:
        status, body = host.post("/scheduler/jobs", job)
        assert status == 200, body

    def runs(self, job_id: str) -> list[JobRun]:
        query = select(JobRun.__table__).where(JobRun.job_id == job_id).order_by(JobRun.id)
        with self.engine.connect() as conn:
            return list(conn.execute(query))

    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis_url or "")

    def close(self) -> None:
        for worker in self.workers:
            worker.stop()
        super().close()


@pytest.fixture
def rq_cluster(mariadb_url: str, redis_url: str, tmp_path: Path) -> Iterator[RQCluster]:
    cluster = RQCluster(mariadb_url, redis_url, tmp_path)
    yield cluster
    cluster.close()


def at(seconds: float) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat()


def horse_of(cluster: RQCluster, job_id: str, note: str = "start", count: int = 1) -> int:
    """The pid of the work-horse that wrote the `count`-th `note` row of this job."""
    rows = wait_for(
        lambda: [f for f in cluster.fires(job_id) if f.note == note][count - 1 :] or None, timeout_s=30
    )
    return rows[0].pid


def parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def test_two_hosts_and_two_workers_run_each_fire_once_through_kills(rq_cluster: RQCluster) -> None:
    first, _second = rq_cluster.host(), rq_cluster.host()
    rq_cluster.worker(), rq_cluster.worker()
    rq_cluster.wait_workers(first, 2)
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=2)
    rq_cluster.post_job(
        first, id="tick", func="tests.jobfuncs:slow", args=[0.4], trigger="interval", seconds=1,
        start_date=start.isoformat(),
    )  # fmt: skip
    time.sleep(22)
    steady = [f for f in rq_cluster.fires("tick") if f.note == "start"]
    times = sorted(f.scheduled_at for f in steady)
    gaps = [(b - a).total_seconds() for a, b in zip(times, times[1:], strict=False)]
    duplicates = sum(n - 1 for n in Counter(times).values() if n > 1)
    horses = {f.pid for f in steady}
    report("rq: 2 hosts x 3 + 2 RQ workers, 1 s job, 20 s", fires=len(times), duplicates=duplicates,
           largest_gap_s=max(gaps), horses=len(horses))  # fmt: skip
    assert duplicates == 0
    assert len(times) >= 19 and max(gaps) <= 1.5
    serving = {pid for h in rq_cluster.hosts for pid in h.children()}
    assert not horses & serving  # run by RQ work-horses, not by the hosts' workers

    # kill -9 the leader, then a worker while its horse runs a tick
    _host, leader_pid = rq_cluster.leader()
    os.kill(leader_pid, signal.SIGKILL)
    killed = time.time()
    target = rq_cluster.workers[0]

    def running_on_target() -> int | None:
        fires = rq_cluster.fires("tick")
        ended = {(f.scheduled_at, f.pid) for f in fires if f.note == "end"}
        for f in reversed(fires):
            if f.note == "start" and (f.scheduled_at, f.pid) not in ended and f.pid in target.children():
                return f.pid
        return None

    wait_for(running_on_target, timeout_s=20, interval_s=0.02)
    target.signal(signal.SIGKILL)
    time.sleep(DEAD_RUN_BOUND_S + 4)
    fires = [f for f in rq_cluster.fires("tick") if f.note == "start"]
    after = Counter(f.scheduled_at for f in fires)
    runs = rq_cluster.runs("tick")
    claims = Counter((r.scheduled_at, r.attempt) for r in runs if r.status not in ("missed",))
    first_after = min(
        (f.started_at.timestamp() for f in fires if f.started_at.timestamp() > killed), default=None
    )
    report("rq: after kill -9 of the leader and of a worker", fires=len(fires),
           duplicates=sum(n - 1 for n in after.values() if n > 1),
           next_fire_after_kill_s=round(first_after - killed, 2) if first_after else None,
           failed=[r.error.split(":")[0] for r in runs if r.status == "failed"])  # fmt: skip
    assert max(after.values()) == 1  # one run per fire time
    assert max(claims.values()) == 1
    assert any(r.status == "failed" and "stopped: no heartbeat" in (r.error or "") for r in runs)
    assert not [r for r in runs if r.status in ("running", "overrunning") and r.started_at is not None
                and (datetime.now(UTC) - r.started_at.replace(tzinfo=UTC)).total_seconds() > 5]  # fmt: skip


def test_a_run_past_its_timeout_is_stopped_and_the_next_fire_runs(rq_cluster: RQCluster) -> None:
    host = rq_cluster.serving(workers=1)
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=2)
    rq_cluster.post_job(
        host, id="hung", func="tests.jobfuncs:sleepy", args=[60], trigger="interval", seconds=6,
        start_date=start.isoformat(), timeout_s=2,
    )  # fmt: skip
    first = wait_for(
        lambda: [r for r in rq_cluster.runs("hung") if r.status == "failed"] or None, timeout_s=20
    )
    row = first[0]
    took = (row.finished_at - row.started_at).total_seconds()
    report("rq: run stopped at timeout_s=2", took_s=round(took, 2), error=row.error.splitlines()[0])
    assert row.error.startswith("TimedOut: timed out after 2 s")
    assert 2 <= took < 4
    wait_for(lambda: len([f for f in rq_cluster.fires("hung") if f.note == "start"]) >= 2, timeout_s=15)
    assert [f.note for f in rq_cluster.fires("hung")].count("end") == 0  # never ran past the timeout
    assert "jobservice_rq_timeouts_total 1.0" in host.get_text("/metrics")


def test_failing_twice_then_succeeding_on_rq_gives_three_attempts(rq_cluster: RQCluster) -> None:
    host = rq_cluster.serving(workers=1)
    rq_cluster.post_job(
        host, id="flaky", func="tests.jobfuncs:flaky", args=[2], trigger="date", run_date=at(1),
        retries=3, retry_delay_s=1,
    )  # fmt: skip
    wait_for(
        lambda: [r.status for r in rq_cluster.runs("flaky")] == ["failed", "failed", "succeeded"],
        timeout_s=30,
    )
    rows = rq_cluster.runs("flaky")
    assert [r.attempt for r in rows] == [1, 2, 3] and len({r.scheduled_at for r in rows}) == 1
    gaps = [(b.started_at - a.finished_at).total_seconds() for a, b in zip(rows, rows[1:], strict=False)]
    report(
        "rq: retries=3, retry_delay_s=1", gaps_s=[round(g, 2) for g in gaps], workers=[r.worker for r in rows]
    )
    assert 1 <= gaps[0] < 2.5 and 2 <= gaps[1] < 3.5
    assert all(r.worker and r.worker.split(":")[0] for r in rows)


def test_killed_horse_and_killed_worker_close_the_run_failed_and_it_is_retried_once(
    rq_cluster: RQCluster,
) -> None:
    host = rq_cluster.serving(workers=2)
    rq_cluster.post_job(
        host, id="long", func="tests.jobfuncs:sleepy", args=[30], trigger="date", run_date=at(1),
        retries=1, retry_delay_s=0,
    )  # fmt: skip
    horse = horse_of(rq_cluster, "long")
    os.kill(horse, signal.SIGKILL)
    killed = time.time()
    wait_for(
        lambda: [r.status for r in rq_cluster.runs("long")][:1] == ["failed"], timeout_s=DEAD_RUN_BOUND_S + 5
    )
    closed_s = time.time() - killed
    first = rq_cluster.runs("long")[0]
    assert f":{horse} " in first.worker + " " and f"worker {first.worker} stopped" in first.error
    failed_in_rq = FailedJobRegistry(
        rq_cluster.env["RQ_QUEUE_PREFIX"] + "default", connection=rq_cluster.redis()
    )
    assert len(failed_in_rq.get_job_ids()) == 1  # RQ's verdict on the same RQ job: failed, not requeued
    second_horse = horse_of(rq_cluster, "long", count=2)  # the retry, on either worker
    worker = parent_of(second_horse)
    assert worker in (w.pid for w in rq_cluster.workers)
    os.kill(worker, signal.SIGKILL)  # the worker: its horse dies with it
    killed = time.time()
    wait_for(
        lambda: [r.status for r in rq_cluster.runs("long")] == ["failed", "failed"],
        timeout_s=DEAD_RUN_BOUND_S + 5,
    )
    closed2_s = time.time() - killed
    rows = rq_cluster.runs("long")
    report("rq: kill -9 of the horse, then of the worker, of a 30 s job with retries=1",
           first_closed_s=round(closed_s, 2), second_closed_s=round(closed2_s, 2),
           errors=[r.error.split(":")[0] for r in rows])  # fmt: skip
    assert [r.attempt for r in rows] == [1, 2]
    assert f":{second_horse}" in rows[1].worker and "stopped" in rows[1].error
    assert closed_s <= DEAD_RUN_BOUND_S + 1 and closed2_s <= DEAD_RUN_BOUND_S + 1
    time.sleep(2)
    assert len(rq_cluster.runs("long")) == 2  # the last failure is final
    assert not Path(f"/proc/{second_horse}").exists() or _zombie(second_horse)


def _zombie(pid: int) -> bool:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"


def test_max_instances_holds_across_two_workers(rq_cluster: RQCluster) -> None:
    host = rq_cluster.serving(workers=2)
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=2)
    rq_cluster.post_job(
        host, id="wide", func="tests.jobfuncs:slow", args=[2.5], trigger="interval", seconds=1,
        start_date=start.isoformat(), max_instances=1,
    )  # fmt: skip
    time.sleep(12)
    fires = rq_cluster.fires("wide")
    count, overlapping = overlaps(fires)
    runs = rq_cluster.runs("wide")
    skipped = [r for r in runs if r.status == "skipped"]
    report("rq: max_instances=1, 2.5 s job every 1 s, 2 workers", runs=count, overlaps=overlapping,
           skipped=len(skipped))  # fmt: skip
    assert count >= 3 and overlapping == 0
    assert skipped and "already running in the cluster" in skipped[0].error


def test_queues_route_jobs_and_health_metrics_and_scheduler_show_them(rq_cluster: RQCluster) -> None:
    host = rq_cluster.host(workers=1)
    status = rq_cluster.rq_status(host)
    assert status == {"workers": 0, "queues": {"default": 0}}
    health = host.get("/health")[1]
    assert health["executor"] == "rq" and any("no RQ worker" in r for r in health["reasons"])
    rq_cluster.post_job(host, id="waiting", func="tests.jobfuncs:record", trigger="date", run_date=at(0.5))
    rq_cluster.post_job(
        host, id="big", func="tests.jobfuncs:record", trigger="date", run_date=at(0.5), queue="heavy"
    )
    queued = {"default": 1, "heavy": 1}
    wait_for(lambda: rq_cluster.rq_status(host)["queues"] == queued, timeout_s=10)  # waiting in RQ
    rq_cluster.worker("default")
    wait_for(lambda: [r.status for r in rq_cluster.runs("waiting")] == ["succeeded"], timeout_s=20)
    time.sleep(1)
    assert rq_cluster.rq_status(host) == {"workers": 1, "queues": {"default": 0, "heavy": 1}}
    assert [r.started_at for r in rq_cluster.runs("big")] == [None]  # only a heavy worker takes it
    rq_cluster.worker("heavy")
    wait_for(lambda: [r.status for r in rq_cluster.runs("big")] == ["succeeded"], timeout_s=20)
    status = rq_cluster.rq_status(host)
    assert status == {"workers": 2, "queues": {"default": 0, "heavy": 0}}
    rq_cluster.post_job(host, id="bad", func="tests.jobfuncs:fail", trigger="date", run_date=at(0.5))
    wait_for(lambda: [r.status for r in rq_cluster.runs("bad")] == ["failed"], timeout_s=20)
    text = host.get_text("/metrics")
    assert 'jobservice_rq_runs_total{status="succeeded"} 2.0' in text
    assert 'jobservice_rq_runs_total{status="failed"} 1.0' in text
    assert "jobservice_rq_workers 2.0" in text
    assert 'jobservice_rq_queue_depth{queue="heavy"} 0.0' in text


def test_sigterm_lets_the_worker_finish_its_run(rq_cluster: RQCluster) -> None:
    host = rq_cluster.serving(workers=1)
    (worker,) = rq_cluster.workers
    rq_cluster.post_job(
        host, id="finish", func="tests.jobfuncs:slow", args=[2], trigger="date", run_date=at(0.5)
    )
    horse_of(rq_cluster, "finish")
    worker.signal(signal.SIGTERM)  # RQ's warm shutdown
    assert worker.proc is not None
    worker.proc.wait(timeout=30)
    (run,) = rq_cluster.runs("finish")
    assert run.status == "succeeded"
    assert [f.note for f in rq_cluster.fires("finish")] == ["start", "end"]


def test_a_message_delivered_twice_or_of_a_replaced_claim_starts_nothing(rq_cluster: RQCluster) -> None:
    host = rq_cluster.serving(workers=1)
    rq_cluster.post_job(host, id="once", func="tests.jobfuncs:record", trigger="date", run_date=at(0.5))
    wait_for(lambda: [r.status for r in rq_cluster.runs("once")] == ["succeeded"], timeout_s=20)
    (run,) = rq_cluster.runs("once")
    queue = Queue(rq_cluster.env["RQ_QUEUE_PREFIX"] + "default", connection=rq_cluster.redis())
    again = queue.enqueue_call(
        PERFORM, args=(run.id, run.claim), job_id=f"again-{run.id}"
    )  # RQ delivers twice
    stale = queue.enqueue_call(PERFORM, args=(run.id, "0" * 16), job_id=f"stale-{run.id}")  # a replaced claim
    for job in (again, stale):
        wait_for(lambda job=job: job.get_status(refresh=True) == "finished", timeout_s=20)
        assert job.return_value().startswith("not started")
    assert len(rq_cluster.fires("once")) == 1 and len(rq_cluster.runs("once")) == 1


def test_runs_queued_before_the_jobs_last_fire_was_claimed_still_run(rq_cluster: RQCluster) -> None:
    """The store deletes a job when its last fire is claimed; its earlier runs may still be
    waiting in RQ: they run with the definition the leader fired, none is missed."""
    host = rq_cluster.host(workers=1)
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=1)
    rq_cluster.post_job(
        host, id="ending", func="tests.jobfuncs:record", trigger="interval", seconds=1,
        start_date=start.isoformat(), end_date=(start + timedelta(seconds=3)).isoformat(),
    )  # fmt: skip
    wait_for(lambda: host.get("/scheduler/jobs/ending")[0] == 404, timeout_s=15)  # last fire claimed
    assert len(rq_cluster.runs("ending")) == 4 and rq_cluster.fires("ending") == []  # all queued
    rq_cluster.worker()
    wait_for(lambda: [r.status for r in rq_cluster.runs("ending")] == ["succeeded"] * 4, timeout_s=20)
    assert len(rq_cluster.fires("ending")) == 4


def test_run_now_on_rq_is_retried_too(rq_cluster: RQCluster) -> None:
    host = rq_cluster.serving(workers=1)
    rq_cluster.post_job(
        host, id="manual", func="tests.jobfuncs:flaky", args=[99], trigger="date",
        run_date="2999-01-01T00:00:00+00:00", retries=1, retry_delay_s=0,
    )  # fmt: skip
    assert host.post("/scheduler/jobs/manual/run")[0] == 200
    wait_for(lambda: [r.status for r in rq_cluster.runs("manual")] == ["failed", "failed"], timeout_s=20)
    assert [(r.trigger, r.attempt) for r in rq_cluster.runs("manual")] == [("manual", 1), ("manual", 2)]
    text = host.get_text("/metrics")
    assert (
        "jobservice_rq_retries_total 1.0" in text and 'jobservice_rq_runs_total{status="failed"} 2.0' in text
    )
