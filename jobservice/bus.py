"""Messages between the processes of one deployment: "a job changed", "the lease is free".

With Redis this is pub/sub; on one host without Redis, a file whose change time is
polled. A lost message only delays the leader until its next timer, so publishing
never raises.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import redis

logger = logging.getLogger(__name__)

CHANNEL = "{prefix}:events"
WAKEUP = "wakeup"  # the job store or the cluster state changed
RELEASED = "released"  # the leader let its lease go: campaign now
FILE_POLL_S = 0.1
MAX_FILE_BYTES = 65536
#: How long a process waits before it tries Redis again (the bus, the spread takers).
RECONNECT_S = 1.0

Handler = Callable[[str], None]


class Bus(Protocol):
    def publish(self, message: str) -> None: ...

    def listen(self, handler: Handler) -> None: ...

    def close(self) -> None: ...


class RedisBus:
    """Redis pub/sub on one channel per deployment."""

    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self._client = client
        self._channel = CHANNEL.format(prefix=prefix)
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def publish(self, message: str) -> None:
        try:
            self._client.publish(self._channel, message)
        except redis.RedisError as exc:
            logger.warning("Could not publish %r: %s", message, exc)

    def listen(self, handler: Handler) -> None:
        self._thread = threading.Thread(
            target=self._listen, args=(handler,), name="jobservice-bus", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        self._stopped.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _listen(self, handler: Handler) -> None:
        while not self._stopped.is_set():
            pubsub = self._client.pubsub(ignore_subscribe_messages=True)
            try:
                pubsub.subscribe(self._channel)
                # A (re)connection may have missed messages: act as if one came.
                handler(WAKEUP)
                while not self._stopped.is_set():
                    message = pubsub.get_message(timeout=0.5)
                    if message is not None and message["type"] == "message":
                        handler(message["data"].decode())
            except redis.RedisError as exc:
                logger.warning("Event channel lost (%s); reconnecting", exc.__class__.__name__)
                self._stopped.wait(RECONNECT_S)
            finally:
                pubsub.close()


class FileBus:
    """Append a byte to a file to publish; a thread polls its size. One host only.

    Size, not modification time: two writes within one clock tick would share an
    mtime, while every append changes the size.
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def publish(self, message: str) -> None:
        try:
            fd = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                os.write(fd, b".")
            finally:
                os.close(fd)
        except OSError as exc:
            logger.warning("Could not publish %r: %s", message, exc)

    def listen(self, handler: Handler) -> None:
        self._thread = threading.Thread(
            target=self._poll, args=(handler,), name="jobservice-bus", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        self._stopped.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _poll(self, handler: Handler) -> None:
        seen = self._size()
        while not self._stopped.wait(FILE_POLL_S):
            size = self._size()
            if size != seen:
                if size > MAX_FILE_BYTES:
                    os.truncate(self._path, 0)
                    size = 0
                seen = size
                handler(WAKEUP)

    def _size(self) -> int:
        try:
            return self._path.stat().st_size
        except FileNotFoundError:
            return 0
