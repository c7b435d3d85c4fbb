"""The event router: from "key K changed on side S" to "the other side holds
what S holds".

Both sources (local keyspace notifications, the remote PSUBSCRIBE stream)
call ``changed(side, key)``. The router keeps a queue of dirty keys (one entry
per key, however many events it gets: changes coalesce), and works it with
at most ``concurrency`` keys in flight and never two jobs on one key at once.
A job reads the key's state on the side that changed; if that side's
expected-event table says the state is redisrepl's own write, the event was an
echo and is dropped; otherwise it records the state in the other side's table
and writes it there.

A failed read or write never loses the change: the key goes back into the
queue. A ``LinkError`` pauses all work with capped backoff (the side is down);
a ``RefusedError`` parks just that key, with its own backoff.
"""

from collections import OrderedDict

import attrs
from twisted.internet.defer import CancelledError, Deferred, DeferredList, succeed
from twisted.logger import Logger

from redisrepl.backoff import Backoff
from redisrepl.errors import LinkError, RefusedError

log = Logger()

LOCAL = "local"
REMOTE = "remote"
#: When a key is dirty on both sides at once, the first side listed is copied
#: first and wins: the remote is shared by many sites.
PRIORITY = (REMOTE, LOCAL)


def short(key, limit=80):
    """A key as printed in logs: repr of the bytes, cut when long."""
    text = repr(key)[2:-1]
    return text if len(text) <= limit else text[:limit] + f"...({len(key)} bytes)"


@attrs.define
class Side:
    """One Redis as the router sees it: a store that reads and writes key
    states, and the table of states redisrepl wrote there (None when no
    events are read from that side, so no echo can come back)."""

    name: str
    store: object
    expected: object


@attrs.define
class Stats:
    events: dict = attrs.field(factory=lambda: {LOCAL: 0, REMOTE: 0})
    echoes: dict = attrs.field(factory=lambda: {LOCAL: 0, REMOTE: 0})
    writes: dict = attrs.field(factory=lambda: {LOCAL: 0, REMOTE: 0})
    failures: dict = attrs.field(factory=lambda: {LOCAL: 0, REMOTE: 0})
    coalesced: int = 0
    ignored: int = 0


class Router:
    def __init__(self, clock, local, remote, namespace, reserved_prefix,
                 concurrency=8, link_backoff=None, key_backoff=None):
        self._clock = clock
        self._sides = {LOCAL: local, REMOTE: remote}
        self.namespace = namespace
        self.reserved_prefix = reserved_prefix
        self.concurrency = concurrency
        self._link_backoff = link_backoff or Backoff(initial=0.2, maximum=5.0)
        self._key_backoff_factory = key_backoff or (lambda: Backoff(initial=1.0, maximum=60.0))
        self._dirty = OrderedDict()   # key -> set of sides that changed
        self._parked = {}             # key -> (sides, DelayedCall)
        self._key_backoffs = {}       # key -> Backoff, while the key keeps failing
        self._in_flight = {}          # key -> Deferred of its job
        self._paused = None           # DelayedCall while a side is down
        self._stopping = False
        self._pumping = False
        self.stats = Stats()

    # -- input -------------------------------------------------------------

    def owns(self, key):
        """Is ``key`` one redisrepl replicates?"""
        return key.startswith(self.namespace) and not key.startswith(self.reserved_prefix)

    def changed(self, side, key):
        """Side ``side`` announced a change to ``key``."""
        if not self.owns(key):
            self.stats.ignored += 1
            return
        self.stats.events[side] += 1
        if key in self._parked:
            self._parked[key][0].add(side)
            return
        sides = self._dirty.get(key)
        if sides is not None:
            self.stats.coalesced += 1
            sides.add(side)
            return
        self._dirty[key] = {side}
        self._pump()

    @property
    def backlog(self):
        """Keys waiting to be copied (queued, parked or in flight)."""
        busy = sum(1 for key in self._in_flight if key not in self._dirty)
        return len(self._dirty) + len(self._parked) + busy

    # -- lifecycle ---------------------------------------------------------

    def stop(self, timeout=5.0):
        """Take no new jobs; fire when those in flight are done (or after
        ``timeout`` seconds, whichever comes first)."""
        self._stopping = True
        if self._paused is not None and self._paused.active():
            self._paused.cancel()
        for _, call in self._parked.values():
            if call.active():
                call.cancel()
        waiting = [d for d in self._in_flight.values() if d is not None]
        if not waiting:
            return succeed(None)
        d = DeferredList(waiting, consumeErrors=True)
        d.addTimeout(timeout, self._clock)
        d.addErrback(lambda f: log.warn("gave up on {n} writes in flight at shutdown", n=len(self._in_flight)))
        return d

    # -- the work queue ----------------------------------------------------

    def _pump(self):
        if self._pumping:
            return  # a job finished synchronously inside the loop below
        self._pumping = True
        try:
            while (self._dirty and not self._stopping and self._paused is None
                   and len(self._in_flight) < self.concurrency):
                key = next((k for k in self._dirty if k not in self._in_flight), None)
                if key is None:
                    return
                sides = self._dirty.pop(key)
                self._in_flight[key] = None
                d = Deferred.fromCoroutine(self._job(key, sides))
                if key in self._in_flight and not d.called:
                    self._in_flight[key] = d
                d.addBoth(self._finished, key)
        finally:
            self._pumping = False

    def _finished(self, result, key):
        self._in_flight.pop(key, None)
        self._pump()

    async def _job(self, key, sides):
        for source in [s for s in PRIORITY if s in sides]:
            target = REMOTE if source == LOCAL else LOCAL
            try:
                await self._copy(key, source, target)
            except LinkError as e:
                self._requeue(key, {s for s in PRIORITY if s in sides and PRIORITY.index(s) >= PRIORITY.index(source)})
                self._pause(e)
                return
            except RefusedError as e:
                self._park(key, sides, e)
                return
            except CancelledError:
                return  # given up at shutdown
            except Exception:
                log.failure("unexpected error copying {key} from {source}", key=short(key), source=source)
                self._park(key, sides, None)
                return
        self._link_backoff.reset()
        self._key_backoffs.pop(key, None)

    async def _copy(self, key, source, target):
        src, dst = self._sides[source], self._sides[target]
        state = await src.store.read(key)
        if src.expected is not None and src.expected.is_echo(key, state):
            self.stats.echoes[source] += 1
            return
        if not state.supported:
            log.warn("{key} on the {side} side is a {kind}, which is not replicated yet",
                     key=short(key), side=source, kind=state.kind)
            return
        if dst.expected is not None:
            dst.expected.expect(key, state)
        try:
            await dst.store.write(key, state)
        except Exception:
            self.stats.failures[target] += 1
            raise
        self.stats.writes[target] += 1
        log.debug("{key}: {source} -> {target}: {what}", key=short(key),
                  source=source, target=target, what=state.describe())

    def _requeue(self, key, sides):
        if self._stopping:
            return
        current = self._dirty.pop(key, set())
        # failed keys go to the front so they keep their place
        self._dirty[key] = current | sides
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

    def _park(self, key, sides, error):
        if self._stopping:
            return
        sides = set(sides) | self._dirty.pop(key, set())
        backoff = self._key_backoffs.setdefault(key, self._key_backoff_factory())
        delay = backoff.next_delay()
        if error is not None:
            log.error("{key}: {error}; trying this key again in {delay:.1f}s",
                      key=short(key), error=error, delay=delay)
        call = self._clock.callLater(delay, self._unpark, key)
        self._parked[key] = (sides, call)

    def _unpark(self, key):
        sides, _ = self._parked.pop(key)
        self._dirty.setdefault(key, set()).update(sides)
        self._pump()

