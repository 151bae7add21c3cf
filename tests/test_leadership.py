"""Leases and the elector, on a real Redis and real file locks."""

from __future__ import annotations

import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.exceptions import LockError

from jobservice.leadership import Elector
from jobservice.leases import FileLease, RedisLease
from tests.cluster import RedisServer, free_port
from tests.conftest import wait_for

LEASE_S = 1.0


@pytest.fixture
def prefix() -> str:
    return f"jobservice-test:{secrets.token_hex(6)}"


def lease(url: str, prefix: str, floor: int = 0) -> RedisLease:
    return RedisLease(url, prefix, LEASE_S, lambda: floor)


def test_only_one_holder_and_fences_increase(redis_url: str, prefix: str) -> None:
    a, b = lease(redis_url, prefix), lease(redis_url, prefix)
    first = a.acquire()
    assert first is not None and b.acquire() is None
    assert b.leader().fence == first and b.leader().worker == a.leader().worker
    a.release()
    second = b.acquire()
    assert second == first + 1
    a.close(), b.close()


def test_release_and_renew_are_token_checked(redis_url: str, prefix: str) -> None:
    a, b = lease(redis_url, prefix), lease(redis_url, prefix)
    a.acquire()
    b.release()  # not its lease: nothing happens
    assert b.acquire() is None
    time.sleep(LEASE_S + 0.2)  # a's lease expires unrenewed
    assert b.acquire() is not None
    assert a.renew() is False  # a cannot renew what b now holds
    a.release()
    assert a.leader().token == b.leader().token
    a.close(), b.close()


def test_fence_never_goes_below_the_recorded_floor(redis_url: str, prefix: str) -> None:
    """After a Redis restart without persistence the counter starts again from zero."""
    assert lease(redis_url, prefix, floor=41).acquire() == 42


def test_a_dead_holder_is_seen_before_its_lease_expires(redis_url: str, prefix: str) -> None:
    holder, follower = RedisLease(redis_url, prefix, 30.0, lambda: 0), lease(redis_url, prefix)
    holder.acquire()
    info = follower.leader()
    assert follower.holder_is_gone(info) is False
    holder.close()  # its connection drops, as when the process dies
    assert wait_for(lambda: follower.holder_is_gone(info), timeout_s=2)
    follower.break_lease(info)
    assert follower.acquire() is not None
    follower.close()


def test_break_lease_only_removes_that_holders_lease(redis_url: str, prefix: str) -> None:
    a, b = lease(redis_url, prefix), lease(redis_url, prefix)
    a.acquire()
    stale = a.leader()
    a.release()
    b.acquire()
    a.break_lease(stale)  # the dead holder's token no longer matches: b keeps it
    assert a.leader().token == b.leader().token
    a.close(), b.close()


class Roles:
    def __init__(self) -> None:
        self.changes: list[int | None] = []

    def __call__(self, fence: int | None, reason: str) -> None:
        self.changes.append(fence)


def test_first_use_from_several_threads_keeps_one_connection(redis_url: str, prefix: str) -> None:
    """The elector campaigns while /health and /metrics read the leader on their own threads:
    the lease's connection is opened once, so the term just won can be renewed (a second
    connection used to replace the first, and with it the lock holding the token)."""
    failures = 0
    for attempt in range(40):
        shared = lease(redis_url, f"{prefix}:{attempt}")
        barrier = threading.Barrier(5)
        won: list[int | None] = []

        def campaign(
            shared: RedisLease = shared, barrier: threading.Barrier = barrier, won: list[int | None] = won
        ) -> None:
            barrier.wait()
            won.append(shared.acquire())

        def look(shared: RedisLease = shared, barrier: threading.Barrier = barrier) -> None:
            barrier.wait()
            shared.leader()

        threads = [threading.Thread(target=campaign)] + [threading.Thread(target=look) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert won[0] is not None
        try:
            renewed = shared.renew()
        except LockError:
            renewed = False
        failures += not renewed
        shared.release()
        shared.close()
    assert failures == 0


@pytest.fixture
def electors() -> Iterator[list[Elector]]:
    made: list[Elector] = []
    yield made
    for elector in made:
        elector.stop(release=True)
        elector.lease.close()


def elect(made: list[Elector], url: str, prefix: str) -> tuple[Elector, Roles]:
    roles = Roles()
    elector = Elector(lease(url, prefix), LEASE_S, roles)
    made.append(elector)
    elector.start()
    return elector, roles


def test_one_elector_leads_and_a_release_hands_over_at_once(
    redis_url: str, prefix: str, electors: list[Elector]
) -> None:
    (a, _), (b, _) = elect(electors, redis_url, prefix), elect(electors, redis_url, prefix)
    leader, follower = wait_for(lambda: (a, b) if a.fence() else (b, a) if b.fence() else None)
    assert follower.fence() is None
    old_fence = leader.fence()
    released_at = time.monotonic()
    leader.stop(release=True)
    follower.poke()  # what the "released" message does
    wait_for(lambda: follower.fence() is not None, timeout_s=2)
    assert time.monotonic() - released_at < 0.5
    assert follower.fence() == old_fence + 1


def test_a_leader_that_cannot_renew_steps_down_within_its_lease(
    tmp_path: Path, prefix: str, electors: list[Elector]
) -> None:
    server = RedisServer(free_port(), tmp_path).start()
    try:
        elector, roles = elect(electors, server.url, prefix)
        wait_for(lambda: elector.fence() is not None)
        server.stop()
        stopped_at = time.monotonic()
        wait_for(lambda: elector.fence() is None, timeout_s=LEASE_S + 1)
        assert time.monotonic() - stopped_at <= LEASE_S  # before anyone else could hold the lease
        wait_for(lambda: roles.changes[-1] is None, timeout_s=LEASE_S + 1)
        server.start()
        wait_for(lambda: elector.fence() is not None, timeout_s=5)
    finally:
        server.stop()


def hold_file_lock(path: Path) -> subprocess.Popen[str]:
    code = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from jobservice.leases import FileLease\n"
        f"lease = FileLease(Path({str(path)!r}))\n"
        "print(lease.acquire(), flush=True)\n"
        "time.sleep(60)\n"
    )
    return subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parent.parent
    )


def test_file_lease_is_held_by_one_process_and_freed_when_it_dies(tmp_path: Path) -> None:
    path = tmp_path / "leader.lock"
    holder = hold_file_lock(path)
    try:
        assert holder.stdout is not None and int(holder.stdout.readline()) == 1
        ours = FileLease(path)
        assert ours.acquire() is None
        assert ours.leader().worker.endswith(f":{holder.pid}") and ours.leader().fence == 1
        holder.kill()  # the kernel frees the lock at once
        holder.wait()
        assert ours.acquire() == 2
        assert ours.renew() is True
        assert ours.leader().fence == 2
        ours.release()
        assert ours.leader() is None
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()


def test_redis_error_while_campaigning_is_survived(prefix: str, electors: list[Elector]) -> None:
    unreachable = f"redis://127.0.0.1:{free_port()}/0"
    elector, _ = elect(electors, unreachable, prefix)
    time.sleep(0.6)
    assert elector.fence() is None and elector._thread is not None and elector._thread.is_alive()
