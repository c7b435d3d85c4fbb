"""The event router: from "key K changed on side S" to "the other side holds
what S holds".

Both sources (local keyspace notifications, the remote PSUBSCRIBE stream)
call ``changed(side, key)``; the key joins the queue of dirty keys
(redisrepl.dirty), where changes coalesce.

Work goes out in batches, at once (no delay is added to fill a batch): a
batch takes up to ``batch_size`` dirty keys that changed on the same side
and the copier (redisrepl.copier) reads them there in one round trip, drops
the echoes and writes the rest on the other side in one round trip. At most
``concurrency`` batches are in flight, over as many connections, and a key is
never in two batches at once, so an older state never overtakes a newer one.

A failed read or write never loses a change: its keys go back into the
queue. A ``LinkError`` pauses all work with capped backoff (a side is down).
A ``RefusedError`` on a batch of several keys sends them again one per
batch, so that only the key actually refused is parked, with its own
backoff, while the others go on.

A big key is copied in chunks beside the batches (at most
``big_concurrency`` at once; the key stays in flight until its copy ends, so
there is still one copy of it at a time, and a long copy never holds up the
small keys); its echoes are recognised by their event names, which the
sources pass to ``changed``.
"""

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.internet import task
from twisted.internet.defer import CancelledError, Deferred, DeferredList, DeferredSemaphore, succeed
from twisted.logger import Logger
from zope.interface import implementer

from redisrepl.backoff import Backoff
from redisrepl.big_keys import BigCopier
from redisrepl.classify import LocalEvents
from redisrepl.copier import Batch, Copier
from redisrepl.dirty import DirtyQueue, Queued, key_backoff
from redisrepl.epochs import Generation
from redisrepl.errors import LinkError, RefusedError
from redisrepl.evictions import Evictions
from redisrepl.interfaces import Clock, IChangeSink, ILiveCopies, IReconcileRequests, ReconcileRequests
from redisrepl.live import ANYTHING, Forced, ForcedCopies, Watchers
from redisrepl.namespace import Namespace
from redisrepl.sides import LOCAL, OTHER, REMOTE, Side, short
from redisrepl.stats import KeyReports, Links, Stats
from redisrepl.synced import SyncedTable

if TYPE_CHECKING:
    from twisted.internet.base import DelayedCall

log = Logger()

#: When a key is dirty on both sides at once, this side is copied first and
#: wins: the remote is shared by many sites.
FIRST = REMOTE

__all__ = ["ANYTHING", "FIRST", "LOCAL", "REMOTE", "Router", "Side"]


@implementer(IReconcileRequests)
class _NoReconcile:
    """For a router without a reconcile (unit tests)."""

    def request(self, reason: str, delay: float = 0.2) -> None:
        pass

    def generation_changed(self, side: str, generation: Generation) -> None:
        pass


@implementer(IChangeSink, ILiveCopies)
class Router:
    def __init__(
        self,
        clock: Clock,
        local: Side,
        remote: Side,
        namespace: bytes,
        concurrency: int = 4,
        batch_size: int = 256,
        max_backlog: int = 100_000,
        link_backoff: Backoff | None = None,
        key_backoff: Callable[[], Backoff] = key_backoff,
        first: str = FIRST,
        big: BigCopier | None = None,
        big_concurrency: int = 2,
        synced: SyncedTable | None = None,
        reconcile: ReconcileRequests | None = None,
    ) -> None:
        self._clock = clock
        self.synced = synced  # records what both sides hold after each copy
        self._sides = {LOCAL: local, REMOTE: remote}
        self.names = Namespace(namespace)
        self.concurrency = concurrency
        self.batch_size = batch_size
        self.first = first  # copied first (and so wins) when a key changed on both sides
        self._reconcile: ReconcileRequests = reconcile if reconcile is not None else _NoReconcile()
        self._link_backoff = link_backoff or Backoff(initial=0.2, maximum=5.0, quick=40)
        self._queue = DirtyQueue(clock, self._pump, max_backlog, key_backoff)
        self._big_slots = DeferredSemaphore(big_concurrency)
        #: key -> Deferred of its big copy (waiting or under way)
        self._big_copies: dict[bytes, Deferred[Any]] = {}
        self._batches: set[Deferred[Any]] = set()  # Deferreds of the batches under way
        self._paused: DelayedCall | None = None  # DelayedCall while a side is down
        self._stopping = False
        self._pumping = False
        self._pump_call: DelayedCall | None = None
        self.stats = Stats()
        self._links = Links(self.stats)
        self._reports = KeyReports(self.stats)
        self._forced = ForcedCopies()
        self._watchers = Watchers()
        self._evictions = Evictions(clock, synced)
        self._local_events = LocalEvents()
        self._copier = Copier(
            clock,
            self._sides,
            self.stats,
            self._links,
            self._reports,
            self._forced,
            self._watchers,
            self._evictions,
            self._local_events,
            self._reconcile,
            synced,
            big,
        )

    # -- what the sources call (IChangeSink) -------------------------------------

    def changed(self, side: str, key: bytes, event: bytes | None = None) -> None:
        if not self.names.owns(key):
            self.stats.ignored += 1
            return
        self.stats.events[side] += 1
        if event == b"evicted":
            # not a deletion of shared data: the key stays evicted here, kept
            # on the other side (and a copy already queued from here, which
            # would read it absent, is not made)
            self.stats.evicted[side] += 1
            self._evictions.evicted(side, key)
            return
        if event is not None and self._sides[side].expected.echo_event(key, event):
            # an event redisrepl's own write announced (redisrepl.echoes): no read
            self.stats.echoes[side] += 1
            self._watchers.touched(key)
            return
        self._evictions.cleared(side, key)
        if key not in self._queue.in_flight:
            forced = self._forced.overtaken(key)
            if forced is not None and forced.source != side:
                # a live change on the side the reconcile wanted to overwrite
                # is newer than what it saw: that copy would undo it
                self._queue.clear(key, forced.source)
        self._watchers.touched(key)
        if side == LOCAL:
            self._local_events.event(key, event)
        self._enqueue(side, key)

    def subscribed(self, side: str) -> None:
        # events made while the stream was down are lost for good: none of
        # those redisrepl caused is expected any more, and any event from now
        # on was made after whatever restart of that Redis came before
        self._sides[side].expected.forget_events()
        # a reconcile looking now may have missed changes: no deletion of its
        self._watchers.events_lost()
        if side == LOCAL:
            self._local_events.subscribed()
        self._reconcile.request(f"{side} events (re)subscribed")

    # -- what the reconcile calls (ILiveCopies) ------------------------------------

    def force(
        self, side: str, key: bytes, guard: bytes | None = None, origin: int | None = None, expect: object = ANYTHING
    ) -> None:
        """Copy ``key`` from ``side``: the reconcile found the sides differ,
        whatever the expected-event tables remember. With ``guard`` (the
        source's generation id when it decided), the copy is dropped if the
        source answers with another generation; with ``origin`` it is a
        refill of a state known since that stamp; with ``expect`` (the
        digest the reconcile saw on the other side, None for absent) it is
        not made if the key changed there since."""
        self._sides[LOCAL].expected.forget(key)
        self._sides[REMOTE].expected.forget(key)
        self._forced.ask(key, Forced(side, guard, origin, expect))
        self._enqueue(side, key)

    def was_evicted(self, side: str, key: bytes) -> bool:
        return self._evictions.was_evicted(side, key)

    def pending(self, key: bytes) -> bool:
        return self._queue.pending(key)

    def unsupported(self, key: bytes, side: str, kind: str) -> None:
        self._reports.unsupported(key, side, kind)

    def watch(self) -> set[bytes]:
        # it starts with the keys waiting or under way
        return self._watchers.watch(self._queue.snapshot())

    def unwatch(self, watcher: set[bytes]) -> None:
        self._watchers.unwatch(watcher)

    @property
    def backlog(self) -> int:
        """Keys waiting to be copied (queued, parked or in flight)."""
        return self._queue.backlog

    @property
    def max_backlog(self) -> int:
        return self._queue.max_backlog

    @property
    def parked(self) -> int:
        """Keys a side refused, each waiting for its own retry."""
        return self._queue.parked

    def is_parked(self, key: bytes) -> bool:
        """Is ``key`` set aside after a refusal, waiting for its own retry?"""
        return self._queue.is_parked(key)

    @property
    def paused(self) -> "DelayedCall | None":
        """The DelayedCall of the retry while a side is down, or None."""
        return self._paused

    @property
    def link_error(self) -> dict[str, str | None]:
        """side -> why it could not be reached last time, None once it answers."""
        return self._links.error

    # -- lifecycle ---------------------------------------------------------------

    def stop(self, timeout: float = 5.0) -> Deferred[Any]:
        """Take no new work; fire when the batches in flight are done (or
        after ``timeout`` seconds, when they are given up)."""
        self._stopping = True
        for call in [self._paused, self._pump_call]:
            if call is not None and call.active():
                call.cancel()
        self._queue.stop()
        if not self._batches and not self._big_copies:
            return succeed(None)
        d = DeferredList(list(self._batches) + list(self._big_copies.values()), consumeErrors=True)
        d.addTimeout(timeout, self._clock)
        d.addErrback(lambda f: log.warn("gave up on {n} keys in flight at shutdown", n=len(self._queue.in_flight)))
        # The last batch may finish inside a connection's dataReceived; let the
        # shutdown (which closes every connection) go on in a later turn, not
        # from under that call.
        d.addCallback(lambda _: task.deferLater(self._clock, 0, lambda: None))
        return d

    # -- the work ----------------------------------------------------------------

    def _enqueue(self, side, key):
        queued = self._queue.add(side, key)
        if queued is Queued.COALESCED:
            self.stats.coalesced += 1
        elif queued is Queued.FULL:
            # Memory stays bounded: the change is not kept, and the reconcile
            # will find it (no change is dropped silently).
            self.stats.overflows += 1
            self._reconcile.request("the queue was full")
        elif queued is Queued.ADDED:
            self.stats.backlog_high = self._queue.high_water
            if self._pump_call is None:
                # at the end of this reactor turn: the other events that arrived
                # with this one join its batch; no time is added
                self._pump_call = self._clock.callLater(0, self._pump)

    def _pump(self):
        if self._pump_call is not None:
            if self._pump_call.active():
                self._pump_call.cancel()
            self._pump_call = None
        if self._pumping:
            return  # a batch finished synchronously inside the loop below
        self._pumping = True
        try:
            while self._queue and not self._stopping and self._paused is None and len(self._batches) < self.concurrency:
                picked = self._queue.pick(self.first, self.batch_size)
                if picked is None:
                    return
                source, keys = picked
                d = Deferred.fromCoroutine(self._guarded(source, keys, self._batch(source, keys)))
                if not d.called:
                    self._batches.add(d)
                d.addBoth(self._finished, d, keys)
        finally:
            self._pumping = False

    async def _batch(self, source, keys):
        batch = await self._copier.copy(source, OTHER[source], keys)
        for big in batch.bigs:
            self._start_big(source, big)
        return batch

    def _finished(self, result, d, keys):
        self._batches.discard(d)
        for key in keys:
            if not self._queue.queued(key):
                self._local_events.copied(key)
        # big keys stay in flight until their own copy ends
        self._queue.done(key for key in keys if key not in self._big_copies)
        self._pump()

    async def _guarded(self, source, keys, copying):
        """Await ``copying`` (a copy of ``keys`` from ``source``) and deal with
        its outcome: one policy for every failure, batches and big keys alike."""
        try:
            batch = await copying
        except LinkError as e:
            self._queue.requeue(keys, source)
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
            self._queue.succeeded(keys)
            later = set(batch.later)
            for key in keys:
                # a key to read again keeps what the reconcile asked of it
                if key not in later and key not in self._big_copies:
                    self._forced.done(key, source)
            self._queue.requeue(batch.later, source)

    def _start_big(self, source, big):
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

        def done(_):
            finished.append(True)
            self._forced.done(key, source)
            if self._big_copies.pop(key, None) is not None:
                self._queue.done([key])
                self._pump()

        d = self._big_slots.run(
            lambda: Deferred.fromCoroutine(self._guarded(source, [key], self._copy_big(source, big)))
        )
        d.addBoth(done)
        if not finished:  # (a copy that ends at once leaves with its batch)
            self._big_copies[key] = d

    async def _copy_big(self, source, big):
        if self._stopping:
            return Batch()
        return await self._copier.copy_big(source, OTHER[source], big)

    # -- failures ----------------------------------------------------------------

    def _pause(self, error):
        if self._paused is not None or self._stopping:
            return
        delay = self._link_backoff.next_delay()
        log.warn(
            "{error}; {backlog} keys waiting, retrying in {delay:.1f}s", error=error, backlog=self.backlog, delay=delay
        )
        self._paused = self._clock.callLater(delay, self._resume)

    def _resume(self):
        self._paused = None
        self._pump()

    def _refused(self, keys, source, error):
        if len(keys) > 1:
            self._queue.send_alone(keys, source)
            return
        key = keys[0]
        delay = self._queue.park(key, source)
        if delay is not None and error is not None:
            log.error("{key}: {error}; trying this key again in {delay:.1f}s", key=short(key), error=error, delay=delay)
