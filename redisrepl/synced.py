"""What this site knows it synchronised, kept in its local Redis.

- ``__redisrepl__:{<namespace>}:synced``: for each key, the digest of the state
  both sides held when redisrepl last copied it (or found them equal), with
  the hub's stamp of that state and, if one side evicted the key since, which
  one. The reconcile's three-way merge compares both sides against it. A
  deletion is kept too, as a tombstone (no digest), for the recovery window:
  a hub that goes back to before it is then refilled with the deletion
  rather than bringing the key back everywhere.
- ``__redisrepl__:{<namespace>}:seen``: the generation of each side that the
  last reconcile confirmed (redisrepl.epochs).
- ``__redisrepl__:{<namespace>}:site``: this site's name, made once.

Being in the local Redis, all of it survives the daemon's restarts and goes
back with the local data to the same moment when the local Redis restarts
from a snapshot, so that the local side's own history stays consistent.

The records made after copies wait up to FLUSH_AFTER (50 ms) to share one
request (at a steady trickle, one request for many changes instead of one
each); anything else that reads or writes the table sends them first, so
the table changes in the order things happened. A record lost in a crash
within those 50 ms leaves a key that looks never synchronised: the
reconcile then refills rather than deletes, the safe side.
"""

import os
from collections import OrderedDict

import attrs
from twisted.internet.defer import Deferred, DeferredList
from twisted.logger import Logger

from redisrepl import scripts, state
from redisrepl.errors import RefusedError

log = Logger()

#: Keys per HSCAN step of the table.
SCAN_COUNT = 1000
#: Seconds a record after a copy may wait to share its request with others.
FLUSH_AFTER = 0.05
#: Records sent at once, waiting or not.
FLUSH_ITEMS = 1024
#: Keys whose latest record this process remembers (the stamp only), so
#: that after the local Redis goes back to a snapshot a value whose record
#: there is older than this process' is known to be older than the hub's.
RECENT_KEYS = 100_000
#: Side letters of an eviction flag.
EVICTED_ON = {b"L": "local", b"R": "remote"}
SIDE_LETTER = {"local": b"L", "remote": b"R"}


def encoded(digest, stamp, evicted=None):
    """``SyncedEntry(digest, stamp, evicted).encode()``, without the entry
    (recorded for every key copied)."""
    if evicted:
        return digest + b"#%d!" % stamp + SIDE_LETTER[evicted]
    return digest + b"#%d" % stamp


@attrs.frozen
class SyncedEntry:
    """The synchronised state of one key: its digest (``digest@expiry`` as
    the reconcile compares it; b"" for a deletion, a tombstone), the hub's
    stamp of that state (0: unknown, from an older redisrepl), and the side
    that evicted it since, if any."""

    digest: bytes
    stamp: int = 0
    evicted: str | None = None

    @property
    def tombstone(self):
        return not self.digest

    def encode(self):
        return encoded(self.digest, self.stamp, self.evicted)

    @classmethod
    def decode(cls, value):
        if value is None:
            return None
        evicted = None
        if value[-2:-1] == b"!" and value[-1:] in EVICTED_ON:
            evicted, value = EVICTED_ON[value[-1:]], value[:-2]
        digest, sep, stamp = value.rpartition(b"#")
        if not sep:
            return cls(value, 0, evicted)
        try:
            return cls(digest, int(stamp), evicted)
        except ValueError:
            return cls(value, 0, evicted)


class SyncedTable:
    """The last synchronised state of each key, in a hash of the local Redis,
    and this site's confirmed generations and name beside it."""

    def __init__(self, local_store, names, clock=None):
        self._store = local_store
        self._clock = clock  # None: every record is sent at once
        self._recording = set()  # Deferreds of records not yet answered
        self._pending = []  # [local generation, flat key/entry list] waiting to be sent, in order
        self._pending_items = 0
        self._flush_call = None
        # key -> stamp of the latest record this process made of it, oldest first
        self._recent = OrderedDict()
        self.key = names.meta + b"synced"
        self.seen_key = names.meta + b"seen"
        self.site_key = names.meta + b"site"

    async def store(self, found, local_generation):
        """Record (key, digest, stamp) found equal on both sides (held by the
        hub as of that stamp), while the local side was of ``local_generation``."""
        self.flush()
        flat = [x for key, digest, stamp in found for x in (key, encoded(digest, stamp))]
        self._remember((key, stamp) for key, _, stamp in found)
        await self._store.run_script(scripts.RECORD, [self.key], [local_generation or b"", *flat])

    def _remember(self, stamps):
        recent = self._recent
        for key, stamp in stamps:
            if stamp:  # (a record of unknown stamp tells nothing, and takes nothing away)
                recent.pop(key, None)
                recent[key] = stamp
        while len(recent) > RECENT_KEYS:
            recent.popitem(last=False)

    def _forget(self, keys):
        """No longer evidence of anything: records dropped, or not made."""
        for key in keys:
            self._recent.pop(key, None)

    def recorded_after(self, key, stamp):
        """Did this process record ``key`` as synchronised at a stamp later
        than ``stamp`` (that of the local Redis' record of it)? After the
        local Redis went back to a snapshot, its value of such a key is
        older than what both sides held then. False when not remembered
        (past RECENT_KEYS keys, or another process)."""
        remembered = self._recent.get(key)
        return remembered is not None and remembered > stamp

    def record(self, items, local_generation=None):
        """After a copy: both sides now hold these states; ``items`` are
        (key, state, stamp), copied while the local side was of generation
        ``local_generation`` (an id: not recorded if it is no longer). Fire
        and forget."""
        sets = []
        for key, key_state, stamp in items:
            sets += (key, encoded(state.synced_digest(key_state) or b"", stamp))
        self._remember((key, stamp) for key, _, stamp in items)
        generation = local_generation or b""
        if self._pending and self._pending[-1][0] == generation:
            self._pending[-1][1].extend(sets)
        else:
            self._pending.append([generation, sets])
        self._pending_items += len(items)
        if self._clock is None or self._pending_items >= FLUSH_ITEMS:
            self.flush()
        elif self._flush_call is None:
            self._flush_call = self._clock.callLater(FLUSH_AFTER, self.flush)

    def flush(self):
        """Send the records waiting, in order (one request per run of one generation)."""
        if self._flush_call is not None:
            if self._flush_call.active():
                self._flush_call.cancel()
            self._flush_call = None
        pending, self._pending, self._pending_items = self._pending, [], 0
        for generation, sets in pending:
            d = Deferred.fromCoroutine(self._store.run_script(scripts.RECORD, [self.key], [generation, *sets]))
            d.addErrback(self._not_recorded, sets[0::2])
            self._track(d, "synchronised state")

    def _not_recorded(self, failure, keys):
        # refused (out of memory, read-only): no evidence of those copies
        # any more, lest a later write not copied yet be taken for older.
        # Not answered (the local Redis going away, as in a restart): the
        # copies were made all the same, and are exactly what the records
        # that never reached it would have told
        if failure.check(RefusedError):
            self._forget(keys)
        return failure

    def _track(self, d, what):
        self._recording.add(d)
        d.addErrback(lambda f: log.warn("could not record {what}: {error}", what=what, error=f.value))
        d.addBoth(lambda _: self._recording.discard(d))

    def flushed(self):
        """Fires once every record made so far is answered (at shutdown: a
        copy whose record were lost would look unsynchronised next time)."""
        self.flush()
        return DeferredList(list(self._recording))

    def evicted(self, side, keys):
        """``side`` evicted ``keys``: mark their entries so (fire and forget)."""
        self.flush()
        self._track(
            Deferred.fromCoroutine(
                self._store.run_script(scripts.FLAG_EVICTED, [self.key], [SIDE_LETTER[side], *keys])
            ),
            "evictions",
        )

    async def forget(self, entries):
        """Drop the records of (key, entry as read) that still hold what was read."""
        self.flush()
        self._forget(entries[0::2])
        for i in range(0, len(entries), 2000):
            await self._store.run_script(scripts.FORGET, [self.key], entries[i : i + 2000])

    async def get(self, keys):
        """The SyncedEntry of each of ``keys``, in order (None: never synced)."""
        if not keys:
            return []
        self.flush()
        return [SyncedEntry.decode(value) for value in await self._store.command(b"HMGET", self.key, *keys)]

    async def count(self):
        self.flush()
        return await self._store.command("HLEN", self.key)

    async def scan(self, cursor):
        """One HSCAN step: [next cursor, [key, entry, ...]]."""
        self.flush()
        return await self._store.command("HSCAN", self.key, cursor, "COUNT", SCAN_COUNT)

    # -- confirmed generations and the site's name --------------------------------

    async def confirmed(self):
        """{side: generation id} as last confirmed (sides never confirmed are absent)."""
        reply = await self._store.command("HMGET", self.seen_key, b"local", b"remote")
        return {side: value for side, value in zip(("local", "remote"), reply) if value}

    async def confirm(self, confirmations):
        """Record {side: generation id} as confirmed."""
        if confirmations:
            flat = [x for side, gen_id in confirmations.items() for x in (side.encode(), gen_id)]
            await self._store.command("HSET", self.seen_key, *flat)

    async def site_name(self, wanted=None):
        """This site's name: ``wanted`` (kept in the local Redis), else the
        one made at the first start, else a new random one."""
        if wanted:
            await self._store.command("SET", self.site_key, wanted)
            return wanted
        made = os.urandom(8).hex().encode()
        await self._store.command("SET", self.site_key, made, "NX")
        return await self._store.command("GET", self.site_key)
