"""In-memory doubles for unit tests of pure logic (never for the replication promises)."""

from twisted.internet.defer import Deferred, fail, succeed

from redisrepl.state import ABSENT
from redisrepl.stores import ReadReply, WriteReply


class FakeStore:
    """A side's key states in a dict. Writes can be held (to keep them in flight)
    and echo back as events, as a real Redis' keyspace notifications would."""

    def __init__(self, clock, name):
        self.clock = clock
        self.name = name
        self.data = {}
        self.writes = []  # (key, state) in order
        self.batches = []  # the keys of each write request
        self.reads = 0
        self.router = None  # set to echo writes as events
        self.hold = False
        self.held = []  # Deferreds of held writes
        self.error = None  # exception raised by every read and write
        self.errors_for = {}  # key -> exception for that key only
        self.lose_reply = None  # exception raised after a write landed (reply lost)
        self.generation = None  # the Generation every reply tells (None: none)
        self.epoch = None  # a SideEpoch told each generation, as a real store does
        self.tags = {}  # key -> the hub's stamp of what it holds
        self.origins = []  # the refill origins of each write request
        self.refuse = set()  # keys whose refills the side refuses

    def _answer(self):
        if self.epoch is not None and self.generation is not None:
            self.epoch.observe(self.generation)

    def read(self, keys):
        self.reads += 1
        if self.error is not None:
            return fail(self.error)
        self._answer()
        return succeed(
            ReadReply(
                [self.data.get(key, ABSENT) for key in keys], [self.tags.get(key) for key in keys], self.generation
            )
        )

    def write(self, items, origins=None, expects=None):
        self.batches.append([key for key, _ in items])
        self.origins.append(dict(origins or {}))
        changed = {
            key for key in (expects or {}) if (self.data[key].digest if key in self.data else None) != expects[key]
        }
        skipped = frozenset(
            key for key, _ in items if (key in self.refuse and origins and key in origins) or key in changed
        )
        if skipped:
            self._answer()
            self._apply([(key, state) for key, state in items if key not in skipped])
            if not self.hold:
                return succeed(WriteReply(self.generation, skipped))
            d = Deferred()
            d.addCallback(lambda _: WriteReply(self.generation, skipped))
            self.held.append(d)
            return d
        for key, _ in items:
            if key in self.errors_for:
                return fail(self.errors_for[key])
        if self.error is not None:
            return fail(self.error)
        if self.lose_reply is not None:
            self._apply(items)
            return fail(self.lose_reply)
        if not self.hold:
            self._apply(items)
            self._answer()
            return succeed(WriteReply(self.generation))
        d = Deferred()
        d.addCallback(lambda _: self._apply(items))
        d.addCallback(lambda _: WriteReply(self.generation))
        self.held.append(d)
        return d

    def release(self):
        held, self.held = self.held, []
        for d in held:
            d.callback(None)

    def _apply(self, items):
        for key, state in items:
            self.writes.append((key, state))
            self.user_set(key, state, announce=self.router is not None)

    def user_set(self, key, state, announce=True):
        """A write by someone else (or the echo of ours): change and announce."""
        if state.kind == "none":
            self.data.pop(key, None)
        else:
            self.data[key] = state
        if announce and self.router is not None:
            self.router.changed(self.name, key)
            self.clock.advance(0)  # the reactor turn ends


class FakeSynced:
    """Records what the router says both sides hold (items of (key, state,
    stamp), one list per copy) and the evictions it reports."""

    def __init__(self):
        self.records = []
        self.evictions = []  # (side, keys)

    def record(self, items, local_generation=None):
        self.records.append(list(items))

    def evicted(self, side, keys):
        self.evictions.append((side, list(keys)))
