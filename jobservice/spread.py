"""Spreading the thread executor's runs over every serving process (JOBSERVICE_SPREAD_RUNS).

One process leads, and its job threads share one interpreter lock, while the deployment's
other serving processes are idle. With spreading on, the leader decides and claims every
fire time as always, then pushes each claimed run onto one Redis list of the deployment;
every other serving process takes runs from it while it has free job threads, as many as
it has (one round trip), and starts them through the same fenced start compare-and-set on
their claim tokens, in one transaction, with max_instances counted under a lock on the jobs'
rows (several processes start runs at once). One start per fire time holds whoever takes:

* a message taken twice, or one whose claim a new leader re-issued, starts nothing, and a
  claim of a superseded leader is refused by its fence and adopted by the new one;
* a taker killed (or frozen) before it started the run leaves the claim unstarted: once the
  message is neither recent nor still queued, the leader adopts the claim (a new token);
* a taker killed after the start leaves a run whose heartbeat stops: the sweep closes it;
* if Redis refuses the push, or no other process is there to take runs, the leader runs
  them in its own pool, as without spreading.

Only processes that may lead (SCHEDULER_ALLOWED_HOSTS) take runs, so runs happen on the
same hosts as without spreading.
"""

from __future__ import annotations

import logging
import pickle
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import datetime
from typing import Any

import redis
from apscheduler.executors.base import MaxInstancesReachedError
from apscheduler.job import Job
from sqlalchemy.exc import SQLAlchemyError

from .bus import RECONNECT_S
from .executor import AppContextExecutor
from .fencing import FencedOut
from .identity import worker_id
from .jobstore import ClusterJobStore, definition
from .ledger import LEFT_BEHIND_S, Claim, RunKey
from .runner import Runner

logger = logging.getLogger(__name__)

QUEUE_KEY = "{prefix}:runs"
TAKERS_KEY = "{prefix}:takers"
#: A taker that has not said it is there for this long is gone (killed, frozen, cut off).
TAKER_TTL_S = 3.0
#: How often a taker says it is there (it also does so between runs).
REGISTER_EVERY_S = 1.0
#: How long the leader trusts its count of takers.
TAKERS_CACHE_S = 0.5
#: A taker waits this long for a run before it looks again at its role and registration.
POP_TIMEOUT_S = 1
#: Runs taken in one round trip, at most (and never more than free job threads).
MAX_TAKE = 20

Prefix = Callable[[], str]
Connection = Callable[[], redis.Redis]


def encode(claim: Claim, definition: bytes) -> bytes:
    """A claimed run as it travels: its claim, and the job's definition as the leader fired it
    (the store deletes a job once its last fire is claimed, maybe before a taker runs it)."""
    key = claim.key
    message = (claim.run_id, claim.token, claim.fence, key.job_id, key.trigger, key.scheduled_at)
    return pickle.dumps((*message, key.attempt, definition), pickle.HIGHEST_PROTOCOL)


def decode(payload: bytes) -> tuple[Claim, bytes]:
    """A message of `encode`. Like the job store's rows and RQ's jobs, it is a pickle: whoever
    can write to this Redis can run code in the service, so Redis is trusted as the database is."""
    run_id, token, fence, job_id, trigger, scheduled_at, attempt, definition = pickle.loads(payload)
    return Claim(RunKey(job_id, trigger, scheduled_at, attempt), token, fence, run_id), definition


def takers(connection: redis.Redis, prefix: str) -> list[str]:
    """The processes (worker ids) that said within TAKER_TTL_S that they take runs."""
    members = connection.zrangebyscore(TAKERS_KEY.format(prefix=prefix), time.time() - TAKER_TTL_S, "+inf")
    return sorted(member.decode() for member in members)


def status(connection: redis.Redis, prefix: str) -> dict[str, Any]:
    """What /health and GET /scheduler say of spreading: who takes runs now, and how many
    runs wait in the deployment's list for one."""
    return {"takers": takers(connection, prefix), "queued": connection.llen(QUEUE_KEY.format(prefix=prefix))}


class SpreadExecutor(AppContextExecutor):
    """The leader's side: claimed runs go to the deployment's takers, or to its own pool."""

    def __init__(
        self,
        runner: Runner,
        fence: Callable[[], int | None],
        connection: Connection,
        prefix: Prefix,
        on_fenced_out: Callable[[FencedOut], None] = lambda exc: None,
        max_workers: int = 20,
    ) -> None:
        # Takers start runs too: max_instances is counted under a lock on the jobs' rows.
        super().__init__(runner, fence, on_fenced_out, max_workers, lock=True)
        self._connection = connection
        self._prefix = prefix
        self._outbox: list[tuple[Job, Claim]] = []
        #: Runs pushed, oldest first, with when: held while recent or still queued.
        self._sent: OrderedDict[RunKey, float] = OrderedDict()
        self._sent_lock = threading.Lock()
        self._takers: tuple[float, bool] = (0.0, False)

    def after_fork(self) -> None:
        super().after_fork()
        self._outbox = []
        self._sent = OrderedDict()
        self._sent_lock = threading.Lock()
        self._takers = (0.0, False)

    def submit_run(self, job: Job, claim: Claim) -> None:
        """Queue the run for a taker (sent at `flush`), or in this process's pool if none is there."""
        if not self._others_take():
            super().submit_run(job, claim)
            return
        self._outbox.append((job, claim))

    def flush(self) -> None:
        """Push what `submit_run` queued, in one round trip; what Redis refuses runs here."""
        outbox, self._outbox = self._outbox, []
        if not outbox:
            return
        fence = self._fence()
        sendable = [(job, claim) for job, claim in outbox if claim.fence == fence]
        if len(sendable) < len(outbox):  # leadership ended since the claims: the next leader adopts
            logger.info("%d run(s) left for the next leader", len(outbox) - len(sendable))
        if not sendable:
            return
        try:
            key = QUEUE_KEY.format(prefix=self._prefix())
            self._connection().rpush(key, *(encode(claim, definition(job)) for job, claim in sendable))
        except (redis.RedisError, OSError) as exc:
            logger.warning(
                "Could not hand %d run(s) to other processes (%s); running them here",
                len(sendable),
                exc.__class__.__name__,
            )
            self._takers = (time.monotonic(), False)
            for job, claim in sendable:
                try:
                    super().submit_run(job, claim)
                except (MaxInstancesReachedError, RuntimeError):  # still claimed: adopted again
                    pass
            return
        now = time.monotonic()
        with self._sent_lock:
            for _, claim in sendable:
                self._sent.pop(claim.key, None)  # a run adopted again is pushed again: newest last
                self._sent[claim.key] = now

    def inflight(self) -> frozenset[RunKey]:
        """Runs in this pool not yet started, and runs pushed that a taker may still start:
        pushed less than LEFT_BEHIND_S ago, or among the last ones pushed while the queue
        is that long and takers are there to drain it."""
        local = super().inflight()
        now = time.monotonic()
        with self._sent_lock:
            sent = list(self._sent.items())
        if not sent or now - sent[0][1] < LEFT_BEHIND_S:
            return local | {key for key, _ in sent}
        try:
            queued = self._connection().llen(QUEUE_KEY.format(prefix=self._prefix()))
            takers = self._count_takers()
        except (redis.RedisError, OSError):
            return local | {key for key, _ in sent}  # cannot tell: nothing is adopted meanwhile
        queued = queued if takers else 0
        held = {key for key, at in sent[max(len(sent) - queued, 0) :]}
        held |= {key for key, at in sent if now - at < LEFT_BEHIND_S}
        with self._sent_lock:
            for key, _ in sent:
                if key not in held:
                    self._sent.pop(key, None)
        return local | held

    def _others_take(self) -> bool:
        """Whether another process is there to take runs (counted at most every TAKERS_CACHE_S)."""
        at, others = self._takers
        now = time.monotonic()
        if now - at < TAKERS_CACHE_S:
            return others
        try:
            others = self._count_takers() > 0
        except (redis.RedisError, OSError):
            others = False
        self._takers = (now, others)
        return others

    def _count_takers(self) -> int:
        me = worker_id()
        return sum(1 for taker in takers(self._connection(), self._prefix()) if taker != me)


class Taker:
    """A serving process's side: take pushed runs while it has a free job thread and does not lead."""

    def __init__(
        self,
        executor: AppContextExecutor,
        runner: Runner,
        store: ClusterJobStore,
        fence: Callable[[], int | None],
        connection: Connection,
        prefix: Prefix,
    ) -> None:
        self._executor = executor
        self._runner = runner
        self._store = store
        self._fence = fence
        self._connection = connection
        self._prefix = prefix
        self._slots = threading.Semaphore(executor.max_workers)
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stopped.clear()
        self._slots = threading.Semaphore(self._executor.max_workers)
        self._thread = threading.Thread(target=self._loop, name="jobservice-taker", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop taking runs (the ones taken still finish) and say so."""
        self._stopped.set()
        if self._thread is not None:
            self._thread.join(timeout=POP_TIMEOUT_S + 3)
        self._unregister()

    def _loop(self) -> None:
        registered_at = 0.0
        while not self._stopped.is_set():
            try:
                if self._fence() is not None:  # leading: it pushes runs, it does not take them
                    if registered_at:
                        self._unregister()
                        registered_at = 0.0
                    self._stopped.wait(0.2)
                    continue
                if time.monotonic() - registered_at >= REGISTER_EVERY_S:
                    self._register()
                    registered_at = time.monotonic()
                if not self._slots.acquire(timeout=POP_TIMEOUT_S):
                    continue  # every job thread is busy
                self._take_one()
            except (redis.RedisError, OSError) as exc:
                logger.warning("Cannot take runs from Redis (%s); retrying", exc.__class__.__name__)
                registered_at = 0.0
                self._stopped.wait(RECONNECT_S)

    def _take_one(self) -> None:
        """With a job thread reserved: wait for a run, take as many more as there are free
        threads (one round trip in a burst), start them in one transaction, and hand the
        started ones to the pool."""
        key = QUEUE_KEY.format(prefix=self._prefix())
        reserved = 1
        try:
            item = self._connection().blpop([key], POP_TIMEOUT_S)
            payloads = [] if item is None else [item[1]]
            while payloads and reserved < MAX_TAKE and self._slots.acquire(blocking=False):
                reserved += 1
            if payloads and reserved > 1:
                payloads += self._connection().lpop(key, reserved - 1) or []
        except BaseException:
            self._release(reserved)
            raise
        started = self._start(payloads)
        self._release(reserved - len(started))
        for job, claim, started_at in started:
            try:
                future = self._executor.run_in_pool(self._call, (job, claim, started_at))
            except RuntimeError:  # the pool is shut down: a started run still runs, here
                self._call((job, claim, started_at))
                self._release(1)
                continue
            future.add_done_callback(lambda _: self._release(1))

    def _start(self, payloads: list[bytes]) -> list[tuple[Job, Claim, datetime]]:
        """Start these runs by the compare-and-set, in one transaction; the ones started."""
        due: list[tuple[Job, Claim]] = []
        try:
            for payload in payloads:
                try:
                    claim, definition = decode(payload)
                except Exception as exc:  # e.g. from a release that encodes runs otherwise
                    logger.error(
                        "Dropped a message of the run list it cannot read: %s", exc.__class__.__name__
                    )
                    continue  # a claim it carried stays unstarted: the leader adopts it
                job = self._store.restore_saved(claim.key.job_id, definition)
                job = job or self._store.lookup_job(claim.key.job_id)
                if job is None:
                    self._runner.ledger.miss(claim, "The job was removed before this run could start")
                elif self._runner.missed(job, claim) is None:
                    due.append((job, claim))
            if not due:
                return []
            limits = {claim.key.job_id: job.max_instances for job, claim in due}
            result = self._runner.ledger.start_many([claim for _, claim in due], limits, lock=True)
        except FencedOut as exc:  # a newer leader recorded its fence: it adopts these claims
            logger.info("%d run(s) left for the next leader: %s", len(due), exc)
            return []
        except SQLAlchemyError as exc:  # unstarted, the claims stay: the leader adopts them
            logger.warning(
                "%d run(s) could not start here (%s: %s); they will be adopted",
                len(payloads),
                exc.__class__.__name__,
                getattr(exc, "orig", None),  # the driver's code and message, not the statement
            )
            return []
        started = []
        for job, claim in due:
            try:
                outcome = self._runner.started(job, claim, result.answer(claim))
            except SQLAlchemyError:  # closing a skipped run failed: the sweep or adoption does
                logger.warning("Run of %s at %s not started, and not closed", job.id, claim.key.scheduled_at)
                continue
            if isinstance(outcome, datetime):
                started.append((job, claim, outcome))
        return started

    def _call(self, item: tuple[Job, Claim, datetime]) -> None:
        job, claim, started_at = item
        try:
            self._runner.call(job, claim, started_at)
        except Exception:
            logger.exception("Run of %s at %s failed to be recorded", job.id, claim.key.scheduled_at)

    def _release(self, count: int) -> None:
        for _ in range(count):
            self._slots.release()

    def _register(self) -> None:
        key = TAKERS_KEY.format(prefix=self._prefix())
        pipe = self._connection().pipeline(transaction=False)
        pipe.zadd(key, {worker_id(): time.time()})
        pipe.zremrangebyscore(key, "-inf", time.time() - 10 * TAKER_TTL_S)  # the long gone
        pipe.execute()

    def _unregister(self) -> None:
        try:
            self._connection().zrem(TAKERS_KEY.format(prefix=self._prefix()), worker_id())
        except (redis.RedisError, OSError):
            pass  # it expires
