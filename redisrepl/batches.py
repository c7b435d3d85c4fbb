"""The copies under way: the router's dirty keys sent out in batches, big
keys copied beside them, and one policy for every failure.

The router (redisrepl.router) hands each change to ``add``; the key joins
the queue of dirty keys (redisrepl.dirty), where changes coalesce. Work goes
out in batches, at once (no delay is added to fill a batch): a batch takes
up to ``batch_size`` dirty keys that changed on the same side and the copier
(redisrepl.copier) reads them there in one round trip, drops the echoes and
writes the rest on the other side in one round trip. At most as many
batches as the window allows (redisrepl.window: ``--concurrency`` slots,
more while keys wait for a slot, up to ``--max-concurrency``) are in
flight, over as many connections, and a freed slot is filled at once. A
key is never in two batches at once, so an older state never overtakes a
newer one.

A failed read or write never loses a change: its keys go back into the
queue. A ``LinkError`` pauses all work with capped backoff (a side is down).
A ``RefusedError`` on a batch of several keys sends them again one per
batch, so that only the key actually refused is parked, with its own
backoff, while the others go on.

A big key is copied in chunks beside the batches (at most
``big_concurrency`` at once; the key stays in flight until its copy ends, so
there is still one copy of it at a time, and a long copy never holds up the
small keys).
"""

from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from twisted.internet import task
from twisted.internet.defer import CancelledError, Deferred, DeferredList, DeferredSemaphore, succeed
from twisted.logger import Logger

from redisrepl.backoff import Backoff
from redisrepl.classify import LocalEvents
from redisrepl.copier import Batch, BigCopy, Copier
from redisrepl.dirty import DirtyQueue, Queued, key_backoff
from redisrepl.errors import LinkError, RefusedError
from redisrepl.interfaces import Clock, ReconcileRequests
from redisrepl.live import ForcedCopies
from redisrepl.outages import Outage
from redisrepl.sides import LOCAL, OTHER, REMOTE, short
from redisrepl.stats import KeyReports, Stats
from redisrepl.window import Window

if TYPE_CHECKING:
    from twisted.internet.base import DelayedCall

# the router's work, logged under the router's name as it always was
log = Logger(namespace="redisrepl.router")


class Batches:
    """The dirty keys and the copies of them under way (see the module)."""

    def __init__(
        self,
        clock: Clock,
        copier: Copier,
        stats: Stats,
        forced: ForcedCopies,
        reports: KeyReports,
        local_events: LocalEvents,
        reconcile: ReconcileRequests,
        window: Window | None = None,
        batch_size: int = 256,
        first: str = REMOTE,
        max_backlog: int = 100_000,
        link_backoff: Backoff | None = None,
        key_backoff: Callable[[], Backoff] = key_backoff,
        big_concurrency: int = 2,
    ) -> None:
        self._clock = clock
        self._copier = copier
        self._stats = stats
        self._forced = forced
        self._reports = reports
        self._local_events = local_events
        self._reconcile = reconcile
        #: how many batches may be in flight (4, fixed, unless given)
        self.window = window if window is not None else Window(clock, 4, 4)
        self.batch_size = batch_size
        self.first = first  # copied first (and so wins) when a key changed on both sides
        self._link_backoff = link_backoff or Backoff(initial=0.2, maximum=5.0, quick=40)
        #: the log of a side that cannot be reached (a line when it starts, a summary a minute)
        self._outages = {side: Outage(clock, log, f"copies, {side} side") for side in (LOCAL, REMOTE)}
        #: the dirty keys: queued, parked or in flight (the router reads it)
        self.queue = DirtyQueue(clock, self._pump, max_backlog, key_backoff)
        self._big_slots = DeferredSemaphore(big_concurrency)
        #: key -> Deferred of its big copy (waiting or under way)
        self._big_copies: dict[bytes, Deferred[Any]] = {}
        self._batches: set[Deferred[Any]] = set()  # Deferreds of the batches under way
        self._paused: DelayedCall | None = None  # DelayedCall while a side is down
        self._stopping = False
        self._pumping = False
        self._pump_call: DelayedCall | None = None
        self._held = 0  # hold() without its release()
        self._pump_wanted = False  # keys added while held

    @property
    def paused(self) -> "DelayedCall | None":
        """The DelayedCall of the retry while a side is down, or None."""
        return self._paused

    @property
    def in_flight(self) -> int:
        """Batches under way now (big keys' copies not counted)."""
        return len(self._batches)

    def add(self, side: str, key: bytes) -> None:
        """``key`` is to be copied from ``side``."""
        queued = self.queue.add(side, key)
        if queued is Queued.COALESCED:
            self._stats.coalesced += 1
        elif queued is Queued.FULL:
            # Memory stays bounded: the change is not kept, and the reconcile
            # will find it (no change is dropped silently).
            self._stats.overflows += 1
            self._reconcile.request("the queue was full")
        elif queued is Queued.ADDED:
            self._stats.backlog_high = self.queue.high_water
            if self._held:
                self._pump_wanted = True
            elif self._pump_call is None:
                # at the end of this reactor turn: the other events that arrived
                # with this one join its batch; no time is added
                self._pump_call = self._clock.callLater(0, self._pump)

    def hold(self) -> None:
        """Keys added from now until ``release`` go in one pump, at the
        release (a source's events of one read: their copies start at
        once, without waiting a turn of the reactor)."""
        self._held += 1

    def release(self) -> None:
        self._held -= 1
        if not self._held and self._pump_wanted:
            self._pump_wanted = False
            self._pump()

    def stop(self, timeout: float = 5.0) -> Deferred[Any]:
        """Take no new work; fire when the batches in flight are done (or
        after ``timeout`` seconds, when they are given up)."""
        self._stopping = True
        for call in [self._paused, self._pump_call]:
            if call is not None and call.active():
                call.cancel()
        self.queue.stop()
        if not self._batches and not self._big_copies:
            return succeed(None)
        d = DeferredList(list(self._batches) + list(self._big_copies.values()), consumeErrors=True)
        d.addTimeout(timeout, self._clock)
        d.addErrback(lambda f: log.warn("gave up on {n} keys in flight at shutdown", n=len(self.queue.in_flight)))
        # The last batch may finish inside a connection's dataReceived; let the
        # shutdown (which closes every connection) go on in a later turn, not
        # from under that call.
        d.addCallback(lambda _: task.deferLater(self._clock, 0, lambda: None))
        return d

    # -- batches -----------------------------------------------------------------

    def _pump(self) -> None:
        if self._pump_call is not None:
            if self._pump_call.active():
                self._pump_call.cancel()
            self._pump_call = None
        if self._pumping:
            return  # a batch finished synchronously inside the loop below
        self._pumping = True
        try:
            grown = False
            while self.queue and not self._stopping and self._paused is None:
                in_flight = len(self._batches)
                if not self.window.allows(in_flight):
                    # every slot busy and a key ready to go (not only keys in
                    # flight, dirty again): one slot more, once a pump (and
                    # none if the window just shrank below what is in flight)
                    if grown or not self.queue.ready() or not self.window.full() or not self.window.allows(in_flight):
                        return
                    grown = True
                picked = self.queue.pick(self.first, self.batch_size)
                if picked is None:
                    return
                source, keys = picked
                d = Deferred.fromCoroutine(self._guarded(source, keys, self._batch(source, keys)))
                if not d.called:
                    self._batches.add(d)
                    self.window.sent(len(self._batches))
                d.addBoth(self._finished, d, keys)
        finally:
            self._pumping = False

    async def _batch(self, source: str, keys: list[bytes]) -> Batch:
        batch = await self._copier.copy(source, OTHER[source], keys)
        for big in batch.bigs:
            self._start_big(source, big)
        return batch

    def _finished(self, result: object, d: Deferred[Any], keys: list[bytes]) -> None:
        self._batches.discard(d)
        for key in keys:
            if not self.queue.queued(key):
                self._local_events.copied(key)
        # big keys stay in flight until their own copy ends
        self.queue.done(key for key in keys if key not in self._big_copies)
        self._pump()

    # -- big keys ----------------------------------------------------------------

    def _start_big(self, source: str, big: BigCopy) -> None:
        key = big.key
        if self._copier.big is None:
            self._reports.once(
                key,
                "{key} on the {side} side has {items} items and big keys are not copied here",
                side=source,
                items=big.header.count,
            )
            return
        finished = []

        def done(_: object) -> None:
            finished.append(True)
            self._forced.done(key, source)
            if self._big_copies.pop(key, None) is not None:
                self.queue.done([key])
                self._pump()

        d = self._big_slots.run(
            lambda: Deferred.fromCoroutine(self._guarded(source, [key], self._copy_big(source, big)))
        )
        d.addBoth(done)
        if not finished:  # (a copy that ends at once leaves with its batch)
            self._big_copies[key] = d

    async def _copy_big(self, source: str, big: BigCopy) -> Batch:
        if self._stopping:
            return Batch()
        return await self._copier.copy_big(source, OTHER[source], big)

    # -- failures ----------------------------------------------------------------

    async def _guarded(self, source: str, keys: list[bytes], copying: Coroutine[Any, Any, Batch]) -> None:
        """Await ``copying`` (a copy of ``keys`` from ``source``) and deal with
        its outcome: one policy for every failure, batches and big keys alike."""
        try:
            batch = await copying
        except LinkError as e:
            self.queue.requeue(keys, source)
            self._pause(e)
        except RefusedError as e:
            self._refused(keys, source, e)
        except CancelledError:
            return  # given up at shutdown
        except Exception:
            log.failure("unexpected error copying {n} keys from the {source} side", n=len(keys), source=source)
            self._refused(keys, source, None)
        else:
            self._link_backoff.reset()
            for outage in self._outages.values():
                outage.recovered()
            self.queue.succeeded(keys)
            later = set(batch.later)
            for key in keys:
                # a key to read again keeps what the reconcile asked of it
                if key not in later and key not in self._big_copies:
                    self._forced.done(key, source)
            self.queue.requeue(batch.later, source)

    def _pause(self, error: Exception) -> None:
        if self._paused is not None or self._stopping:
            return
        delay = self._link_backoff.next_delay()
        side = getattr(error, "side", None) or REMOTE
        self._outages[side].failed(error, retry_in=delay)
        self._paused = self._clock.callLater(delay, self._resume)

    def _resume(self) -> None:
        self._paused = None
        self._pump()

    def _refused(self, keys: list[bytes], source: str, error: Exception | None) -> None:
        if len(keys) > 1:
            self.queue.send_alone(keys, source)
            return
        key = keys[0]
        delay = self.queue.park(key, source)
        if delay is not None and error is not None:
            log.error("{key}: {error}; trying this key again in {delay:.1f}s", key=short(key), error=error, delay=delay)
