"""Starting runs in batches: one compare-and-set transaction for every run waiting to start.

A run may only start once its claim is marked started in the database (that is what
makes an adopted run impossible to start twice). One commit per run would spend a
burst in commits, twenty threads each waiting for its own; here whoever is waiting
rides the next transaction. In a burst the job threads come back for their next run one
after another, so the gate gathers for GATHER_S before it writes: a batch of ten costs
what a batch of one does (four statements), and a lone run starts GATHER_S later.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime

from .ledger import Claim, RunLedger

MAX_BATCH = 500
#: How long the gate waits for more runs to start once one is waiting (in a burst, the
#: job threads return within a run's duration of each other).
GATHER_S = 0.002


@dataclass
class _Ticket:
    claim: Claim
    limit: int
    done: threading.Event = field(default_factory=threading.Event)
    started_at: datetime | str | None = None
    error: BaseException | None = None


class StartGate:
    """Start claimed runs from many threads, a batch per transaction."""

    def __init__(self, ledger: RunLedger, lock: bool = False) -> None:
        """`lock`: other processes start runs too (JOBSERVICE_SPREAD_RUNS), so max_instances
        is counted under a lock on the jobs' rows."""
        self._ledger = ledger
        self._lock_jobs = lock
        self._lock = threading.Lock()
        self._pid = -1
        self._queue: queue.SimpleQueue[_Ticket] = queue.SimpleQueue()

    def start(self, claim: Claim, limit: int) -> datetime | str | None:
        """Block until the run is marked started (its start time), refused (None), found
        BUSY (`limit`, its job's max_instances, runs of its job are going in the cluster), or
        left UNSURE (a start in doubt, found not started: its claim stays, for adoption)."""
        ticket = _Ticket(claim, limit)
        self._running_queue().put(ticket)
        ticket.done.wait()
        if ticket.error is not None:
            raise ticket.error
        return ticket.started_at

    def _running_queue(self) -> queue.SimpleQueue[_Ticket]:
        """The queue of this process's gate thread (a forked child starts its own)."""
        with self._lock:
            if self._pid != os.getpid():
                self._pid = os.getpid()
                self._queue = queue.SimpleQueue()
                threading.Thread(
                    target=self._loop, args=(self._queue,), name="jobservice-starts", daemon=True
                ).start()
            return self._queue

    def _loop(self, tickets: queue.SimpleQueue[_Ticket]) -> None:
        while True:
            batch = [tickets.get()]
            deadline = time.monotonic() + GATHER_S
            while len(batch) < MAX_BATCH:
                try:
                    batch.append(tickets.get(timeout=max(deadline - time.monotonic(), 0.0)))
                except queue.Empty:
                    break
            limits = {ticket.claim.key.job_id: ticket.limit for ticket in batch}
            try:
                result = self._ledger.start_many(
                    [ticket.claim for ticket in batch], limits, lock=self._lock_jobs
                )
            except BaseException as exc:  # the waiting threads re-raise it
                for ticket in batch:
                    ticket.error = exc
            else:
                for ticket in batch:
                    ticket.started_at = result.answer(ticket.claim)
            for ticket in batch:
                ticket.done.set()
