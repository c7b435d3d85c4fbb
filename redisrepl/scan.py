"""Walking one side's namespace for the reconcile and ``verify``: SCAN step
by SCAN step, each side digests its own keys (the digest_scan and
digest_keys scripts), so values do not travel to be compared and a walk
holds one step at a time; big keys are digested a chunk per call.

Keys a side lists outside the namespace (or among redisrepl's own) are
refused and reported: the hub is trusted to be the hub, not to reach
outside the namespace.
"""

from twisted.logger import Logger

from redisrepl import big_keys, scripts, state, webdis
from redisrepl.errors import ReplicationError
from redisrepl.merge import CHANGING, UNSUPPORTED
from redisrepl.sides import LOCAL, REMOTE, short

log = Logger()

#: Keys per SCAN step.
SCAN_COUNT = 1000


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
        reply = await store.run_script(
            scripts.DIGEST_SCAN,
            [],
            [cursor, pattern, b"%d" % SCAN_COUNT, b"%d" % store.big_items, b"%d" % state.BIG_BYTES],
        )
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
