"""The event router: from "key K changed on side S" to "the other side holds
what S holds".

Both sources (local keyspace notifications, the remote PSUBSCRIBE stream)
call ``changed(side, key)``. The router keeps a queue of dirty keys: one
entry per key however many events it gets, so changes coalesce and the queue
is bounded by the number of distinct keys, never by the number of events.

Work goes out in batches, at once (no delay is added to fill a batch): a
batch takes up to ``batch_size`` dirty keys that changed on the same side,
reads all their states there in one round trip, drops the echoes (states the
side's expected-event table says redisrepl wrote itself), records the rest in
the other side's table and writes them there in one round trip. At most
``concurrency`` batches are in flight, over as many connections, and a key is
never in two batches at once, so an older state never overtakes a newer one.

A failed read or write never loses a change: its keys go back into the
queue. A ``LinkError`` pauses all work with capped backoff (a side is down).
A ``RefusedError`` on a batch of several keys sends them again one per
batch, so that only the key actually refused is parked, with its own
backoff, while the others go on.

A big key (more items than the stores' threshold) is read as a header only
and copied in chunks by ``redisrepl.big_keys``, beside the batches (at most
``big_concurrency`` at once; the key stays in flight until its copy ends, so
there is still one copy of it at a time, and a long copy never holds up the
small keys); its echoes are recognised by their event names, which the
sources pass to ``changed``.
"""

from collections import Counter, OrderedDict

import attrs
from twisted.internet import task
from twisted.internet.defer import CancelledError, Deferred, DeferredList, DeferredSemaphore, succeed
from twisted.logger import Logger

from redisrepl.backoff import Backoff
from redisrepl.big_keys import EXPIRY_MARGIN, KeyChanged
from redisrepl.errors import LinkError, RefusedError, ReplicationError
from redisrepl.namespace import Namespace
from redisrepl.sides import LOCAL, OTHER, REMOTE, short
from redisrepl.state import ABSENT, NOT_READ, size

log = Logger()

#: Which sides a key changed on, as bits of a small int (a set per key would
#: cost ten times the memory in a queue of 100,000 keys).
BIT = {LOCAL: 1, REMOTE: 2}
#: When a key is dirty on both sides at once, this side is copied first and
#: wins: the remote is shared by many sites.
FIRST = REMOTE


#: Keyspace events that say the key is gone (a container emptied also says del).
DELETING_EVENTS = frozenset((b"del", b"expired", b"rename_from", b"move_from"))
#: Keys remembered per side as evicted there (their pending copies are not deletions).
EVICTED_MEMORY = 100_000
#: Seconds between two log lines about evictions on a side.
EVICTION_REPORT_EVERY = 60.0


class _Anything:
    """No condition on what the target holds (the default of a copy)."""

    def __repr__(self):
        return "ANYTHING"


ANYTHING = _Anything()


@attrs.frozen
class Forced:
    """A copy the reconcile asked for, from ``source``: ``guard`` is the
    generation id the source had when the reconcile decided (the copy is
    dropped if the source answers with another: it lost or rolled back data
    since); ``origin`` makes it a refill of a state known since that stamp."""

    source: str
    guard: bytes | None = None
    origin: int | None = None
    expect: object = ANYTHING     # the target's digest the reconcile saw (None: absent)


@attrs.define
class Side:
    """One Redis as the router sees it: a store that reads and writes key
    states, and the table of states redisrepl wrote there."""

    name: str
    store: object
    expected: object


def _per_side():
    return {LOCAL: 0, REMOTE: 0}


@attrs.define
class Stats:
    events: dict = attrs.field(factory=_per_side)      # events taken, by side
    echoes: dict = attrs.field(factory=_per_side)      # echoes dropped, by side they came from
    writes: dict = attrs.field(factory=_per_side)      # keys written, by side written
    requests: dict = attrs.field(factory=_per_side)    # write batches sent, by side written
    failures: Counter = attrs.field(factory=Counter)   # failed requests, by (side, kind)
    last_write: dict = attrs.field(factory=dict)       # side -> time of the last successful write
    coalesced: int = 0
    unchanged: int = 0
    ignored: int = 0
    big_copies: int = 0                                # big keys copied in chunks
    overflows: int = 0                                 # changes not queued: the queue was full
    unsupported: int = 0                               # changes to keys of a type not replicated
    backlog_high: int = 0                              # most keys waiting at once
    evicted: dict = attrs.field(factory=_per_side)     # eviction events, by side
    voided: int = 0                                    # reconcile copies dropped: their source lost data since
    deferred: int = 0                                  # hub keys refilled by another site, left to the reconcile
    refills_refused: int = 0                           # refills the hub refused: it held something as fresh


class Router:
    def __init__(self, clock, local, remote, namespace, reserved_prefix,
                 concurrency=4, batch_size=256, max_backlog=100_000,
                 link_backoff=None, key_backoff=None, first=FIRST, big=None, big_concurrency=2,
                 synced=None):
        self._clock = clock
        #: records what both sides hold after each copy (redisrepl.synced.SyncedTable)
        self.synced = synced
        self.big = big                # copies big keys (redisrepl.big_keys.BigCopier)
        self._big_slots = DeferredSemaphore(big_concurrency)
        self._big_copies = {}         # key -> Deferred of its big copy (waiting or under way)
        self._sides = {LOCAL: local, REMOTE: remote}
        self.namespace = namespace
        self.reserved_prefix = reserved_prefix
        self.names = Namespace(namespace)
        self.concurrency = concurrency
        self.batch_size = batch_size
        self.max_backlog = max_backlog
        self.first = first            # copied first (and so wins) when a key changed on both sides
        self._link_backoff = link_backoff or Backoff(initial=0.2, maximum=5.0, quick=40)
        self._key_backoff_factory = key_backoff or (lambda: Backoff(initial=1.0, maximum=60.0))
        self._dirty = OrderedDict()   # key -> BIT mask of the sides it changed on, oldest first
        self._parked = {}             # key -> (BIT mask, DelayedCall)
        self._key_backoffs = {}       # key -> Backoff, while the key keeps being refused
        self._solo = set()            # keys to send alone (to find the one refused)
        self._in_flight = set()       # keys in a batch under way
        self._batches = set()         # Deferreds of the batches under way
        self._paused = None           # DelayedCall while a side is down
        self._stopping = False
        self._pumping = False
        self._pump_call = None
        self.stats = Stats()
        #: side -> why it could not be reached last time, None once it answers
        self.link_error = {LOCAL: None, REMOTE: None}
        #: called with a reason when a reconcile is owed (the queue overflowed,
        #: a key needs the reconcile's judgement); set by the service's wiring
        self.reconcile_request = None
        self._watchers = []
        self._warned = set()          # keys of a type not replicated, already reported
        self._forced = {}             # key -> Forced, until its copy is done
        self._not_read = set()        # keys of a batch whose read left them for the next
        self._evicted = {LOCAL: OrderedDict(), REMOTE: OrderedDict()}   # key -> None
        self._evictions_to_flag = {LOCAL: [], REMOTE: []}
        # local events are numbered: one that came after the latest local
        # (re)subscription was made after any restart of the local Redis
        self._events_seen = 0
        self._local_event = {}        # key -> (number, name) of its latest local event, while it waits
        self._local_subscribed = 0    # number of the last event before the latest local subscription
        self._eviction_report = {LOCAL: None, REMOTE: None}   # (time of the last line, count since)

    # -- input -------------------------------------------------------------

    def owns(self, key):
        """Is ``key`` one redisrepl replicates?"""
        return self.names.owns(key)

    def changed(self, side, key, event=None):
        """Side ``side`` announced a change to ``key`` (by an ``event`` of
        that name, when the source knows it)."""
        if not self.owns(key):
            self.stats.ignored += 1
            return
        self.stats.events[side] += 1
        if event == b"evicted":
            self._eviction(side, key)
            return
        if event is not None and self._sides[side].expected.echo_event(key, event):
            self.stats.echoes[side] += 1     # the end of a big key's copy
            return
        self._evicted[side].pop(key, None)
        forced = self._forced.get(key)
        if forced is not None and key not in self._in_flight:
            # a live change: copied whatever the reconcile thought; and if it
            # is on the side the reconcile wanted to overwrite, it is newer
            # than what the reconcile saw: that copy would undo it
            del self._forced[key]
            if forced.source != side:
                mask = self._dirty.get(key, 0) & ~BIT[forced.source]
                if mask:
                    self._dirty[key] = mask
                else:
                    self._dirty.pop(key, None)
        for watcher in self._watchers:
            watcher.add(key)
        if side == LOCAL:
            self._events_seen += 1
            self._local_event[key] = (self._events_seen, event)
        self._enqueue(side, key)

    def subscribed(self, side):
        """``side``'s events are (re)subscribed: any event from now on was
        made after whatever restart of that Redis came before."""
        if side == LOCAL:
            self._local_subscribed = self._events_seen

    def force(self, side, key, guard=None, origin=None, expect=ANYTHING):
        """Copy ``key`` from ``side``: the reconcile found the sides differ,
        whatever the expected-event tables remember. With ``guard`` (the
        source's generation id when it decided), the copy is dropped if the
        source answers with another generation; with ``origin`` it is a
        refill of a state known since that stamp; with ``expect`` (the
        digest the reconcile saw on the other side, None for absent) it is
        not made if the key changed there since."""
        self._sides[LOCAL].expected.forget(key)
        self._sides[REMOTE].expected.forget(key)
        self._forced[key] = Forced(side, guard, origin, expect)
        self._enqueue(side, key)

    def _eviction(self, side, key):
        """An eviction is not a deletion of shared data: the key stays
        evicted here, kept on the other side (and a copy of it already
        queued from here, which would read it absent, is not made)."""
        self.stats.evicted[side] += 1
        evicted = self._evicted[side]
        evicted[key] = None
        if len(evicted) > EVICTED_MEMORY:
            evicted.popitem(last=False)
        pending = self._evictions_to_flag[side]
        pending.append(key)
        if len(pending) == 1:
            self._clock.callLater(0, self._flag_evictions, side)
        last, count = self._eviction_report[side] or (None, 0)
        now = self._clock.seconds()
        if last is None:
            log.warn("the {side} Redis evicted {key}: evictions are not replicated as deletions (the key "
                     "stays evicted there and is kept on the other side); set its maxmemory-policy to "
                     "noeviction to keep every key", side=side, key=short(key))
            self._eviction_report[side] = (now, 0)
        elif now - last >= EVICTION_REPORT_EVERY:
            log.warn("the {side} Redis evicted {n} keys in the last {seconds:.0f}s (kept on the other side)",
                     side=side, n=count + 1, seconds=now - last)
            self._eviction_report[side] = (now, 0)
        else:
            self._eviction_report[side] = (last, count + 1)

    def was_evicted(self, side, key):
        """Did ``side`` evict ``key`` (and nothing happened to it there since)?"""
        return key in self._evicted[side]

    def _flag_evictions(self, side):
        keys, self._evictions_to_flag[side] = self._evictions_to_flag[side], []
        if keys and self.synced is not None:
            self.synced.evicted(side, keys)

    def _request_reconcile(self, reason):
        if self.reconcile_request is not None:
            self.reconcile_request(reason)

    def pending(self, key):
        """Is a copy of ``key`` queued, waiting to be retried or under way?"""
        return key in self._dirty or key in self._parked or key in self._in_flight

    def unsupported(self, key, side, kind):
        """Count, and report once per key, a key of a type not replicated."""
        self.stats.unsupported += 1
        self.report_once(key, f"on the {side} side is a {kind}, which is not replicated")

    def report_once(self, key, text):
        """Log a warning about ``key``, once per key (and for 10,000 keys at most)."""
        if key not in self._warned and len(self._warned) < 10_000:
            self._warned.add(key)
            log.warn("{key} {text}", key=short(key), text=text)

    def watch(self):
        """A set that collects every key the live path touches from now on:
        with an event, or copied (it starts with those waiting or under way),
        so that a reconcile never judges a key on views of both sides read
        before and after a copy."""
        watcher = set(self._dirty) | set(self._parked) | set(self._in_flight)
        self._watchers.append(watcher)
        return watcher

    def unwatch(self, watcher):
        self._watchers.remove(watcher)

    def _enqueue(self, side, key):
        parked = self._parked.get(key)
        if parked is not None:
            self._parked[key] = (parked[0] | BIT[side], parked[1])
            return
        mask = self._dirty.get(key)
        if mask is not None:
            self.stats.coalesced += 1
            self._dirty[key] = mask | BIT[side]
            return
        if len(self._dirty) >= self.max_backlog:
            # Memory stays bounded: the change is not kept, and the reconcile
            # will find it (no change is dropped silently).
            self.stats.overflows += 1
            self._request_reconcile("the queue was full")
            return
        self._dirty[key] = BIT[side]
        waiting = len(self._dirty) + len(self._parked) + len(self._in_flight)
        if waiting > self.stats.backlog_high:
            self.stats.backlog_high = waiting
        if self._pump_call is None:
            # at the end of this reactor turn: the other events that arrived
            # with this one join its batch; no time is added
            self._pump_call = self._clock.callLater(0, self._pump)

    @property
    def backlog(self):
        """Keys waiting to be copied (queued, parked or in flight)."""
        busy = sum(1 for key in self._in_flight if key not in self._dirty)
        return len(self._dirty) + len(self._parked) + busy

    @property
    def parked(self):
        """Keys a side refused, each waiting for its own retry."""
        return len(self._parked)

    # -- lifecycle ---------------------------------------------------------

    def stop(self, timeout=5.0):
        """Take no new work; fire when the batches in flight are done (or
        after ``timeout`` seconds, when they are given up)."""
        self._stopping = True
        for call in [self._paused, self._pump_call]:
            if call is not None and call.active():
                call.cancel()
        for _, call in self._parked.values():
            if call.active():
                call.cancel()
        if not self._batches and not self._big_copies:
            return succeed(None)
        d = DeferredList(list(self._batches) + list(self._big_copies.values()), consumeErrors=True)
        d.addTimeout(timeout, self._clock)
        d.addErrback(lambda f: log.warn("gave up on {n} keys in flight at shutdown", n=len(self._in_flight)))
        # The last batch may finish inside a connection's dataReceived; let the
        # shutdown (which closes every connection) go on in a later turn, not
        # from under that call.
        d.addCallback(lambda _: task.deferLater(self._clock, 0, lambda: None))
        return d

    # -- the work queue ----------------------------------------------------

    def _pump(self):
        if self._pump_call is not None:
            if self._pump_call.active():
                self._pump_call.cancel()
            self._pump_call = None
        if self._pumping:
            return  # a batch finished synchronously inside the loop below
        self._pumping = True
        try:
            while (self._dirty and not self._stopping and self._paused is None
                   and len(self._batches) < self.concurrency):
                picked = self._pick()
                if picked is None:
                    return
                source, keys = picked
                self._in_flight.update(keys)
                d = Deferred.fromCoroutine(self._guarded(source, keys, self._copy(source, OTHER[source], keys)))
                if not d.called:
                    self._batches.add(d)
                d.addBoth(self._finished, d, keys)
        finally:
            self._pumping = False

    def _pick(self):
        """Take the next batch off the queue: (source side, keys), or None."""
        source, keys = None, []
        for looked, (key, mask) in enumerate(self._dirty.items()):
            if looked > 4 * self.batch_size and keys:
                break  # enough looking: send what we have
            if key in self._in_flight:
                continue
            # a key dirty on both sides goes in a batch from FIRST first
            side = self.first if mask & BIT[self.first] else OTHER[self.first]
            if source is None:
                source = side
            elif side != source or key in self._solo:
                continue
            keys.append(key)
            if key in self._solo or len(keys) >= self.batch_size:
                break
        if not keys:
            return None
        for key in keys:
            mask = self._dirty[key] & ~BIT[source]
            if mask:
                self._dirty[key] = mask
            else:
                del self._dirty[key]
        return source, keys

    def _finished(self, result, d, keys):
        self._batches.discard(d)
        for key in keys:
            if key not in self._dirty:
                self._local_event.pop(key, None)
        # big keys stay in flight until their own copy ends
        self._in_flight.difference_update(key for key in keys if key not in self._big_copies)
        self._pump()

    async def _guarded(self, source, keys, copying):
        """Await ``copying`` (a copy of ``keys`` from ``source``) and deal with
        its outcome: one policy for every failure, batches and big keys alike."""
        try:
            await copying
        except LinkError as e:
            self._requeue(keys, source)
            self._pause(e)
        except RefusedError as e:
            self._refused(keys, source, e)
        except CancelledError:
            return  # given up at shutdown
        except Exception:
            log.failure("unexpected error copying {n} keys from the {source} side",
                        n=len(keys), source=source)
            self._refused(keys, source, None)
        else:
            self._link_backoff.reset()
            for key in keys:
                self._key_backoffs.pop(key, None)
                self._solo.discard(key)
                if key in self._not_read:
                    self._not_read.discard(key)     # requeued: what the reconcile asked still holds
                elif key not in self._big_copies:
                    self._unforce(key, source)

    async def _copy(self, source, target, keys):
        src, dst = self._sides[source], self._sides[target]
        # what the reconcile asked of these keys, as it stands when the copy
        # starts (a copy from the other side is not this one)
        forced_now = {}
        for key in keys:
            forced = self._forced.get(key)
            if forced is not None and forced.source == source:
                forced_now[key] = forced
        try:
            reply = await src.store.read(keys)
        except ReplicationError as e:
            self._failed(source, e)
            raise
        self._answered(source)
        generation = reply.generation
        epoch = getattr(src.store, "epoch", None)
        untrusted = generation is not None and epoch is not None and not epoch.trusts(generation)
        items, bigs, origins, expects, stamps, later = [], [], {}, {}, {}, []
        for key, state, tag in zip(keys, reply.states, reply.tags):
            forced = forced_now.get(key)
            if state is NOT_READ:
                later.append(key)      # the reply was full: read again in the next batch
            elif forced is not None and forced.guard is not None and (
                    generation is None or generation.id != forced.guard):
                # the source lost or rolled back data since the reconcile
                # decided: what it holds now is no reason to delete or revert
                self._forced.pop(key, None)
                self.stats.voided += 1
                self._request_reconcile(f"the {source} side's data changed generation")
            elif state is ABSENT and key in self._evicted[source]:
                self.stats.unchanged += 1          # evicted there: not a deletion
            elif untrusted and forced is None and not self._made_since_loss(source, key, state, tag, generation):
                if not state.big and src.expected.is_echo(key, state):
                    self.stats.echoes[source] += 1
                    continue
                # the source lost or rolled back data since this site last
                # confirmed it: what it holds now may be the loss, not a
                # change; the reconcile judges it
                self.stats.deferred += 1
                self._request_reconcile(f"the {source} side lost or rolled back data")
            elif (source == REMOTE and forced is None and tag is not None and generation is not None
                    and tag < generation.start and not (state.big or src.expected.is_echo(key, state))):
                # another site refilled it after the hub lost data: whether its
                # state or ours is the fresher is the reconcile's to judge
                self.stats.deferred += 1
                self._request_reconcile("a key refilled by another site")
            elif state.big:
                bigs.append((key, state, forced, tag))
            elif src.expected.is_echo(key, state):
                self.stats.echoes[source] += 1
            elif dst.expected.holds(key, state):
                # already there, as far as redisrepl knows: nothing to write
                # (and if the target changed meanwhile, its change is newer
                # and must not be overwritten: its event brings it back)
                self.stats.unchanged += 1
            elif not state.supported:
                self.unsupported(key, source, state.kind)
            else:
                items.append((key, state))
                if source == REMOTE and generation is not None:
                    stamps[key] = generation.as_of(tag)
                if forced is not None and forced.origin is not None:
                    origins[key] = forced.origin
                if forced is not None and forced.expect is not ANYTHING:
                    expects[key] = forced.expect
        if items:
            local_gen = generation.id if source == LOCAL and generation is not None else None
            await self._write(target, items, origins, stamps, expects, local_gen)
        for key, header, forced, tag in bigs:
            as_of = generation.as_of(tag) if source == REMOTE and generation is not None else None
            self._start_big(source, target, key, header, forced, as_of)
        if later:
            self._not_read.update(later)
            self._requeue(later, source)

    def _made_since_loss(self, source, key, state, tag, generation):
        """Was this state, read from a side whose generation is not trusted
        (it lost or rolled back data), written there since? On the hub, its
        record of the key says so. On the local side, the key's latest event
        must have come since the latest local subscription (a restart ends
        the subscription), and agree with the state: present, or gone after
        an event that deletes (an absence after a ``set`` is the loss: after
        a wipe, whatever is present was written since)."""
        if source == REMOTE:
            return tag is not None and tag >= generation.start
        number, event = self._local_event.get(key, (0, None))
        if number <= self._local_subscribed:
            return False
        return state is not ABSENT or event in DELETING_EVENTS

    async def _write(self, target, items, origins=None, read_stamps=None, expects=None, local_gen=None):
        """Write ``items`` to ``target``; ``origins`` marks refills,
        ``expects`` copies made only if the target still holds what the
        reconcile saw, and ``read_stamps`` are the stamps the hub's states
        read from it are as of."""
        dst = self._sides[target]
        for key, state in items:
            dst.expected.expect(key, state)
        try:
            wrote = await dst.store.write(items, origins or None, expects or None)
        except Exception as e:
            # maybe written, maybe not: its echo may still come, but it must
            # not count as known to be there
            for key, _ in items:
                dst.expected.uncertain(key)
            self._failed(target, e)
            if isinstance(e, RefusedError) and e.kind == "http_413" and len(items) == 1:
                # a refusal of this one key's size: say which and how big
                key, state = items[0]
                raise RefusedError(f"{e}; {short(key)} takes {size(state)} bytes", e.kind) from None
            raise
        if wrote.skipped:
            self._refills_refused(target, wrote.skipped)
            items = [(key, state) for key, state in items if key not in wrote.skipped]
        written = wrote.generation.stamp if target == REMOTE and wrote.generation is not None else 0
        if target == LOCAL and wrote.generation is not None:
            local_gen = wrote.generation.id
        origins, read_stamps = origins or {}, read_stamps or {}
        self._written(target, [(key, state, origins.get(key, read_stamps.get(key, written)))
                               for key, state in items], 1, local_gen)
        evicted = [key for key, _ in items if key in self._evicted[target]]
        if evicted and self.synced is not None:
            # evicted there before this copy was recorded: flag it again after
            self.synced.evicted(target, evicted)

    def _unforce(self, key, source):
        """The reconcile's copy of ``key`` from ``source`` is done."""
        forced = self._forced.get(key)
        if forced is not None and forced.source == source:
            del self._forced[key]

    def _refills_refused(self, target, keys):
        """Copies the target did not take: refills of keys that hold
        something as fresh already, or reconcile copies of keys that changed
        there since (their events bring them back)."""
        for key in keys:
            self._sides[target].expected.forget(key)
        self.stats.refills_refused += len(keys)
        self._request_reconcile("copies refused by the target")

    def _written(self, target, items, requests, local_gen=None):
        """``items`` (key, state, stamp) are on both sides now (copied while
        the local side was of generation ``local_gen``)."""
        self._answered(target)
        self.stats.requests[target] += requests
        self.stats.writes[target] += len(items)
        self.stats.last_write[target] = self._clock.seconds()
        for watcher in self._watchers:
            watcher.update(key for key, _, _ in items)
        if self.synced is not None and items:
            self.synced.record(items, local_gen)

    def _start_big(self, source, target, key, header, forced=None, as_of=None):
        if self.big is None:
            self.report_once(key, f"on the {source} side has {header.count} items and big keys "
                             "are not copied here")
            return
        finished = []

        def done(_):
            finished.append(True)
            self._unforce(key, source)
            if self._big_copies.pop(key, None) is not None:
                self._in_flight.discard(key)
                self._pump()
        origin = forced.origin if forced is not None else None
        d = self._big_slots.run(lambda: Deferred.fromCoroutine(
            self._guarded(source, [key], self._copy_big(source, target, key, header, origin, as_of))))
        d.addBoth(done)
        if not finished:   # (a copy that ends at once leaves with its batch)
            self._big_copies[key] = d

    async def _copy_big(self, source, target, key, header, origin=None, as_of=None):
        if self._stopping:
            return
        src, dst = self._sides[source], self._sides[target]
        try:
            if src.expected.has(key):
                # maybe what redisrepl wrote there: compare contents (digested
                # there, a chunk per call: far cheaper than copying it back)
                digest = await self._big_work(target, self.big.digest(src, key, header.kind))
                if src.expected.is_echo(key, attrs.evolve(header, digest=digest)):
                    self.stats.echoes[source] += 1
                    return
            if header.expire_at is not None and header.expire_at - self._clock.seconds() < EXPIRY_MARGIN:
                # expiring: gone by the time it would be copied
                await self._write(target, [(key, ABSENT)])
                return
            copy = await self._big_work(target, self.big.copy(src, dst, key, header, origin))
        except KeyChanged:
            # it changed type or went away meanwhile: read it again
            self._requeue([key], source)
            return
        if copy.refused:
            self._refills_refused(target, [key])
            return
        if copy.state is None:
            self.stats.unchanged += 1
            return
        self.stats.big_copies += 1
        stamp = origin if origin is not None else (as_of if as_of is not None else copy.stamp)
        self._written(target, [(key, copy.state, stamp)], copy.requests, copy.local_generation)

    async def _big_work(self, target, awaitable):
        """Count a failure of a big-key step against the side it came from."""
        try:
            return await awaitable
        except ReplicationError as e:
            self._failed(getattr(e, "side", target), e)
            raise

    def _failed(self, side, error):
        self.stats.failures[side, getattr(error, "kind", "error")] += 1
        if isinstance(error, LinkError):
            self.link_error[side] = str(error)

    def _answered(self, side):
        self.link_error[side] = None

    # -- failures ----------------------------------------------------------

    def _requeue(self, keys, source):
        if self._stopping:
            return
        # failed keys go back to the front, in their order, keeping any
        # change that arrived meanwhile
        for key in reversed(keys):
            self._dirty[key] = self._dirty.pop(key, 0) | BIT[source]
            self._dirty.move_to_end(key, last=False)

    def _pause(self, error):
        if self._paused is not None or self._stopping:
            return
        delay = self._link_backoff.next_delay()
        log.warn("{error}; {backlog} keys waiting, retrying in {delay:.1f}s",
                 error=error, backlog=self.backlog, delay=delay)
        self._paused = self._clock.callLater(delay, self._resume)

    def _resume(self):
        self._paused = None
        self._pump()

    def _refused(self, keys, source, error):
        if len(keys) > 1:
            # one of them was refused: send them one by one to find it
            self._solo.update(keys)
            self._requeue(keys, source)
            return
        self._park(keys[0], source, error)

    def _park(self, key, source, error):
        if self._stopping:
            return
        sides = BIT[source] | self._dirty.pop(key, 0)
        backoff = self._key_backoffs.setdefault(key, self._key_backoff_factory())
        delay = backoff.next_delay()
        if error is not None:
            log.error("{key}: {error}; trying this key again in {delay:.1f}s",
                      key=short(key), error=error, delay=delay)
        call = self._clock.callLater(delay, self._unpark, key)
        self._parked[key] = (sides, call)

    def _unpark(self, key):
        sides, _ = self._parked.pop(key)
        self._dirty[key] = self._dirty.get(key, 0) | sides
        self._pump()
