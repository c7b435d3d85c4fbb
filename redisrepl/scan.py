"""Walking one side's namespace for the reconcile and ``verify``: SCAN step
by SCAN step, each side digests its own keys (the digest_scan and
digest_keys scripts), so values do not travel to be compared and a walk
holds one step at a time; big keys are digested a chunk per call.

Keys a side lists outside the namespace (or among redisrepl's own) are
refused and reported: the hub is trusted to be the hub, not to reach
outside the namespace.
"""

from collections import deque

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from redisrepl import big_keys, scripts, state, webdis
from redisrepl.errors import ReplicationError
from redisrepl.merge import CHANGING, UNSUPPORTED
from redisrepl.sides import LOCAL, REMOTE, short

log = Logger()

#: Keys per SCAN step.
SCAN_COUNT = 1000
#: Requests of a reconcile's walk in flight to the hub at once, at most
#: (the hub's pool keeps a connection for each: redisrepl.connections).
LOOKAHEAD = 4


class Refused:
    """Counts and reports keys a side listed outside the namespace."""

    def __init__(self):
        self.count = 0

    def __call__(self, side, key):
        if self.count == 0:
            log.error(
                "the {side} side listed {key}, which is outside the namespace (or reserved): "
                "refused; a hub may not reach keys outside the namespace",
                side=side,
                key=short(key),
            )
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


class Step(list):
    """The keys of one SCAN step, and how far through its side's keyspace
    the walk is after it (``done``, 0 to 1)."""

    done: float = 0.0


def scanned(cursor):
    """How far through the keyspace a SCAN is when it returns ``cursor``
    (0 to 1; 1 at the end). Redis walks its table in reverse-binary order:
    the cursor's bits reversed count the slots visited, whatever the
    table's size, so this holds as the table grows or shrinks (roughly:
    a resize during the walk moves it a little)."""
    value = int(cursor)
    if value == 0:
        return 1.0
    return int(f"{value:064b}"[::-1], 2) / 2.0**64


def _tag(raw):
    return int(raw) if raw else None


async def scan_steps(store, names, expiries=None, on_big=None, refused=None):
    """Yield, SCAN step by SCAN step, [(key, digest@expiry, tag)] of the
    namespace on one side (``@expiry`` only for keys that expire: absolute
    unix ms; ``tag``: the hub's stamp of what the key holds if written
    since its generation started, else None); with a dict ``expiries``,
    fill it with {key: expiry ms} too. Big keys are digested a chunk per
    call, after ``on_big(key, type)``. A key outside the namespace is not
    yielded: ``refused(side, key)`` is told.

    The next step is asked for as soon as a reply gives its cursor, before
    this step is yielded: its round trip overlaps the work on this one (use
    it in ``contextlib.aclosing``, so that a step asked for and not wanted is
    cancelled)."""
    pattern = webdis.prefix_pattern(names.prefix)
    args = [b"%d" % SCAN_COUNT, b"%d" % store.big_items, b"%d" % state.BIG_BYTES]

    def ask(cursor):
        return Deferred.fromCoroutine(store.run_script(scripts.DIGEST_SCAN, [], [cursor, pattern, *args]))

    pending = ask(b"0")
    try:
        while True:
            reply = await pending
            pending = None
            if not reply or len(reply) % 4 != 1:
                raise ReplicationError(f"unexpected digest scan reply {reply!r:.80}", "bad_reply")
            cursor = reply[0]
            last = cursor in (b"0", 0)
            if not last:
                pending = ask(cursor)
            step = Step()
            step.done = scanned(cursor)
            for key, digest, expiry, tag in zip(reply[1::4], reply[2::4], reply[3::4], reply[4::4]):
                if not (isinstance(key, bytes) and names.owns(key)):
                    if refused is not None:
                        refused(store_side(store), key)
                    continue
                step.append((key, await _resolved(store, key, digest, expiry, expiries, on_big), _tag(tag)))
            yield step
            if last:
                return
    finally:
        _forget(pending)


def _forget(*asked):
    """Cancel requests asked for ahead and no longer wanted (their failures too)."""
    for d in asked:
        if d is not None:
            d.addErrback(lambda _: None)
            d.cancel()


async def existing_ahead(steps, store, depth):
    """Yield (keys, [(exists, tag)]) for each list of keys ``steps`` yields,
    asking ``store`` about up to ``depth`` lists at once (their round trips
    overlap), in order. Use it in ``contextlib.aclosing``."""
    asked = deque()
    try:
        async for keys in steps:
            asked.append((keys, Deferred.fromCoroutine(existing(store, keys))))
            if len(asked) >= depth:
                keys, d = asked.popleft()
                yield keys, await d
        while asked:
            keys, d = asked.popleft()
            yield keys, await d
    finally:
        _forget(*(d for _, d in asked))


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
        keys = Step()
        keys.done = scanned(cursor)
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
    return [
        await _resolved(store, key, digest, expiry, on_big=on_big) if digest else None
        for key, digest, expiry in zip(keys, reply[0::2], reply[1::2])
    ]


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
