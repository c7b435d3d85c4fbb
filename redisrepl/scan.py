"""Walking one side's namespace for the reconcile and ``verify``: SCAN step
by SCAN step, each side digests its own keys (the digest_scan and
digest_keys scripts), so values do not travel to be compared and a walk
holds one step at a time; big keys are digested a chunk per call.

Keys a side lists outside the namespace (or among redisrepl's own) are
refused and reported: the hub is trusted to be the hub, not to reach
outside the namespace.
"""

from collections import deque
from contextlib import aclosing

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

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


def _is_big(digest):
    """A big key's answer: ``B`` and its type, to be digested a chunk per call."""
    return digest[:1] == CHANGING and len(digest) > 1


async def _resolved(store, key, digest, expiry, expiries=None, on_big=None):
    """A digest as the scripts answer it, made final: a big key digested a
    chunk per call (after ``on_big(key, type)``), and ``@expiry`` added for
    a key that expires (``_expiring``)."""
    if _is_big(digest):
        kind = digest[1:].decode("ascii", "replace")
        if on_big is not None:
            on_big(key, kind)
        try:
            digest = await big_keys.digest(store, key, kind)
        except big_keys.KeyChanged:
            digest = CHANGING
    return _expiring(key, digest, expiry, expiries)


def _expiring(key, digest, expiry, expiries=None):
    """``digest@expiry`` for a key that expires (absolute unix ms; also put
    in ``expiries``), else ``digest``."""
    if int(expiry) >= 0 and digest not in (UNSUPPORTED, CHANGING):
        digest += b"@" + expiry
        if expiries is not None:
            expiries[key] = int(expiry)
    return digest


class Step(list):
    """The keys of one SCAN step, and how far through its side's keyspace
    the walk is after it (``done``, 0 to 1)."""

    done: float = 0.0


def _reversed(value):
    return int(f"{value:064b}"[::-1], 2)


def scanned(cursor):
    """How far through the keyspace a SCAN is when it returns ``cursor``
    (0 to 1; 1 at the end). Redis walks its table in reverse-binary order:
    the cursor's bits reversed count the slots visited, whatever the
    table's size, so this holds as the table grows or shrinks (roughly:
    a resize during the walk moves it a little)."""
    value = int(cursor)
    if value == 0:
        return 1.0
    return _reversed(value) / 2.0**64


def start_cursor(position):
    """The cursor of a SCAN that starts ``position`` (0 to 1, a multiple of
    a power of 1/2) through the keyspace: the inverse of ``scanned``."""
    return b"%d" % _reversed(int(position * 2**64) % 2**64)


def _tag(raw):
    return int(raw) if raw else None


class _Replies:
    """Replies of the requests a walk has in flight, in the order they come."""

    def __init__(self):
        self.asked = {}  # range -> Deferred of its next step
        self._ready = deque()
        self._waiting = None

    def ask(self, part, d):
        self.asked[part] = d
        d.addBoth(self._arrived, part, d)

    def _arrived(self, result, part, d):
        if self.asked.get(part) is d:
            del self.asked[part]
            self._ready.append((part, result))
            if self._waiting is not None:
                waiting, self._waiting = self._waiting, None
                waiting.callback(None)
        return None

    def __bool__(self):
        """Are replies still to be taken (come or to come)?"""
        return bool(self.asked or self._ready)

    async def next(self):
        """(range, reply) of the next reply to come."""
        while not self._ready:
            self._waiting = Deferred()
            await self._waiting
        part, result = self._ready.popleft()
        if isinstance(result, Failure):
            result.raiseException()
        return part, result

    def forget(self):
        asked, self.asked = list(self.asked.values()), {}
        _forget(*asked)


async def scan_steps(store, names, expiries=None, on_big=None, refused=None, parts=1, pace=None):
    """Yield, SCAN step by SCAN step, [(key, digest@expiry, tag)] of the
    namespace on one side (``@expiry`` only for keys that expire: absolute
    unix ms; ``tag``: the hub's stamp of what the key holds if written
    since its generation started, else None); with a dict ``expiries``,
    fill it with {key: expiry ms} too. Big keys are digested a chunk per
    call, after ``on_big(key, type)``. A key outside the namespace is not
    yielded: ``refused(side, key)`` is told. Each step is a ``Step``: how
    far through the keyspace the walk is after it is its ``done``.

    The keyspace is walked in ``parts`` ranges at once (a power of two),
    each a SCAN from the cursor where its range starts (``start_cursor``)
    to the first that ``scanned`` puts past its end; and the next step of
    a range is asked for as soon as a reply gives its cursor, before this
    step is yielded. So round trips overlap each other and the work on
    the steps (use it in ``contextlib.aclosing``, so that steps asked for
    and no longer wanted are cancelled). Where two ranges meet, the last
    step of the first may list keys that the first step of the next
    listed: those are dropped, so that each key is yielded once (SCAN's
    own guarantee holds: a key that exists throughout is listed).

    With a ``pace`` (redisrepl.pace.Pace), each step's cost to the server
    is told to it, and a range's next step waits until the pace allows it."""
    pattern = webdis.prefix_pattern(names.prefix)
    args = [b"%d" % SCAN_COUNT, b"%d" % store.big_items, b"%d" % state.BIG_BYTES]
    side = store_side(store)
    width = 1.0 / parts
    covered = [0.0] * parts  # how much of each range is walked
    sent = [0.0] * parts  # when each range's step under way was sent (pace's clock)

    def ask(part, cursor):
        if pace is not None:
            sent[part] = pace.now()
        return Deferred.fromCoroutine(store.run_script(scripts.DIGEST_SCAN, [], [cursor, pattern, *args]))

    def checked(reply):
        # (the step's time: at most 15 digits, so that a hub cannot make it a huge number)
        time = reply[1] if reply and len(reply) % 4 == 2 else None
        if not (isinstance(time, bytes) and len(time) <= 15 and time.isdigit()):
            raise ReplicationError(f"unexpected digest scan reply {reply!r:.80}", "bad_reply")
        return reply

    replies = _Replies()
    try:
        # every range's first step before any is yielded: the keys it
        # lists are what the last step of the range before may list again
        for part in range(parts):
            replies.ask(part, ask(part, start_cursor(part * width)))
        firsts = {}
        while len(firsts) < parts:
            part, reply = await replies.next()
            firsts[part] = checked(reply)
        heads = [set(firsts[part][2::4]) for part in range(parts)]
        ready = deque(sorted(firsts.items()))
        while ready or replies:
            part, reply = ready.popleft() if ready else await replies.next()
            cursor = checked(reply)[0]
            if pace is not None:
                pace.spent(int(reply[1]) / 1e6, sent[part])
            position = scanned(cursor)
            last = int(cursor) == 0 or position >= (part + 1) * width
            if last:
                covered[part] = width
            else:
                covered[part] = max(covered[part], min(width, position - part * width))
                replies.ask(part, ask(part, cursor) if pace is None else pace.then(ask, part, cursor))
            again = heads[part + 1] if last and part + 1 < parts else ()
            step = Step()
            owns, append = names.owns, step.append
            for key, digest, expiry, tag in zip(reply[2::4], reply[3::4], reply[4::4], reply[5::4]):
                if not (isinstance(key, bytes) and owns(key)):
                    if refused is not None:
                        refused(side, key)
                    continue
                if key in again:
                    continue
                if _is_big(digest):  # (a coroutine only for those: a step holds a thousand keys)
                    digest = await _resolved(store, key, digest, expiry, expiries, on_big)
                else:
                    digest = _expiring(key, digest, expiry, expiries)
                append((key, digest, _tag(tag)))
            step.done = min(1.0, sum(covered))
            yield step
    finally:
        replies.forget()


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


async def scan_digests(store, names, expiries=None, on_big=None, refused=None, parts=1):
    """{key: digest} of every key of the namespace on one side (walked in
    ``parts`` ranges at once: ``scan_steps``)."""
    digests = {}
    async with aclosing(scan_steps(store, names, expiries, on_big, refused, parts)) as steps:
        async for step in steps:
            digests.update((key, digest) for key, digest, _ in step)
    return digests
