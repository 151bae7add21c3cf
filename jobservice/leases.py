"""The two leases an Elector can campaign for: a Redis lock, or an OS file lock for one host.

Neither knows about Flask; connections and paths are passed in.
"""

from __future__ import annotations

import fcntl
import os
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import redis
from redis.backoff import NoBackoff
from redis.exceptions import LockError, LockNotOwnedError, ResponseError
from redis.lock import Lock
from redis.retry import Retry

from .identity import worker_id

# Redis keys, under the deployment's prefix (one prefix per shared database).
LEADER_KEY = "{prefix}:leader"  # the lock; its value is "host:pid|client-id|nonce"
FENCE_KEY = "{prefix}:fence"  # INCR on every acquisition: the fencing number


@dataclass(frozen=True)
class LeaderInfo:
    """Who holds the lease: `worker` is host:pid; `token` identifies this term."""

    worker: str
    fence: int | None
    token: str


class Lease(Protocol):
    def acquire(self) -> int | None:
        """Try to take the lease; the new fencing number, or None if someone holds it."""

    def renew(self) -> bool:
        """Extend the lease for another term; False if it is no longer ours."""

    def release(self) -> None:
        """Give the lease up (only if it is still ours)."""

    def leader(self) -> LeaderInfo | None:
        """The current holder, if any."""

    def seconds_left(self) -> float | None:
        """Time before the current holder's lease expires, if it can expire."""

    def holder_is_gone(self, info: LeaderInfo) -> bool:
        """True when the holder is known dead before its lease runs out."""

    def break_lease(self, info: LeaderInfo) -> None:
        """Remove a dead holder's lease, only if it is still that holder's."""

    def close(self) -> None:
        """Drop connections and file handles."""


class RedisLease:
    """redis-py's token-checked Lock, with a fencing counter beside it.

    The lease is held over one dedicated connection whose client id is part of the
    token. When the holder's process dies, Redis drops that connection at once, so
    the others can see it (`holder_is_gone`) without waiting for the lease to expire.
    """

    def __init__(self, url: str, prefix: str, lease_s: float, fence_floor: Callable[[], int]) -> None:
        self._url = url
        self._lease_s = lease_s
        self._timeout_s = max(0.2, min(1.0, lease_s / 4))
        self._lock_name = LEADER_KEY.format(prefix=prefix)
        self._fence_key = FENCE_KEY.format(prefix=prefix)
        self._fence_floor = fence_floor
        self._can_list_clients = True
        self._connected: tuple[redis.Redis, Lock] | None = None
        self._connecting = threading.Lock()

    @property
    def _client(self) -> redis.Redis:
        return self._connect()[0]

    @property
    def _lock(self) -> Lock:
        return self._connect()[1]

    def _connect(self) -> tuple[redis.Redis, Lock]:
        """Open the lease's own connection on first use: a process may start while Redis is down.

        Once: the elector and request threads (reading the leader) may get here together, and
        a second connection would replace the Lock holding the token the elector just won."""
        connected = self._connected
        if connected is None:
            with self._connecting:
                connected = self._connected = self._connected or self._open()
        return connected

    def _open(self) -> tuple[redis.Redis, Lock]:
        # No retries: a renewal must fail fast, not outlive the lease retrying.
        client = redis.Redis.from_url(
            self._url,
            single_connection_client=True,
            socket_timeout=self._timeout_s,
            socket_connect_timeout=self._timeout_s,
            retry=Retry(NoBackoff(), 0),
        )
        lock = Lock(client, self._lock_name, timeout=self._lease_s, blocking=False, thread_local=False)
        return client, lock

    def acquire(self) -> int | None:
        token = f"{worker_id()}|{self._client.client_id()}|{secrets.token_hex(4)}"
        if not self._lock.acquire(token=token):
            return None
        try:
            fence = int(self._client.incr(self._fence_key))
            floor = self._fence_floor()
        except Exception:
            self.release()  # without a fence we must not lead
            raise
        if fence <= floor:
            # Redis lost the counter (a restart without persistence): jump past
            # every fence handed out before, so fences never go backwards.
            fence = int(self._client.incrby(self._fence_key, floor - fence + 1))
        return fence

    def renew(self) -> bool:
        try:
            return bool(self._lock.reacquire())
        except LockNotOwnedError:
            return False

    def release(self) -> None:
        try:
            self._lock.release()
        except LockError:
            pass  # expired or taken over meanwhile: nothing of ours to release

    def leader(self) -> LeaderInfo | None:
        token, fence = self._client.mget(self._lock_name, self._fence_key)
        if token is None:
            return None
        text = token.decode()
        return LeaderInfo(text.split("|", 1)[0], int(fence) if fence else None, text)

    def seconds_left(self) -> float | None:
        ttl_ms = self._client.pttl(self._lock_name)
        return ttl_ms / 1000 if ttl_ms >= 0 else None

    def holder_is_gone(self, info: LeaderInfo) -> bool:
        if not self._can_list_clients:
            return False
        parts = info.token.split("|")
        if len(parts) != 3 or not parts[1].isdigit():
            return False
        try:
            return not self._client.client_list(client_id=[parts[1]])
        except ResponseError:
            # CLIENT LIST is often forbidden on managed Redis: rely on expiry alone.
            self._can_list_clients = False
            return False

    def break_lease(self, info: LeaderInfo) -> None:
        try:
            self._lock.do_release(info.token)
        except LockNotOwnedError:
            pass  # already gone or replaced

    def close(self) -> None:
        with self._connecting:
            if self._connected is not None:
                self._connected[0].close()
                self._connected = None


class FileLease:
    """An OS lock (lockf) on a file: held while the process lives, freed by the kernel.

    POSIX record locks are per process: a forked child does not inherit the lock, and
    closing *any* descriptor of the file drops it, so every open and close happens
    here, under one mutex. The file holds "fence worker".
    """

    def __init__(self, path: Path, fence_floor: Callable[[], int] = lambda: 0) -> None:
        self._path = path
        self._fence_floor = fence_floor
        self._fd: int | None = None
        self._mutex = threading.Lock()

    def acquire(self) -> int | None:
        with self._mutex:
            if self._fd is not None:
                return self._read(self._fd)[0]
            fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                return None
            try:
                # Past every fence the database has seen (a cluster that used Redis before).
                fence = max(self._read(fd)[0] or 0, self._fence_floor()) + 1
            except Exception:
                os.close(fd)  # without a fence we must not lead
                raise
            self._fd = fd
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{fence} {worker_id()}\n".encode(), 0)
            os.fsync(fd)
            return fence

    def renew(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        with self._mutex:
            if self._fd is not None:
                os.close(self._fd)  # closing drops the lock
                self._fd = None

    def leader(self) -> LeaderInfo | None:
        with self._mutex:
            if self._fd is not None:
                fence, worker = self._read(self._fd)
            elif self._locked_elsewhere():
                fence, worker = self._read_unlocked()
            else:
                return None
        return LeaderInfo(worker, fence, f"{fence} {worker}")

    def seconds_left(self) -> float | None:
        return None  # held as long as its process lives

    def holder_is_gone(self, info: LeaderInfo) -> bool:
        return False  # the kernel frees the lock the moment its holder dies

    def break_lease(self, info: LeaderInfo) -> None:
        """Nothing to break: a dead holder's lock is already gone."""

    def close(self) -> None:
        self.release()

    def _locked_elsewhere(self) -> bool:
        """Probe with a shared lock; we hold no lock on the file, so closing is safe."""
        try:
            fd = os.open(self._path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return False
        try:
            fcntl.lockf(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return True
        finally:
            os.close(fd)
        return False

    def _read_unlocked(self) -> tuple[int | None, str]:
        """Read through a new descriptor: only safe while this process holds no lock."""
        try:
            fd = os.open(self._path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None, ""
        try:
            return self._read(fd)
        finally:
            os.close(fd)

    @staticmethod
    def _read(fd: int) -> tuple[int | None, str]:
        words = os.pread(fd, 512, 0).decode(errors="replace").split()
        if len(words) == 2 and words[0].isdigit():
            return int(words[0]), words[1]
        return None, ""
