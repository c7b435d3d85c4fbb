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

import attrs
from twisted.application.service import Service
from twisted.internet import task
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from redisrepl import big_keys, scripts, state, webdis
from redisrepl.backoff import Backoff
from redisrepl.epochs import is_lost, lost_windows
from redisrepl.errors import ReplicationError
from redisrepl.merge import CHANGING, UNSUPPORTED, DeleteLimit, Mode, decide
from redisrepl.router import ANYTHING
from redisrepl.sides import LOCAL, OTHER, REMOTE, short
from redisrepl.synced import SyncedEntry

log = Logger()

#: Keys per SCAN step.
SCAN_COUNT = 1000
#: A progress line every so many keys scanned.
PROGRESS_EVERY = 50_000
#: At most this many keys listed when the deletion guard stops a run.
GUARD_SAMPLE = 5


class Voided(Exception):
    """A side's generation changed during the run: its decisions no longer hold."""

    def __init__(self, side):
        super().__init__(side)
        self.side = side


class _Refused:
    """Counts and reports keys a side listed outside the namespace."""

    def __init__(self):
        self.count = 0

    def __call__(self, side, key):
        if self.count == 0:
            log.error("the {side} side listed {key}, which is outside the namespace (or reserved): "
                      "refused; a hub may not reach keys outside the namespace", side=side, key=short(key))
        self.count += 1


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


def _tag(raw):
    return int(raw) if raw else None


async def scan_steps(store, names, expiries=None, on_big=None, refused=None):
    """Yield, SCAN step by SCAN step, [(key, digest@expiry, tag)] of the
    namespace on one side (``@expiry`` only for keys that expire: absolute
    unix ms; ``tag``: the hub's stamp of what the key holds if written
    since its generation started, else None); with a dict ``expiries``,
    fill it with {key: expiry ms} too. Big keys are digested a chunk per
    call, after ``on_big(key, type)``. A key outside the namespace is not
    yielded: ``refused(side, key)`` is told."""
    pattern = webdis.prefix_pattern(names.prefix)
    cursor = b"0"
    while True:
        reply = await store.run_script(scripts.DIGEST_SCAN, [],
                                       [cursor, pattern, b"%d" % SCAN_COUNT, b"%d" % store.big_items,
                                        b"%d" % state.BIG_BYTES])
        if not reply or len(reply) % 4 != 1:
            raise ReplicationError(f"unexpected digest scan reply {reply!r:.80}", "bad_reply")
        cursor = reply[0]
        step = []
        for key, digest, expiry, tag in zip(reply[1::4], reply[2::4], reply[3::4], reply[4::4]):
            if not (isinstance(key, bytes) and names.owns(key)):
                if refused is not None:
                    refused(store_side(store), key)
                continue
            step.append((key, await _resolved(store, key, digest, expiry, expiries, on_big), _tag(tag)))
        yield step
        if cursor in (b"0", 0):
            return


def store_side(store):
    return REMOTE if store.track_writes else LOCAL


async def scan_keys(store, names, refused=None):
    """Yield, SCAN step by SCAN step, the keys of the namespace on one side."""
    pattern = webdis.prefix_pattern(names.prefix)
    cursor = b"0"
    while True:
        reply = await store.run_script(scripts.KEY_SCAN, [], [cursor, pattern, b"%d" % SCAN_COUNT])
        if not reply:
            raise ReplicationError(f"unexpected key scan reply {reply!r:.80}", "bad_reply")
        cursor = reply[0]
        keys = []
        for key in reply[1:]:
            if isinstance(key, bytes) and names.owns(key):
                keys.append(key)
            elif refused is not None:
                refused(store_side(store), key)
        yield keys
        if cursor in (b"0", 0):
            return


async def digests_of(store, keys, on_big=None):
    """The digests (digest@expiry, as scan_steps gives them) of ``keys`` on
    one side, in order; None for a key that does not exist there."""
    if not keys:
        return []
    reply = await store.run_script(scripts.DIGEST_KEYS, keys, [b"%d" % store.big_items, b"%d" % state.BIG_BYTES])
    if len(reply) != 2 * len(keys):
        raise ReplicationError(f"unexpected digest reply {reply!r:.80}", "bad_reply")
    return [await _resolved(store, key, digest, expiry, on_big=on_big) if digest else None
            for key, digest, expiry in zip(keys, reply[0::2], reply[1::2])]


async def existing(store, keys):
    """[(exists, tag)] of ``keys`` on one side, in order."""
    if not keys:
        return []
    reply = await store.run_script(scripts.EXISTS, keys, [])
    if len(reply) != 2 * len(keys):
        raise ReplicationError(f"unexpected exists reply {reply!r:.80}", "bad_reply")
    return [(int(exists) == 1, _tag(tag)) for exists, tag in zip(reply[0::2], reply[1::2])]


async def scan_digests(store, names, expiries=None, on_big=None, refused=None):
    """{key: digest} of every key of the namespace on one side."""
    digests = {}
    async for step in scan_steps(store, names, expiries, on_big, refused):
        digests.update((key, digest) for key, digest, _ in step)
    return digests


def _per_side():
    return {LOCAL: 0, REMOTE: 0}


@attrs.define
class ReconcileStats:
    runs: int = 0
    failures: int = 0
    voided: int = 0                                    # runs stopped: a side lost data during them
    keys_compared: int = 0
    keys_fixed: int = 0
    refilled: int = 0                                  # keys refilled on the hub after it lost data
    last_duration: float = 0.0
    last_end: float = 0.0                              # clock time the last run succeeded
    deleted: dict = attrs.field(factory=_per_side)     # keys deleted, by side deleted on
    blocked: dict = attrs.field(factory=_per_side)     # deletions the guard held back in the last run
    refused_keys: int = 0                              # keys the hub listed outside the namespace


class Reconciler(Service):
    """Runs the reconcile when asked (start-up, reconnects, overflow, a
    side's new generation) and every ``interval`` seconds; one run at a
    time, failed runs retried with backoff."""

    def __init__(self, router, local_store, remote_store, synced, epochs, names,
                 clock, two_way, winner=REMOTE, mirror=False, interval=60.0, backoff=None,
                 max_delete=None, site=None):
        self._router = router
        self._stores = {LOCAL: local_store, REMOTE: remote_store}
        self._epochs = epochs
        self._names = names
        self._clock = clock
        self.two_way = two_way
        self.winner = winner
        self.mirror = mirror
        self.interval = interval
        self.max_delete = max_delete or DeleteLimit()
        self.synced = synced
        self.site = None                 # this site's name, once known
        self._wanted_site = site
        self.allow_key = names.meta + b"allow-mass-delete"
        self._backoff = backoff or Backoff(initial=0.25, maximum=30.0, quick=40)
        self._pending = None        # DelayedCall of the next run
        self._reasons = set()
        self._running = None        # Deferred of the run under way
        self._periodic = None
        self.dirty = False          # a run is owed (overflow, failure)
        self.stats = ReconcileStats()
        self.guard_tripped = {}     # side -> deletions held back by the last run (while it holds)

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

    def generation_changed(self, side, generation):
        """A reply showed a new generation of ``side``: it lost or rolled back data."""
        log.warn("the {side} Redis lost or rolled back data (a new generation of it answered): "
                 "reconciling now, refilling rather than deleting", side=side)
        self.request(f"the {side} side's generation changed", delay=0)

    # -- scheduling --------------------------------------------------------------

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

    def _start(self):
        self._pending = None
        reasons, self._reasons = self._reasons, set()
        self._running = Deferred.fromCoroutine(self.run(", ".join(sorted(reasons)) or "periodic"))
        self._running.addCallbacks(self._succeeded, self._failed)

    def _succeeded(self, _):
        self._running = None
        self._backoff.reset()
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
        self.site = await self.synced.site_name(self.site or self._wanted_site)
        confirmed = await self._confirmed()
        checks = {side: await self._stores[side].check(flag_key=self.allow_key if side == LOCAL else b"")
                  for side in (LOCAL, REMOTE)}
        if LOCAL not in confirmed:
            # the local Redis lost this site's record: does the hub remember
            # this site (by its name) and which local generation it confirmed?
            recorded = await self._stores[REMOTE].command("GET", self._site_record())
            if recorded:
                confirmed[LOCAL] = recorded
        mode = self._mode(checks, confirmed)
        run = _Run(self, mode, {side: check.generation.id for side, check in checks.items()},
                   unlimited=checks[LOCAL].flagged)
        log.info("reconcile ({reason}): comparing the namespace on both sides{how}", reason=reason,
                 how=_describe(mode))
        watcher = self._router.watch()
        run.watcher = watcher
        try:
            await self._compare(run, started)
            await self._forget_stale(checks[REMOTE].now)
            await self._recheck(run)            # both sides as decided, just before deleting
            await run.delete()
            if mode.after_loss:
                # the new generations are confirmed only once what was lost
                # is back, or the next run would take its absence for a deletion
                await self._drained(run.forced)
                await self._recheck(run)
        except Voided as e:
            self.stats.voided += 1
            log.warn("reconcile ({reason}) stopped: the {side} side lost or rolled back data during it; "
                     "its deletions are not made, and a run in refill mode starts now",
                     reason=reason, side=e.side)
            self._reasons.add(f"voided: the {e.side} side's generation changed")
            return
        finally:
            self._router.unwatch(watcher)
        if run.unresolved:
            # keys the hub lost that the live path was busy with were not
            # judged: until a run has, the hub's generation is not confirmed
            # (its absence of them would look like deletions)
            log.info("reconcile ({reason}): {n} keys the hub lost were being copied and are judged by "
                     "another refill run", reason=reason, n=run.unresolved)
            self._reasons.add("after a loss: keys not yet judged")
        else:
            await self._confirm(run.generations)
        if mode.after_loss:
            # the deletions this run held back are made by the next one, on
            # the generations it has just confirmed
            self._reasons.add("after a loss: deletions held back")
        if run.used_allowance:
            await self._stores[LOCAL].command("DEL", self.allow_key)
        duration = self._clock.seconds() - started
        self.stats.runs += 1
        self.stats.keys_compared += run.compared
        self.stats.keys_fixed += run.fixed
        self.stats.refilled += run.refilled
        self.stats.last_duration = duration
        self.stats.last_end = self._clock.seconds()
        log.info("reconcile ({reason}) done: {compared} keys compared, {fixed} differed and are being "
                 "copied, in {duration:.2f}s", reason=reason, compared=run.compared, fixed=run.fixed,
                 duration=duration)

    async def _confirmed(self):
        """{side: generation id} this site last confirmed: from memory (which
        outlives a wipe of the local Redis), else from the local Redis, else
        the first one this process saw (whatever it recorded since then is
        of that one or later)."""
        confirmed = await self.synced.confirmed()
        for side, epoch in self._epochs.items():
            if epoch.confirmed is not None:
                confirmed[side] = epoch.confirmed
            elif side in confirmed:
                epoch.confirmed = confirmed[side]
            elif epoch.first is not None:
                confirmed[side] = epoch.first
        return confirmed

    def _mode(self, checks, confirmed):
        remote = checks[REMOTE]
        hub_lost = REMOTE in confirmed and remote.generation.id != confirmed[REMOTE]
        local_lost = LOCAL in confirmed and checks[LOCAL].generation.id != confirmed[LOCAL]
        window_open = remote.now < remote.generation.start + scripts.RECOVERY_WINDOW * 1_000_000
        return Mode(two_way=self.two_way, winner=self.winner, mirror=self.mirror,
                    hub_lost=hub_lost, local_lost=local_lost,
                    windows=tuple(lost_windows(remote.hist, confirmed.get(REMOTE))) if hub_lost else (),
                    recovery_start=remote.generation.start if window_open else None)

    async def _compare(self, run, started):
        local_store, remote_store = self._stores[LOCAL], self._stores[REMOTE]
        refused = _Refused()
        # Memory stays bounded whatever the size of the namespace: one SCAN
        # step of each side at a time. First every remote key, against its
        # local digest read then; then the keys that only the local side has.
        report = self._progress("remote", started, run)
        on_local_big = self._big_progress(LOCAL)
        async for step in scan_steps(remote_store, self._names, on_big=self._big_progress(REMOTE),
                                     refused=refused):
            run.check_generation(REMOTE)
            run.sizes[REMOTE] += len(step)
            keys = [key for key, _, _ in step]
            here = await digests_of(local_store, keys, on_local_big)
            run.check_generation(LOCAL)
            entries = await self.synced.get(keys)
            for (key, there, tag), mine, entry in zip(step, here, entries):
                await run.judge(key, mine, there, entry, tag)
            await run.flush(self._epochs[REMOTE].current)
            report(run.compared)
        report = self._progress("local", started, run)
        scanned = 0
        async for keys in scan_keys(local_store, self._names, refused=refused):
            run.check_generation(LOCAL)
            scanned += len(keys)
            run.sizes[LOCAL] += len(keys)
            there = await existing(remote_store, keys)
            run.check_generation(REMOTE)
            only_here = [(key, tag) for key, (exists, tag) in zip(keys, there) if not exists]
            keys_here = [key for key, _ in only_here]
            here = await digests_of(local_store, keys_here, on_local_big)
            entries = await self.synced.get(keys_here)
            for (key, tag), mine, entry in zip(only_here, here, entries):
                await run.judge(key, mine, None, entry, tag)
            await run.flush(self._epochs[REMOTE].current)
            report(scanned)
        if refused.count:
            self.stats.refused_keys += refused.count
            log.error("reconcile: {n} keys listed outside the namespace were refused", n=refused.count)

    async def _recheck(self, run):
        for side in (LOCAL, REMOTE):
            await self._stores[side].check()
            run.check_generation(side)

    async def _confirm(self, generations):
        """This site has seen these generations through a whole run: losses
        before them are refilled."""
        await self.synced.confirm(generations)
        for side, gen_id in generations.items():
            self._epochs[side].confirmed = gen_id
        await self._stores[REMOTE].command("SET", self._site_record(), generations[LOCAL])

    def _site_record(self):
        return self._names.meta + b"site:" + self.site

    async def _forget_stale(self, hub_now):
        """Drop the synchronised state of keys absent on both sides (deleted
        on both while the daemon was away), but the tombstones of deletions
        still within the recovery window (``hub_now``: the hub's time, in
        its stamps' unit)."""
        oldest = hub_now - scripts.RECOVERY_WINDOW * 1_000_000
        cursor = b"0"
        while True:
            reply = await self.synced.scan(cursor)
            cursor, keys, values = reply[0], reply[1][0::2], reply[1][1::2]
            if keys:
                here = await existing(self._stores[LOCAL], keys)
                there = await existing(self._stores[REMOTE], keys)
                stale = []
                for key, value, (a, _), (b, _) in zip(keys, values, here, there):
                    entry = SyncedEntry.decode(value)
                    if not a and not b and not (entry.tombstone and entry.stamp > oldest):
                        stale.append(key)
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


def _describe(mode):
    parts = []
    if mode.hub_lost:
        parts.append("the remote side lost or rolled back data since this site last confirmed it: "
                     "refilling what it lost from the local side")
    if mode.local_lost:
        parts.append("the local side lost or rolled back data since this site last confirmed it"
                     + ("" if mode.two_way else ": refilling it from the remote side"))
    if parts:
        parts.append("deleting nothing in this run")
    return "".join("; " + part for part in parts)


def _expectable(digest):
    """What a reconcile copy expects the target to hold still: the digest the
    run saw there (None: absent); anything when that digest says nothing
    (a big key that was changing, a type not replicated)."""
    if digest in (CHANGING, UNSUPPORTED):
        return ANYTHING
    return digest


class _Run:
    """One reconcile run: its decisions, its updates of the synced table, its counts."""

    def __init__(self, reconciler, mode, generations, unlimited=False):
        self._r = reconciler
        self.mode = mode
        self.generations = generations   # side -> generation id the run decides on
        self.unlimited = unlimited       # allow-mass-delete was set: this run may delete any number
        self.used_allowance = unlimited
        self.watcher = set()
        self.forced = []                 # keys copied by this run (kept only after a loss)
        self.deletions = {LOCAL: [], REMOTE: []}   # keys to delete on that side, at the end
        self.deletions_found = _per_side()
        self.sizes = _per_side()         # keys of the namespace on each side
        self.compared = 0
        self.fixed = 0
        self.refilled = 0
        self.unresolved = 0              # keys the hub lost, left to the live path in this run
        self._sets = []

    def check_generation(self, side):
        current = self._r._epochs[side].current
        if current is not None and current.id != self.generations[side]:
            raise Voided(side)

    async def judge(self, key, here, there, entry, tag):
        self.compared += 1
        r = self._r
        router = r._router
        if key in self.watcher or router.pending(key):
            # a live event (or an earlier fix) is being handled: it wins; but
            # if the hub lost this key, the run cannot vouch for it
            if self.mode.hub_lost and entry is not None and is_lost(entry.stamp, self.mode.windows):
                self.unresolved += 1
            return
        for digest, where in ((here, LOCAL), (there, REMOTE)):
            if digest == UNSUPPORTED:
                router.unsupported(key, where, "module type")
        if entry is not None and entry.evicted is None:
            for side in (LOCAL, REMOTE):
                if router.was_evicted(side, key):     # its flag may not be recorded yet
                    entry = attrs.evolve(entry, evicted=side)
        decision = decide(here, there, entry, self.mode, tag)
        if decision.side is None:
            if (here == there and here not in (UNSUPPORTED, CHANGING)
                    and (entry is None or entry.digest != here or entry.evicted is not None)):
                # equal on both sides but not as recorded (changed the same way on both)
                self._sets.append((key, here, tag))
            return
        self.fixed += 1
        if decision.deletes:
            target = OTHER[decision.side]
            self.deletions_found[target] += 1
            log.debug("reconcile: {key} to delete on the {target} side", key=short(key), target=target)
            if len(self.deletions[target]) < router.max_backlog:
                seen = there if decision.side == LOCAL else here
                self.deletions[target].append((key, decision.origin, _expectable(seen)))
            return
        if decision.origin is not None:
            self.refilled += 1
        log.debug("reconcile: {key} differs; taking the {side} side", key=short(key), side=decision.side)
        await r.router_room()
        seen = there if decision.side == LOCAL else here
        router.force(decision.side, key, guard=self.generations[decision.side], origin=decision.origin,
                     expect=_expectable(seen))
        if self.mode.after_loss:
            self.forced.append(key)

    async def flush(self, generation):
        """Record the states found equal, as of the hub's record of each
        (``generation``: the hub's, as the step read them)."""
        sets, self._sets = self._sets, []
        if sets:
            await self._r.synced.store([(key, digest, generation.as_of(tag)) for key, digest, tag in sets],
                                       self.generations[LOCAL])

    async def delete(self):
        """Make the deletions decided, side by side, unless more than the
        limit: then none on that side (the mass-deletion guard)."""
        r = self._r
        for target in (LOCAL, REMOTE):
            found, keys = self.deletions_found[target], self.deletions[target]
            limit = None if self.unlimited else r.max_delete.limit(self.sizes[target])
            if limit is not None and found > limit:
                r.guard_tripped[target] = found
                r.stats.blocked[target] = found
                log.error("reconcile: {n} keys of the {side} side's {size} would be deleted, more than "
                          "--max-delete allows ({limit}: {rule}); none deleted there, everything else "
                          "copied. Among them: {sample}. If these deletions are wanted, set "
                          "{allow} in the local Redis (redis-cli SET ... 1) to let the next run through",
                          n=found, side=target, size=self.sizes[target], limit=limit, rule=str(r.max_delete),
                          sample=", ".join(short(key) for key, _, _ in keys[:GUARD_SAMPLE]),
                          allow=short(r.allow_key, 200))
                continue
            r.guard_tripped.pop(target, None)
            r.stats.blocked[target] = 0
            source = OTHER[target]
            for key, origin, expect in keys:
                if key in self.watcher or r._router.pending(key):
                    continue
                await r.router_room()
                r._router.force(source, key, guard=self.generations[source], origin=origin, expect=expect)
                if origin is not None:
                    self.refilled += 1
                if self.mode.after_loss:
                    self.forced.append(key)
            r.stats.deleted[target] += len(keys)
            if keys:
                log.info("reconcile: deleting {n} keys on the {side} side", n=len(keys), side=target)
