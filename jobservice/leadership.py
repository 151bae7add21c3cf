"""Electing one leader: campaign for a lease, keep it, and know when it can no longer be trusted.

The leader keeps a monotonic deadline a little short of its lease's expiry and
extends it only on a successful renewal. `fence()` answers from that deadline, so
a leader that cannot renew (Redis down, process paused) stops starting runs before
its lease expires. A follower may still break the lease of a leader whose Redis
connection vanished before then (that is what makes failover take a tenth of a
second), so the deadline alone is not the guarantee: the database refuses the writes
of a superseded fence (`fencing`), and `step_down()` ends such a term at once.
Nothing here knows about Flask.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from .leases import LeaderInfo, Lease

logger = logging.getLogger(__name__)

#: Trust a lease for this share of its length: Redis's clock and ours may run at
#: slightly different rates, and the renewal's reply takes time to arrive.
TRUSTED_SHARE = 0.8
RENEWALS_PER_LEASE = 4
MAX_POLL_S = 0.25


class Elector:
    """Campaigns for a lease in a thread; `on_change(fence or None, reason)` on every change
    of role, the reason being "acquired", "lost" or "released"."""

    def __init__(self, lease: Lease, lease_s: float, on_change: Callable[[int | None, str], None]) -> None:
        self.lease = lease
        self.lease_s = lease_s
        self._on_change = on_change
        self._term: tuple[int, float] | None = None  # (fence, trusted until: monotonic s)
        self._renewed_at = 0.0
        self._poke = threading.Event()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self._failures = 0

    def seconds_left(self) -> float | None:
        """How long our lease can still be trusted, while we lead."""
        term = self._term
        return None if term is None else max(term[1] - time.monotonic(), 0.0)

    def fence(self) -> int | None:
        """Our fencing number while we lead and the lease can be trusted, else None."""
        term = self._term
        if term is not None and time.monotonic() < term[1]:
            return term[0]
        return None

    def leader(self) -> LeaderInfo | None:
        return self.lease.leader()

    def poke(self) -> None:
        """Campaign now (someone announced a release)."""
        self._poke.set()

    def step_down(self, newer_fence: int) -> None:
        """The database refused our fence: a newer leader exists. Stop leading now, and let
        go of the lease if it is somehow still ours, so that leading again takes a new fence."""
        term = self._term
        if term is None or term[0] >= newer_fence:
            return
        self._term = None
        logger.warning(
            "Leadership lost (fence %d): fence %d is recorded in the database",
            term[0],
            newer_fence,
            extra={"fence": term[0]},
        )
        self._on_change(None, "lost")
        try:
            self.lease.release()  # token-checked: a successor's lease is left alone
        except Exception as exc:
            logger.warning("Could not release the lease: %s", exc)

    def start(self) -> None:
        self._stopped.clear()
        self._thread = threading.Thread(target=self._loop, name="jobservice-elector", daemon=True)
        self._thread.start()

    def stop(self, release: bool = True) -> None:
        """Stop campaigning; stop leading at once and, if asked, release the lease."""
        term, self._term = self._term, None
        self._stopped.set()
        self._poke.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        if term is not None:
            self._on_change(None, "released")
            if release:
                try:
                    self.lease.release()
                    logger.info("Leadership released (fence %d)", term[0], extra={"fence": term[0]})
                except Exception as exc:  # the lease will expire on its own
                    logger.warning("Could not release the lease: %s", exc)

    def _loop(self) -> None:
        poll_s = min(MAX_POLL_S, self.lease_s / RENEWALS_PER_LEASE)
        renew_s = self.lease_s / RENEWALS_PER_LEASE
        while not self._stopped.is_set():
            if self._term is None:
                self._campaign()
            else:
                self._keep()
            self._poke.wait(renew_s if self._term is not None else poll_s)
            self._poke.clear()

    def _campaign(self) -> None:
        started = time.monotonic()
        try:
            fence = self.lease.acquire()
            if fence is None:
                self._break_dead_holder()
                return
        except Exception as exc:
            self._log_failure("campaign for leadership", exc)
            return
        self._failures = 0
        if self._stopped.is_set():
            self.lease.release()
            return
        self._term = (fence, started + self.lease_s * TRUSTED_SHARE)
        self._renewed_at = started
        logger.info("Leadership acquired (fence %d)", fence, extra={"fence": fence})
        self._on_change(fence, "acquired")

    def _break_dead_holder(self) -> None:
        """A holder whose process is gone is replaced now, not when its lease expires."""
        holder = self.lease.leader()
        if holder is not None and self.lease.holder_is_gone(holder):
            logger.info("Leader %s is gone (fence %s); taking over", holder.worker, holder.fence)
            self.lease.break_lease(holder)
            self._poke.set()

    def _keep(self) -> None:
        term = self._term
        if term is None:
            return
        started = time.monotonic()
        try:
            renewed: bool | None = self.lease.renew()
        except Exception as exc:
            renewed = None
            self._log_failure("renew the lease", exc)
        if renewed:
            if started - self._renewed_at > self.lease_s / 2:
                logger.warning(
                    "Lease renewed late: %.2fs after the previous renewal (fence %d)",
                    started - self._renewed_at,
                    term[0],
                    extra={"fence": term[0]},
                )
            self._failures = 0
            self._renewed_at = started
            self._term = (term[0], started + self.lease_s * TRUSTED_SHARE)
        elif renewed is False or time.monotonic() >= term[1]:
            self._term = None
            reason = "taken over" if renewed is False else "could not be renewed in time"
            logger.warning("Leadership lost (fence %d): lease %s", term[0], reason, extra={"fence": term[0]})
            self._on_change(None, "lost")

    def _log_failure(self, what: str, exc: Exception) -> None:
        """Log the first failure and then every 20th, so an outage does not flood the log."""
        if self._failures % 20 == 0:
            logger.warning("Could not %s: %s: %s", what, exc.__class__.__name__, exc)
        self._failures += 1
