"""The reconcile: make the namespace equal on both sides after any gap.

Keyspace notifications are fire-and-forget: what changes while the daemon is
stopped, while a stream is down, or what no event announces (FLUSHDB), is
never announced again. The reconcile finds it by comparison:

1. Both sides compute a digest of every key of the namespace themselves
   (DIGEST_SCAN_SCRIPT, one SCAN step per request, through Webdis on the
   remote side; DIGEST_KEYS_SCRIPT for the same keys on the local side), so
   values do not travel to be compared, and a run holds one SCAN step at a
   time: memory does not grow with the namespace.
2. The last synchronised digests are kept in the local Redis, in the hash
   ``<namespace>__redisrepl__:synced`` (updated after every copy), so they
   survive the daemon's restarts.
3. For each key where the sides differ, ``decide`` picks the side whose state
   both must take, and the router copies it (reading the current state then,
   so anything newer wins).

Two-way (``--rc``) it is a three-way merge against the synchronised digest:
a key changed (or deleted) on one side only takes that side's state, so a key
deleted while the daemon was down stays deleted; a key changed on both sides
takes the winner's (``--winner``, default remote). One-way, the remote becomes
a mirror of the local side (keys only on the remote are deleted unless
``--keep-remote-only``).

A side that lost its data wholesale (a Redis restarted without persistence,
FLUSHDB, FLUSHALL) is told apart from a mass deletion by a marker key,
``<namespace>__redisrepl__:marker``, that redisrepl keeps on each side: when
the remote's marker is gone, its missing keys are refilled from the local
side, not deleted there. (When the local side loses its data, its synced
table goes with it, so its missing keys count as never synchronised and are
refilled from the remote.)

Keys with live events during a run are left to the live path: events win.
"""

import attrs
from twisted.application.service import Service
from twisted.internet import task
from twisted.internet.defer import Deferred, FirstError, gatherResults
from twisted.logger import Logger

from redisrepl import big_keys, state, webdis
from redisrepl.backoff import Backoff
from redisrepl.errors import ReplicationError
from redisrepl.router import LOCAL, REMOTE, short

log = Logger()

#: Keys per SCAN step.
SCAN_COUNT = 1000
#: A progress line every so many keys scanned.
PROGRESS_EVERY = 50_000
UNSUPPORTED = b"x"
#: The digest of a big key that changed type while it was digested in
#: chunks: not compared in this run (the event of that change is handled).
CHANGING = b"B"


def decide(local, remote, synced, two_way=True, winner=REMOTE, remote_lost=False,
           keep_remote_only=False, local_lost=False):
    """The side whose state both sides must take for one key, or None.

    ``local``, ``remote``, ``synced``: digests (None: absent / never synced).
    """
    if local == remote:
        return None
    # a side that lost its data is refilled (presence needs no digest)
    if remote_lost and remote is None and local != UNSUPPORTED:
        return LOCAL
    if local_lost and local is None and remote != UNSUPPORTED:
        return REMOTE
    if UNSUPPORTED in (local, remote) or CHANGING in (local, remote):
        return None
    if not two_way:
        if local is None and keep_remote_only:
            return None
        return LOCAL
    local_changed = local != synced
    remote_changed = remote != synced
    if local_changed and not remote_changed:
        return LOCAL
    if remote_changed and not local_changed:
        return REMOTE
    return winner


class SyncedTable:
    """The last synchronised digest of each key, in a hash of the local Redis."""

    def __init__(self, local_store, reserved_prefix):
        self._store = local_store
        self.key = reserved_prefix + b"synced"

    def record(self, items):
        """After a copy: both sides now hold these states. Fire and forget."""
        sets, dels = [], []
        for key, key_state in items:
            digest = state.synced_digest(key_state)
            if digest is None:
                dels.append(key)
            else:
                sets += (key, digest)
        d = Deferred.fromCoroutine(self.update(sets, dels))
        d.addErrback(lambda f: log.warn("could not record synchronised state: {e}", e=f.value))

    async def update(self, sets, dels):
        """Store ``sets`` (flat key, digest pairs) and drop ``dels``.

        Every command is sent before any reply is awaited, so that updates
        reach Redis in the order they were made (one connection, in order).
        """
        sent = [Deferred.fromCoroutine(self._store.command("HSET", self.key, *sets[i:i + 2000]))
                for i in range(0, len(sets), 2000)]
        sent += [Deferred.fromCoroutine(self._store.command("HDEL", self.key, *dels[i:i + 1000]))
                 for i in range(0, len(dels), 1000)]
        if sent:
            try:
                await gatherResults(sent, consumeErrors=True)
            except FirstError as e:
                e.subFailure.raiseException()

    async def get(self, keys):
        """The synchronised digests of ``keys``, in order (None: never synced)."""
        if not keys:
            return []
        return await self._store.command("HMGET", self.key, *keys)

    async def count(self):
        return await self._store.command("HLEN", self.key)

    async def scan(self, cursor):
        """One HSCAN step: [next cursor, [key, digest, ...]]."""
        return await self._store.command("HSCAN", self.key, cursor, "COUNT", SCAN_COUNT)


async def _resolved(store, key, digest, expiry, expiries=None, on_big=None):
    """A digest as the scripts answer it, made final: a big key digested a
    chunk per call (after ``on_big(key, type)``), and ``@expiry`` added for
    a key that expires (absolute unix ms; also put in ``expiries``)."""
    if digest[:1] == CHANGING and len(digest) > 1:
        kind = digest[1:].decode("ascii", "replace")
        if on_big is not None:
            on_big(key, kind)
        try:
            digest = await big_keys.digest(store, key, kind)
        except big_keys.KeyChanged:
            digest = CHANGING
    if int(expiry) >= 0 and digest not in (UNSUPPORTED, CHANGING):
        digest += b"@" + expiry
        if expiries is not None:
            expiries[key] = int(expiry)
    return digest


async def scan_steps(store, namespace, reserved_prefix, expiries=None, on_big=None):
    """Yield, SCAN step by SCAN step, [(key, digest@expiry)] of the namespace
    on one side (``@expiry`` only for keys that expire: absolute unix ms);
    with a dict ``expiries``, fill it with {key: expiry ms} too. Big keys
    (more than ``store.big_items`` items) are digested a chunk per call,
    after ``on_big(key, type)`` is called."""
    pattern = webdis.prefix_pattern(namespace)
    cursor = b"0"
    while True:
        reply = await store.run_script(state.DIGEST_SCAN_SCRIPT, [],
                                       [cursor, pattern, b"%d" % SCAN_COUNT, reserved_prefix,
                                        b"%d" % store.big_items])
        if not isinstance(reply, list) or len(reply) % 3 != 1:
            raise ReplicationError(f"unexpected digest scan reply {reply!r:.80}", "bad_reply")
        cursor = reply[0]
        step = []
        for key, digest, expiry in zip(reply[1::3], reply[2::3], reply[3::3]):
            step.append((key, await _resolved(store, key, digest, expiry, expiries, on_big)))
        yield step
        if cursor in (b"0", 0):
            return


async def scan_keys(store, namespace, reserved_prefix):
    """Yield, SCAN step by SCAN step, the keys of the namespace on one side."""
    pattern = webdis.prefix_pattern(namespace)
    cursor = b"0"
    while True:
        reply = await store.run_script(state.KEY_SCAN_SCRIPT, [],
                                       [cursor, pattern, b"%d" % SCAN_COUNT, reserved_prefix])
        if not isinstance(reply, list) or not reply:
            raise ReplicationError(f"unexpected key scan reply {reply!r:.80}", "bad_reply")
        cursor = reply[0]
        yield reply[1:]
        if cursor in (b"0", 0):
            return


async def digests_of(store, keys, on_big=None):
    """The digests (digest@expiry, as scan_steps gives them) of ``keys`` on
    one side, in order; None for a key that does not exist there."""
    if not keys:
        return []
    reply = await store.run_script(state.DIGEST_KEYS_SCRIPT, keys, [b"%d" % store.big_items])
    if not isinstance(reply, list) or len(reply) != 2 * len(keys):
        raise ReplicationError(f"unexpected digest reply {reply!r:.80}", "bad_reply")
    return [await _resolved(store, key, digest, expiry, on_big=on_big) if digest else None
            for key, digest, expiry in zip(keys, reply[0::2], reply[1::2])]


async def scan_digests(store, namespace, reserved_prefix, expiries=None, on_big=None):
    """{key: digest} of every key of the namespace on one side."""
    digests = {}
    async for step in scan_steps(store, namespace, reserved_prefix, expiries, on_big):
        digests.update(step)
    return digests


@attrs.define
class ReconcileStats:
    runs: int = 0
    failures: int = 0
    keys_compared: int = 0
    keys_fixed: int = 0
    last_duration: float = 0.0
    last_end: float = 0.0


class Reconciler(Service):
    """Runs the reconcile when asked (start-up, reconnects, overflow) and every
    ``interval`` seconds; one run at a time, failed runs retried with backoff."""

    def __init__(self, router, local_store, remote_store, namespace, reserved_prefix, clock,
                 two_way, winner=REMOTE, keep_remote_only=False, interval=60.0, backoff=None,
                 site=b"site"):
        self._router = router
        self._stores = {LOCAL: local_store, REMOTE: remote_store}
        self._namespace = namespace
        self._reserved = reserved_prefix
        self._clock = clock
        self.two_way = two_way
        self.winner = winner
        self.keep_remote_only = keep_remote_only
        self.interval = interval
        self.synced = SyncedTable(local_store, reserved_prefix)
        # The local marker says the local data is the one redisrepl synced;
        # the remote one, per site (several sites may share a namespace),
        # says the same of the remote data for this site.
        self._local_marker = reserved_prefix + b"marker"
        self._remote_marker = reserved_prefix + b"marker:" + site
        self._backoff = backoff or Backoff(initial=1.0, maximum=30.0)
        self._pending = None        # DelayedCall of the next run
        self._reasons = set()
        self._running = None        # Deferred of the run under way
        self._periodic = None
        self.dirty = False          # a run is owed (overflow, failure)
        self.stats = ReconcileStats()
        router.on_written.append(lambda target, items: self.synced.record(items))
        router.on_overflow.append(lambda: self.request("the queue was full"))

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
        if self._pending is not None and self._pending.active():
            self._pending.cancel()
        if self._running is not None:
            self._running.cancel()

    async def _set_markers(self):
        """Only a reconcile sets them, after comparing (and, after a loss,
        once the refill has been copied): set earlier, they would hide a loss."""
        await self._stores[LOCAL].command("SET", self._local_marker, b"1", "NX")
        await self._stores[REMOTE].command("SET", self._remote_marker, b"1", "NX")

    # -- scheduling --------------------------------------------------------------

    def request(self, reason, delay=0.2):
        """Run soon (requests close together make one run)."""
        if not self.running:
            return
        if reason != "periodic" or not self._reasons:
            self._reasons.add(reason)
        if self._running is not None or self._pending is not None:
            return
        self._pending = self._clock.callLater(delay, self._start)

    def _start(self):
        self._pending = None
        reasons, self._reasons = self._reasons, set()
        self._running = Deferred.fromCoroutine(self.run(", ".join(sorted(reasons)) or "periodic"))
        self._running.addCallbacks(self._succeeded, self._failed)

    def _succeeded(self, _):
        self._running = None
        self._backoff.reset()
        if self._reasons:
            self.request(", ".join(sorted(self._reasons)))

    def _failed(self, failure):
        self._running = None
        if not self.running:
            return None
        self.stats.failures += 1
        self.dirty = True
        delay = self._backoff.next_delay()
        if failure.check(ReplicationError):
            log.warn("reconcile failed: {error}; again in {delay:.1f}s", error=failure.value, delay=delay)
        else:
            log.failure("reconcile failed; again in {delay:.1f}s", failure, delay=delay)
        self._reasons.add("retry")
        if self._pending is None:
            self._pending = self._clock.callLater(delay, self._start)
        return None

    # -- one run -------------------------------------------------------------------

    async def run(self, reason):
        started = self._clock.seconds()
        self.dirty = False
        watcher = self._router.watch()
        run = _Run(self, watcher)
        try:
            log.info("reconcile ({reason}): comparing the namespace on both sides", reason=reason)
            local_store, remote_store = self._stores[LOCAL], self._stores[REMOTE]
            local_marker = await local_store.command("GET", self._local_marker)
            remote_marker = await remote_store.command("GET", self._remote_marker)
            # synchronised state without the remote marker: the remote lost its
            # data (or it was never marked: refilling is the safe mistake)
            run.remote_lost = remote_marker is None and await self.synced.count() > 0
            # the remote knows this site but the local marker is gone: the
            # local side lost its data (with its synchronised state)
            run.local_lost = local_marker is None and remote_marker is not None
            if run.remote_lost:
                log.warn("the remote side lost its data (its marker is gone): refilling it from the "
                         "local side rather than deleting there")
            if run.local_lost:
                log.warn("the local side lost its data (its marker is gone): refilling it from the "
                         "remote side rather than deleting there")
            # Memory stays bounded whatever the size of the namespace: one
            # SCAN step of each side at a time. First every remote key,
            # against its local digest read then; then the keys that only
            # the local side has.
            report = self._progress("remote", started, run)
            on_local_big = self._big_progress(LOCAL)
            async for step in scan_steps(remote_store, self._namespace, self._reserved,
                                         on_big=self._big_progress(REMOTE)):
                keys = [key for key, _ in step]
                here = await digests_of(local_store, keys, on_local_big)
                synced = await self.synced.get(keys)
                for (key, there), mine, last in zip(step, here, synced):
                    await run.judge(key, mine, there, last)
                await run.flush()
                report(run.compared)
            report = self._progress("local", started, run)
            scanned = 0
            async for keys in scan_keys(local_store, self._namespace, self._reserved):
                scanned += len(keys)
                there = await remote_store.run_script(state.EXISTS_SCRIPT, keys, []) if keys else []
                only_here = [key for key, exists in zip(keys, there) if int(exists) == 0]
                here = await digests_of(local_store, only_here, on_local_big)
                synced = await self.synced.get(only_here)
                for key, mine, last in zip(only_here, here, synced):
                    await run.judge(key, mine, None, last)
                await run.flush()
                report(scanned)
            await self._forget_stale()
        finally:
            self._router.unwatch(watcher)
        if run.remote_lost or run.local_lost:
            # the markers say "this side holds synchronised data": only once
            # the refill is copied, or the next run would take the missing
            # keys for deletions
            await self._drained(run.forced)
        await self._set_markers()
        duration = self._clock.seconds() - started
        self.stats.runs += 1
        self.stats.keys_compared += run.compared
        self.stats.keys_fixed += run.fixed
        self.stats.last_duration = duration
        self.stats.last_end = self._clock.seconds()
        log.info("reconcile ({reason}) done: {compared} keys compared, {fixed} differed and are being "
                 "copied, in {duration:.2f}s", reason=reason, compared=run.compared, fixed=run.fixed,
                 duration=duration)

    async def _forget_stale(self):
        """Drop the synchronised digests of keys absent on both sides (deleted
        on both while the daemon was away): kept, they would make a new key of
        that name look like a conflict."""
        cursor = b"0"
        while True:
            reply = await self.synced.scan(cursor)
            cursor, keys = reply[0], reply[1][0::2]
            if keys:
                here = await self._stores[LOCAL].run_script(state.EXISTS_SCRIPT, keys, [])
                there = await self._stores[REMOTE].run_script(state.EXISTS_SCRIPT, keys, [])
                stale = [key for key, a, b in zip(keys, here, there) if int(a) == 0 and int(b) == 0]
                if stale:
                    await self.synced.update([], stale)
            if cursor in (b"0", 0):
                return

    async def _drained(self, keys):
        """Wait until the router has copied ``keys`` (none queued or in flight)."""
        keys = set(keys)
        while keys:
            keys = {key for key in keys if self._router.pending(key)}
            if keys:
                await task.deferLater(self._clock, 0.1, lambda: None)

    async def router_room(self):
        """Wait while the router's queue is more than half full: the fixes of
        a large reconcile go in as fast as they are copied, never overflowing."""
        while self._router.backlog >= self._router.max_backlog // 2:
            await task.deferLater(self._clock, 0.05, lambda: None)

    def _big_progress(self, side):
        def report(key, kind):
            log.info("reconcile: digesting the big {kind} {key} on the {side} side, a chunk at a time",
                     kind=kind, key=short(key), side=side)
        return report

    def _progress(self, side, started, run):
        state_ = {"next": PROGRESS_EVERY}

        def report(scanned):
            if scanned >= state_["next"]:
                state_["next"] += PROGRESS_EVERY
                elapsed = max(self._clock.seconds() - started, 1e-6)
                log.info("reconcile: {n} keys scanned on the {side} side ({rate:.0f} keys/s), "
                         "{fixed} of {compared} compared so far differ and are being copied",
                         n=scanned, side=side, rate=scanned / elapsed, fixed=run.fixed, compared=run.compared)
        return report


class _Run:
    """One reconcile run: its decisions, its updates of the synced table, its counts."""

    def __init__(self, reconciler, watcher):
        self._r = reconciler
        self._watcher = watcher
        self.remote_lost = False
        self.local_lost = False
        self.forced = []         # keys copied by this run (kept only after a loss)
        self.compared = 0
        self.fixed = 0
        self._sets, self._dels = [], []

    async def judge(self, key, here, there, last):
        self.compared += 1
        r = self._r
        if key in self._watcher or r._router.pending(key):
            return  # a live event (or an earlier fix) is being handled: it wins
        for digest, where in ((here, LOCAL), (there, REMOTE)):
            if digest == UNSUPPORTED:
                r._router.unsupported(key, where, "module type")
        side = decide(here, there, last, r.two_way, r.winner, self.remote_lost, r.keep_remote_only,
                      self.local_lost)
        if side is not None:
            self.fixed += 1
            if self.remote_lost or self.local_lost:
                self.forced.append(key)
            log.debug("reconcile: {key} differs; taking the {side} side", key=short(key), side=side)
            await r.router_room()
            r._router.force(side, key)
        elif here == there and here != last and here not in (UNSUPPORTED, CHANGING):
            # equal on both sides but not as recorded (changed the same way on both)
            self._sets += (key, here)

    async def flush(self):
        sets, dels, self._sets, self._dels = self._sets, self._dels, [], []
        await self._r.synced.update(sets, dels)
