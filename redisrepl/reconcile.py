"""The reconcile: make the namespace equal on both sides after any gap.

Keyspace notifications are fire-and-forget: what changes while the daemon is
stopped, while a stream is down, or what no event announces (FLUSHDB), is
never announced again. The reconcile finds it by comparison:

1. Both sides compute a digest of every key of the namespace themselves (the
   digest_scan script, one SCAN step per request, through Webdis on the
   remote side; digest_keys for the same keys on the local side), so values
   do not travel to be compared, and a run holds one SCAN step at a time:
   memory does not grow with the namespace.
2. The synchronised state of each key is kept in the local Redis
   (redisrepl.synced), with the hub's stamp of it.
3. For each key where the sides differ, ``redisrepl.merge.decide`` picks the
   side whose state both must take, and the router copies it (reading the
   current state then, so anything newer wins).

A run knows, from each side's generation (redisrepl.epochs), whether that
side lost or rolled back data since this site last confirmed it: the run is
then a refill (nothing deleted, nothing the hub lost reverted here), and it
confirms the new generations only once its refills are copied. Each reply
tells the side's generation, so a side that loses data during a run voids
it (at the next step, and at the latest before any deletion, which a run
makes only at its end), and a new run starts at once. Copies the run asked
for carry the generation their source had, and the router drops those whose
source answers with another.

Deletions decided by a run (not by live events) are held to its end and
made only if they are not more than ``--max-delete`` of that side's
namespace: past it, the run deletes nothing there, says so, and copies the
rest (``__redisrepl__:{<namespace>}:allow-mass-delete`` in the local Redis
lets one run through).

Keys the hub lists outside the namespace (or among redisrepl's own) are
refused, counted and reported: the hub is trusted to be the hub, not to
reach outside the namespace. Keys with live events during a run are left to
the live path: events win.
"""

import random

import attrs
from twisted.application.service import Service
from twisted.internet import task
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from zope.interface import implementer

from redisrepl.backoff import Backoff
from redisrepl.bucket_check import CONFIRMED, WAIT
from redisrepl.errors import ReplicationError
from redisrepl.interfaces import IReconcileRequests
from redisrepl.outages import Outage
from redisrepl.sides import LOCAL, REMOTE

log = Logger()


def _per_side():
    return {LOCAL: 0, REMOTE: 0}


@attrs.define
class ReconcileStats:
    runs: int = 0
    failures: int = 0
    voided: int = 0  # runs stopped: a side lost data during them
    keys_compared: int = 0
    keys_fixed: int = 0
    refilled: int = 0  # keys refilled on the hub after it lost data
    last_duration: float = 0.0
    hub_seconds: float = 0.0  # the hub Redis' time this site's walks of it took (their digest steps)
    last_end: float = 0.0  # clock time the last run succeeded
    deleted: dict = attrs.field(factory=_per_side)  # keys deleted, by side deleted on
    blocked: dict = attrs.field(factory=_per_side)  # deletions the guard held back in the last run
    refused_keys: int = 0  # keys the hub listed outside the namespace
    guard_tripped: dict = attrs.field(factory=dict)  # side -> deletions held back by the last run (while it holds)


@attrs.frozen
class Outcome:
    """What a run leaves to the scheduler: reasons to run again at once."""

    again: tuple[str, ...] = ()


#: Periodic checks in a row that may wait for another site's walk of the
#: hub before this site walks the namespace itself; a check that waited is
#: tried again after this share of the interval (the walk under way is
#: published by then, or soon): about five intervals in all.
WAITS = 20
WAIT_AGAIN = 0.25


@implementer(IReconcileRequests)
class Reconciler(Service):
    """Runs the reconcile when asked (start-up, reconnects, overflow, a
    side's new generation) and every ``interval`` seconds; one run at a
    time, failed runs retried with backoff. ``run(reason, paced)`` is one run
    (redisrepl.comparison.Comparison.run).

    With a ``check`` (redisrepl.bucket_check.BucketCheck), a periodic
    request asked for nothing else runs the check instead: a run follows
    only if the check says why, if it waited for another site's walk
    ``WAITS`` times in a row (``WAIT_AGAIN`` of an interval apart), or if
    the last run is more than
    ``full_every`` seconds old (jittered by 10 %, so that sites spread)."""

    def __init__(self, clock, run, stats=None, interval=60.0, backoff=None, check=None, full_every=86400.0):
        self._clock = clock
        self._run = run
        self.check = check
        self._full_every = full_every
        self._next_full = None  # clock time after which a periodic request walks
        self._waits = 0
        self._wait_again = None  # DelayedCall of the check after one that waited
        self.stats = stats or ReconcileStats()
        self.interval = interval
        self._backoff = backoff or Backoff(initial=0.25, maximum=30.0, quick=40)
        self._outage = Outage(clock, log, "reconcile")
        self._pending = None  # DelayedCall of the next run
        self._reasons = set()
        self._running = None  # Deferred of the run under way
        self._periodic = None
        self.dirty = False  # a run is owed (overflow, failure)

    @property
    def guard_tripped(self):
        """side -> deletions held back by the last run (while it holds)."""
        return self.stats.guard_tripped

    # -- service ---------------------------------------------------------------

    def startService(self):
        super().startService()
        if self.interval:
            self._periodic = task.LoopingCall(self.request, "periodic")
            self._periodic.clock = self._clock
            self._periodic.start(self.interval, now=False)

    def stopService(self):
        super().stopService()
        if self._periodic is not None and self._periodic.running:
            self._periodic.stop()
        for call in (self._pending, self._wait_again):
            if call is not None and call.active():
                call.cancel()
        if self._running is not None:
            self._running.cancel()
        if self.check is not None:
            self.check.stop()

    # -- requests (IReconcileRequests) ---------------------------------------------

    def generation_changed(self, side, generation):
        log.warn(
            "the {side} Redis lost or rolled back data (a new generation of it answered): "
            "reconciling now, refilling rather than deleting",
            side=side,
        )
        self.request(f"the {side} side's generation changed", delay=0)

    def request(self, reason, delay=0.2):
        """Run soon (requests close together make one run)."""
        if not self.running:
            return
        if reason != "periodic" or not self._reasons:
            self._reasons.add(reason)
        if self._running is not None:
            return
        if self._pending is not None:
            if delay > 0 or not self._pending.active():
                return
            self._pending.cancel()
        self._pending = self._clock.callLater(delay, self._start)

    # -- runs ------------------------------------------------------------------------

    def _start(self):
        self._pending = None
        if self._wait_again is not None and self._wait_again.active():
            self._wait_again.cancel()  # this run or check is the one it was for
        reasons, self._reasons = self._reasons, set()
        self.dirty = False
        reason = ", ".join(sorted(reasons)) or "periodic"
        self._running = Deferred.fromCoroutine(self._one(reason, periodic=reasons <= {"periodic"}))
        self._running.addCallbacks(self._succeeded, self._failed)

    async def _one(self, reason, periodic):
        """A run, or for a periodic request the check instead when it can vouch."""
        due = self._next_full is not None and self._clock.seconds() >= self._next_full
        if periodic and self.check is not None and not self.check.off and not due:
            answer = await self.check()
            if answer is CONFIRMED or (answer is WAIT and self._waits + 1 < WAITS):
                self._waits = self._waits + 1 if answer is WAIT else 0
                if answer is CONFIRMED:
                    self.stats.last_end = self._clock.seconds()
                elif self._wait_again is None or not self._wait_again.active():
                    self._wait_again = self._clock.callLater(self.interval * WAIT_AGAIN, self.request, "periodic")
                return Outcome()
            reason = "periodic: no shared walk of the hub to compare with" if answer is WAIT else f"periodic: {answer}"
        elif due and periodic:
            reason = "periodic: the namespace's full walk is due"
        # only a run asked for by the schedule alone walks at the pace of
        # --walk-share: one asked for anything else too (before it or while
        # the check ran: a side that lost data) repairs or refills
        outcome = await self._run(reason, paced=periodic and not self._reasons - {"periodic"})
        self._waits = 0
        if self._full_every:
            self._next_full = self._clock.seconds() + self._full_every * random.uniform(0.9, 1.1)
        return outcome

    def _succeeded(self, outcome):
        self._running = None
        self._backoff.reset()
        self._outage.recovered()
        self._reasons.update(outcome.again)
        if self._reasons:
            voided = any(reason.startswith("voided") for reason in self._reasons)
            self.request(", ".join(sorted(self._reasons)), delay=0 if voided else 0.2)

    def _failed(self, failure):
        self._running = None
        if not self.running:
            return None
        self.stats.failures += 1
        self.dirty = True
        delay = self._backoff.next_delay()
        if failure.check(ReplicationError):
            self._outage.failed(failure.value, retry_in=delay)
        else:
            log.failure("reconcile failed; again in {delay:.1f}s", failure, delay=delay)
        self._reasons.add("retry")
        if self._pending is None:
            self._pending = self._clock.callLater(delay, self._start)
        return None
