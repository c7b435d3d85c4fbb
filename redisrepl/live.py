"""Where the reconcile meets the live path: the copies it asked for, and the
keys the live path touched while it looked (pure)."""

from collections.abc import Collection, Iterable

import attrs


class _Anything:
    """No condition on what the target holds (the default of a copy)."""

    def __repr__(self) -> str:
        return "ANYTHING"


ANYTHING = _Anything()


@attrs.define(unsafe_hash=True)
class Forced:
    """A copy the reconcile asked for, from ``source``: ``guard`` is the
    generation id the source had when the reconcile decided (the copy is
    dropped if the source answers with another: it lost or rolled back data
    since); ``origin`` makes it a refill of a state known since that stamp.

    Never changed once made (not frozen only because one is made for every
    key a reconcile copies, and a frozen class' ``__init__`` costs three
    times as much)."""

    source: str
    guard: bytes | None = None
    origin: int | None = None
    expect: object = ANYTHING  # the target's digest the reconcile saw (None: absent)


class ForcedCopies:
    """The reconcile's copies, by key, until each is done or overtaken."""

    def __init__(self) -> None:
        self._forced: dict[bytes, Forced] = {}

    def ask(self, key: bytes, forced: Forced) -> None:
        self._forced[key] = forced

    def get(self, key: bytes) -> Forced | None:
        return self._forced.get(key)

    def of(self, keys: Iterable[bytes], source: str) -> dict[bytes, Forced]:
        """What the reconcile asked of ``keys`` from ``source``, as it stands now."""
        found = {}
        for key in keys:
            forced = self._forced.get(key)
            if forced is not None and forced.source == source:
                found[key] = forced
        return found

    def overtaken(self, key: bytes) -> Forced | None:
        """A live change to ``key``: the reconcile's copy of it (if any) is
        dropped and returned: the live change is copied whatever it thought."""
        return self._forced.pop(key, None)

    def done(self, key: bytes, source: str) -> None:
        """The copy of ``key`` from ``source`` is made."""
        forced = self._forced.get(key)
        if forced is not None and forced.source == source:
            del self._forced[key]

    def drop(self, key: bytes) -> None:
        self._forced.pop(key, None)


class Watched(set):
    """A reconcile's watcher: the keys the live path touched while it
    looked, and whether events may have been lost meanwhile (a stream was
    subscribed again: what changed in between was announced to nobody, so
    "not touched" proves nothing)."""

    events_lost = False


class Recorder(Watched):
    """A watcher that holds at most ``limit`` keys: past it, it keeps no
    more and is ``full`` (what it was for cannot be vouched for)."""

    full = False

    def __init__(self, start: Iterable[bytes], limit: int) -> None:
        super().__init__(start)
        self.limit = limit
        self.full = len(self) > limit
        if self.full:
            self.clear()

    def add(self, key: bytes) -> None:
        if self.full:
            return
        super().add(key)
        if len(self) > self.limit:
            self.full = True
            self.clear()

    def update(self, *keys: Iterable[bytes]) -> None:
        for some in keys:
            for key in some:
                self.add(key)


class Watchers:
    """Sets that collect every key the live path touches (an event, a copy)
    while a reconcile looks, so that it never judges a key on views of both
    sides read before and after a copy."""

    def __init__(self) -> None:
        self._sets: list[set[bytes]] = []

    def watch(self, start: set[bytes], limit: int | None = None) -> Watched:
        """A new watcher, holding ``start``; with ``limit``, a Recorder."""
        watched = Watched(start) if limit is None else Recorder(start, limit)
        self._sets.append(watched)
        return watched

    def events_lost(self) -> None:
        """A source was subscribed again: every watcher may have missed keys."""
        for watcher in self._sets:
            if isinstance(watcher, Watched):
                watcher.events_lost = True

    def unwatch(self, watcher: set[bytes]) -> None:
        # by identity: two watchers holding the same keys are equal sets
        self._sets = [each for each in self._sets if each is not watcher]

    def touched(self, key: bytes) -> None:
        for watcher in self._sets:
            watcher.add(key)

    def touched_all(self, keys: Collection[bytes]) -> None:
        """``keys`` touched at once (a collection: each watcher reads them all)."""
        for watcher in self._sets:
            watcher.update(keys)
