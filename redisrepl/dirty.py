"""The queue of dirty keys: which keys changed on which side and wait to be
copied (pure: time comes from an injected clock).

One entry per key however many events it gets, so changes coalesce and the
queue is bounded by the number of distinct keys, never by the number of
events. A key is taken in one batch at a time (in flight until its batch is
done); a failed batch puts its keys back at the front, keeping any change
that arrived meanwhile; a key a side refuses is parked with its own backoff
and comes back by itself.

The queue also knows how far behind each direction is: for each side, when
the oldest change made there and not yet copied was first seen (kept
through coalescing, batches in flight, failures and parking; over once its
copy succeeded).
"""

import enum
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from redisrepl.backoff import Backoff
from redisrepl.interfaces import Clock
from redisrepl.sides import BIT, LOCAL, OTHER, REMOTE

if TYPE_CHECKING:
    from twisted.internet.base import DelayedCall


class Queued(enum.Enum):
    """What ``DirtyQueue.add`` did with a change."""

    ADDED = "added"  # a new entry: something to pump
    COALESCED = "coalesced"  # merged into the key's entry
    PARKED = "parked"  # merged into the key's parked entry
    FULL = "full"  # not kept: the queue is full (a reconcile must find it)


def key_backoff() -> Backoff:
    return Backoff(initial=1.0, maximum=60.0)


class DirtyQueue:
    def __init__(
        self,
        clock: Clock,
        on_ready: Callable[[], None],
        max_backlog: int = 100_000,
        key_backoff: Callable[[], Backoff] = key_backoff,
    ) -> None:
        self._clock = clock
        self._on_ready = on_ready  # called when a parked key is back
        self.max_backlog = max_backlog
        self._key_backoff = key_backoff
        self._dirty: OrderedDict[bytes, int] = OrderedDict()  # key -> BIT mask, oldest first
        self._parked: dict[bytes, tuple[int, DelayedCall]] = {}  # key -> (BIT mask, DelayedCall)
        self._backoffs: dict[bytes, Backoff] = {}  # key -> Backoff, while the key keeps being refused
        self._solo: set[bytes] = set()  # keys to send alone (to find the one refused)
        self.in_flight: set[bytes] = set()  # keys in a batch under way
        self.high_water = 0  # most keys ever waiting at once
        self._stopped = False
        # side -> key -> when its oldest change not yet copied from that side was seen
        self._since: dict[str, dict[bytes, float]] = {LOCAL: {}, REMOTE: {}}
        self._flying: dict[bytes, tuple[str, float]] = {}  # key in flight -> (source, since)
        self._overlap = 0  # keys both in flight and dirty again (so that backlog is O(1))

    def __bool__(self) -> bool:
        return bool(self._dirty)

    def add(self, side: str, key: bytes) -> Queued:
        parked = self._parked.get(key)
        mask = self._dirty.get(key)
        if parked is None and mask is None and len(self._dirty) >= self.max_backlog:
            return Queued.FULL  # not kept, so not counted as waiting either
        since = self._since[side]
        if key not in since:
            since[key] = self._clock.seconds()
        if parked is not None:
            self._parked[key] = (parked[0] | BIT[side], parked[1])
            return Queued.PARKED
        if mask is not None:
            self._dirty[key] = mask | BIT[side]
            return Queued.COALESCED
        self._dirty[key] = BIT[side]
        if key in self.in_flight:
            self._overlap += 1
        waiting = len(self._dirty) + len(self._parked) + len(self.in_flight)
        if waiting > self.high_water:
            self.high_water = waiting
        return Queued.ADDED

    def clear(self, key: bytes, side: str) -> float | None:
        """``key`` no longer needs copying from ``side``; when its change
        there was first seen, if it was waiting."""
        mask = self._dirty.get(key, 0) & ~BIT[side]
        if mask:
            self._dirty[key] = mask
        elif self._dirty.pop(key, None) is not None and key in self.in_flight:
            self._overlap -= 1
        return self._since[side].pop(key, None)

    def queued(self, key: bytes) -> bool:
        return key in self._dirty

    def pending(self, key: bytes) -> bool:
        """Is ``key`` queued, parked or in flight?"""
        return key in self._dirty or key in self._parked or key in self.in_flight

    def snapshot(self) -> set[bytes]:
        """Every key queued, parked or in flight."""
        return set(self._dirty) | set(self._parked) | set(self.in_flight)

    def is_parked(self, key: bytes) -> bool:
        return key in self._parked

    @property
    def backlog(self) -> int:
        """Keys queued, parked or in flight (each counted once)."""
        return len(self._dirty) + len(self._parked) + len(self.in_flight) - self._overlap

    @property
    def parked(self) -> int:
        return len(self._parked)

    def ready(self) -> bool:
        """Is a dirty key waiting that is not in flight (one ``pick`` would take)?"""
        return len(self._dirty) > self._overlap  # the overlap: dirty keys in flight

    def pick(self, first: str, batch_size: int) -> tuple[str, list[bytes]] | None:
        """Take the next batch: (source side, keys), now in flight; or None.
        A key dirty on both sides goes in a batch from ``first`` first."""
        source: str | None = None
        keys: list[bytes] = []
        for looked, (key, mask) in enumerate(self._dirty.items()):
            if looked > 4 * batch_size and keys:
                break  # enough looking: send what we have
            if key in self.in_flight:
                continue
            side = first if mask & BIT[first] else OTHER[first]
            if source is None:
                source = side
            elif side != source or key in self._solo:
                continue
            keys.append(key)
            if key in self._solo or len(keys) >= batch_size:
                break
        if not keys:
            return None
        assert source is not None  # set with the first key taken
        now = self._clock.seconds()
        # (clear() of each key, none of which is in flight, one step each)
        dirty, since, flying = self._dirty, self._since[source], self._flying
        other = ~BIT[source]
        for key in keys:
            mask = dirty[key] & other
            if mask:
                dirty[key] = mask
                self._overlap += 1  # dirty on the other side too, and now in flight
            else:
                del dirty[key]
            seen = since.pop(key, None)
            flying[key] = (source, now if seen is None else seen)
        self.in_flight.update(keys)
        return source, keys

    def done(self, keys: Iterable[bytes]) -> None:
        """These keys' copies are over (in flight no more)."""
        for key in keys:
            if key in self.in_flight:
                self.in_flight.discard(key)
                if key in self._dirty:
                    self._overlap -= 1
            self._flying.pop(key, None)

    def _still_waiting(self, key: bytes, source: str) -> None:
        """``key``'s copy from ``source`` did not happen: its change keeps its age."""
        flying = self._flying.get(key)
        if flying is not None:
            since = self._since[source]
            since[key] = min(since.get(key, flying[1]), flying[1])

    def waiting(self, side: str) -> int:
        """Changes made on ``side`` not yet copied: keys queued, parked or in
        flight from it (a key changed again during its copy counts twice)."""
        flying = sum(1 for source, _ in self._flying.values() if source == side)
        return len(self._since[side]) + flying

    def oldest(self, side: str) -> float | None:
        """When the oldest change made on ``side`` and not yet copied was
        seen (queued, in flight or parked), or None if there is none."""
        times = [t for source, t in self._flying.values() if source == side]
        if self._since[side]:
            times.append(min(self._since[side].values()))
        return min(times, default=None)

    def succeeded(self, keys: Iterable[bytes]) -> None:
        for key in keys:
            self._backoffs.pop(key, None)
            self._solo.discard(key)

    def requeue(self, keys: list[bytes], source: str) -> None:
        """Back to the front, in their order, keeping any change that arrived meanwhile."""
        if self._stopped:
            return
        for key in reversed(keys):
            mask = self._dirty.pop(key, None)
            if mask is None and key in self.in_flight:
                self._overlap += 1
            self._dirty[key] = (mask or 0) | BIT[source]
            self._dirty.move_to_end(key, last=False)
            self._still_waiting(key, source)

    def send_alone(self, keys: list[bytes], source: str) -> None:
        """One of ``keys`` was refused: send them again one per batch, to find it."""
        self._solo.update(keys)
        self.requeue(keys, source)

    def park(self, key: bytes, source: str) -> float | None:
        """Set ``key`` aside with its own backoff; the delay, or None once stopped."""
        if self._stopped:
            return None
        mask = self._dirty.pop(key, None)
        if mask is not None and key in self.in_flight:
            self._overlap -= 1
        sides = BIT[source] | (mask or 0)
        self._still_waiting(key, source)
        delay = self._backoffs.setdefault(key, self._key_backoff()).next_delay()
        self._parked[key] = (sides, self._clock.callLater(delay, self._unpark, key))
        return delay

    def _unpark(self, key: bytes) -> None:
        sides, _ = self._parked.pop(key)
        mask = self._dirty.get(key)
        if mask is None and key in self.in_flight:
            self._overlap += 1
        self._dirty[key] = (mask or 0) | sides
        self._on_ready()

    def stop(self) -> None:
        self._stopped = True
        for _, call in self._parked.values():
            if call.active():
                call.cancel()
