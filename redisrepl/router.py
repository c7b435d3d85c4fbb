"""The event router: from "key K changed on side S" to "the other side holds
what S holds".

Both sources (local keyspace notifications, the remote PSUBSCRIBE stream)
call ``changed(side, key)``; the key joins the queue of dirty keys
(redisrepl.dirty), where changes coalesce. The reconcile asks for its
copies through the same path (``force``).

The router is the facade (``IChangeSink`` and ``ILiveCopies``): it sorts
the events (outside the namespace, evictions, echoes of redisrepl's own
writes announced by their event names) and hands the rest to the work under
way (redisrepl.batches): batches of up to ``batch_size`` keys, as many in
flight as the window allows (redisrepl.window), big keys copied in chunks beside them, and one
policy for every failure (a side down pauses all work with backoff; a key a
side refuses is parked with its own). A failed read or write never loses a
change.
"""

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred
from zope.interface import implementer

from redisrepl.backoff import Backoff
from redisrepl.batches import Batches
from redisrepl.big_keys import BigCopier
from redisrepl.classify import LocalEvents
from redisrepl.copier import Copier
from redisrepl.dirty import key_backoff
from redisrepl.epochs import Generation
from redisrepl.evictions import Evictions
from redisrepl.interfaces import Clock, IChangeSink, ILiveCopies, IReconcileRequests, ReconcileRequests
from redisrepl.live import ANYTHING, Forced, ForcedCopies, Watchers
from redisrepl.namespace import Namespace
from redisrepl.sides import LOCAL, REMOTE, Side
from redisrepl.stats import KeyReports, Links, Stats
from redisrepl.synced import SyncedTable
from redisrepl.window import Window

if TYPE_CHECKING:
    from twisted.internet.base import DelayedCall

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
    """The facade the sources and the reconcile call (see the module)."""

    def __init__(
        self,
        clock: Clock,
        local: Side,
        remote: Side,
        namespace: bytes,
        concurrency: int = 4,
        window: Window | None = None,
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
        self.synced = synced  # records what both sides hold after each copy
        self._clock = clock
        self._sides = {LOCAL: local, REMOTE: remote}
        self.names = Namespace(namespace)
        self._reconcile: ReconcileRequests = reconcile if reconcile is not None else _NoReconcile()
        self.stats = Stats()
        self._links = Links(self.stats)
        self._reports = KeyReports(self.stats)
        self._forced = ForcedCopies()
        self._watchers = Watchers()
        self._evictions = Evictions(clock, synced)
        self._local_events = LocalEvents()
        copier = Copier(
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
            replay=self.changed,
        )
        self._work = Batches(
            clock,
            copier,
            self.stats,
            self._forced,
            self._reports,
            self._local_events,
            self._reconcile,
            window=window if window is not None else Window(clock, concurrency, concurrency),
            batch_size=batch_size,
            first=first,
            max_backlog=max_backlog,
            link_backoff=link_backoff,
            key_backoff=key_backoff,
            big_concurrency=big_concurrency,
        )
        self._queue = self._work.queue

    # -- what the sources call (IChangeSink) -------------------------------------

    def changed(self, side: str, key: bytes, event: bytes | None = None) -> None:
        if not self.names.owns(key):
            self.stats.ignored += 1
            return
        expected = self._sides[side].expected
        if event is not None and event != b"evicted" and expected.park(key, event):
            # a write of ours that may be refused is not answered yet: its
            # reply tells whether this is its echo (copier.write takes it
            # again then, and it is counted then)
            self._watchers.touched(key)
            return
        self.stats.events[side] += 1
        if event == b"evicted":
            # not a deletion of shared data: the key stays evicted here, kept
            # on the other side (and a copy already queued from here, which
            # would read it absent, is not made)
            self.stats.evicted[side] += 1
            self._evictions.evicted(side, key)
            return
        if event is not None and expected.echo_event(key, event):
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
        self._work.add(side, key)

    def changes(self, side: str, events: Iterable[tuple[bytes, bytes]]) -> None:
        """``changed`` for each (key, event) of one read from ``side``; the
        copies they call for start together, at the end."""
        self._work.hold()
        try:
            for key, event in events:
                self.changed(side, key, event)
        finally:
            self._work.release()

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
        self._work.add(side, key)

    def was_evicted(self, side: str, key: bytes) -> bool:
        return self._evictions.was_evicted(side, key)

    def pending(self, key: bytes) -> bool:
        return self._queue.pending(key)

    def unsupported(self, key: bytes, side: str, kind: str) -> None:
        self._reports.unsupported(key, side, kind)

    def watch(self, limit: int | None = None) -> set[bytes]:
        # it starts with the keys waiting or under way
        return self._watchers.watch(self._queue.snapshot(), limit)

    def evicted_keys(self, side: str) -> list[bytes]:
        return self._evictions.keys(side)

    def unwatch(self, watcher: set[bytes]) -> None:
        self._watchers.unwatch(watcher)

    @property
    def backlog(self) -> int:
        """Keys waiting to be copied (queued, parked or in flight)."""
        return self._queue.backlog

    @property
    def max_backlog(self) -> int:
        return self._queue.max_backlog

    def waiting(self, side: str) -> int:
        """Changes made on ``side`` and not yet copied (queued, parked or in flight)."""
        return self._queue.waiting(side)

    def lag(self, side: str) -> float:
        """Seconds since the oldest change made on ``side`` and not yet
        copied was seen (0 when none waits)."""
        oldest = self._queue.oldest(side)
        return 0.0 if oldest is None else max(0.0, self._clock.seconds() - oldest)

    @property
    def in_flight(self) -> int:
        """Batches under way now."""
        return self._work.in_flight

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
        return self._work.paused

    @property
    def link_error(self) -> dict[str, str | None]:
        """side -> why it could not be reached last time, None once it answers."""
        return self._links.error

    @property
    def concurrency(self) -> int:
        """Most batches in flight at once, now."""
        return self._work.window.size

    @concurrency.setter
    def concurrency(self, n: int) -> None:
        """Fix the window at ``n`` batches."""
        self._work.window = Window(self._clock, n, n)

    @property
    def batch_size(self) -> int:
        """Most keys in one batch."""
        return self._work.batch_size

    @batch_size.setter
    def batch_size(self, n: int) -> None:
        self._work.batch_size = n

    @property
    def first(self) -> str:
        """The side copied first (and so winning) when a key changed on both sides."""
        return self._work.first

    @first.setter
    def first(self, side: str) -> None:
        self._work.first = side

    # -- lifecycle ---------------------------------------------------------------

    def stop(self, timeout: float = 5.0) -> Deferred[Any]:
        """Take no new work; fire when the batches in flight are done (or
        after ``timeout`` seconds, when they are given up)."""
        return self._work.stop(timeout)
