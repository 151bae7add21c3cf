"""TCP proxies the tests control: cut() breaks every connection like a network outage; a
proxy to the database can also take away the answers to COMMITs of run starts."""

from __future__ import annotations

import select
import socket
import threading
import time


class TcpProxy:
    """Forwards 127.0.0.1:<port> to a target; cut() drops and refuses, restore() accepts again."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self._listener: socket.socket | None = None
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._lock = threading.Lock()
        self.port = 0
        self._listen()

    def cut(self) -> None:
        """Close the listener and every open connection."""
        with self._lock:
            listener, self._listener = self._listener, None
            pairs, self._pairs = self._pairs, []
        if listener is not None:
            listener.close()
        for a, b in pairs:
            for sock in (a, b):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()

    def restore(self) -> None:
        if self._listener is None:
            self._listen()

    def close(self) -> None:
        self.cut()

    def _from_client(self, client: socket.socket, upstream: socket.socket, data: bytes) -> bool:
        """Forward what the client sent; False ends the connection."""
        upstream.sendall(data)
        return True

    def _listen(self) -> None:
        listener = socket.socket()
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(("127.0.0.1", self.port))
            listener.listen(64)
        except OSError:
            listener.close()
            raise
        self.port = listener.getsockname()[1]
        with self._lock:
            self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._listener is not listener:
                    client.close()
                    upstream.close()
                    return
                self._pairs.append((client, upstream))
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        """Relay between a client (`a`) and its upstream (`b`) until either side ends."""
        try:
            while True:
                readable, _, _ = select.select([a, b], [], [], 1.0)
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        return
                    if sock is a and not self._from_client(a, b, data):
                        return
                    if sock is b:
                        a.sendall(data)
        except (OSError, ValueError):
            return
        finally:
            with self._lock:
                if (a, b) in self._pairs:
                    self._pairs.remove((a, b))
            a.close()
            b.close()


#: A start transaction's statement (tests/lostcommit.py knows it the same way), and COMMIT
#: as a MySQL client sends it: a 7-byte COM_QUERY packet.
START_UPDATE = b"UPDATE jobservice_runs SET"
COMMIT_PACKET = b"\x07\x00\x00\x00\x03COMMIT"
ROLLBACK_PACKET = b"\x09\x00\x00\x00\x03ROLLBACK"


class CommitAnswerEater(TcpProxy):
    """A proxy to MySQL/MariaDB that can take away the answer to the COMMIT of start
    transactions, as a database dying right then would: `take(n)` makes the next `n` such
    COMMITs alternately land (forwarded, then the connection closed before the answer
    comes back) and not land (the connection closed instead of forwarding it)."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.eaten = {"landed": 0, "not landed": 0}
        self._left = 0
        #: Clients inside a start transaction (set from their pump threads, one each).
        self._starting: set[socket.socket] = set()
        super().__init__(target_host, target_port)

    def take(self, count: int) -> None:
        with self._lock:
            self._left = count

    def _next(self) -> str | None:
        with self._lock:
            if self._left == 0:
                return None
            self._left -= 1
            outcome = "landed" if self._left % 2 == 0 else "not landed"
            self.eaten[outcome] += 1
            return outcome

    def _from_client(self, client: socket.socket, upstream: socket.socket, data: bytes) -> bool:
        head = data.split(b"WHERE", 1)[0]
        if START_UPDATE in head and b"started_at=" in head:
            self._starting.add(client)
        elif data.endswith(ROLLBACK_PACKET):
            self._starting.discard(client)
        elif data.endswith(COMMIT_PACKET) and client in self._starting:
            self._starting.discard(client)
            outcome = self._next()
            if outcome == "landed":
                upstream.sendall(data)
                time.sleep(0.05)  # committed by now; its answer is never relayed
            if outcome is not None:
                return False
        upstream.sendall(data)
        return True
