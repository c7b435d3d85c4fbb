"""Big keys: copied and digested in chunks, never held whole.

A key with more items than the threshold (``--big-key-items``, 10,000 by
default) is not read in one piece: the read script gives only its header
(``state.BigState``: type, number of items, expiry). The router then hands it
here:

- **Copy**: the source is read a chunk at a time (``HSCAN``/``SSCAN``/
  ``ZSCAN``, ``LRANGE`` ranges, ``XRANGE`` from the last ID), each chunk is
  added to a temporary key under the meta prefix of the target (it
  expires by itself if the copy is abandoned), and one last script renames
  it over the key and sets its expiry (unless what was read is what the
  target is known to hold already). The target never shows half a key,
  and the daemon holds at most two chunks (the next one is read while the
  last one is written) whatever the size of the key: 1,000 items, fewer
  when chunks pass 4 MB (the next one then asks for fewer items).
- **Digest**: the key's content digest is computed as the chunks pass
  (``state.Digester``), and recorded as the synchronised state like that of
  any other copy.
- **Echo**: the copy's only events on the target are ``rename_to`` and then
  ``expire`` or ``persist``. They are recorded as expected *events* before
  the last script runs, and the router drops exactly those, once each; any
  other event on the key is genuine. The state copied is recorded too, so
  that an echo whose events come late (or were lost) is still recognised,
  by digesting the key where it changed.
- **Reconcile**: ``digest`` computes a big key's digest inside Redis a chunk
  per call, so no call blocks the server for long, and sums the pieces here.

A key that changes while it is copied is copied again (its event queued it
again); one that changes type or disappears meanwhile is re-read from
scratch; one about to expire is deleted on the other side instead (by the
router). A SCAN may return an item twice while a hash grows: the copy is
still right, and its digest is then merely wrong, which can cost one extra
copy, never a lost change.
"""

import os

import attrs
from twisted.internet.defer import Deferred

from redisrepl import scripts, state
from redisrepl.errors import ReplicationError
from redisrepl.sides import REMOTE
from redisrepl.state import DIGEST_CHUNK, DIGEST_PIECE, STRING, Digester

#: Items per chunk (a hint for the SCAN family, exact for lists and streams).
CHUNK_ITEMS = DIGEST_CHUNK
#: Bytes per piece of a big string's copy.
PIECE_BYTES = 4 * 1024 * 1024
#: A copy asks for fewer items per chunk when chunks pass this many bytes.
CHUNK_BYTES = 4 * 1024 * 1024
#: Seconds a temporary key lives if its copy is abandoned.
TEMPORARY_LIFETIME = 300

#: The temporary keys of big strings' copies start so (plain characters:
#: they go in URLs); they are redisrepl's own (redisrepl.namespace).
PLAIN_TEMPORARY = b"__redisrepl__-tmp-"


class KeyChanged(Exception):
    """The key changed type or disappeared while it was read in chunks."""


#: A copy whose key expires sooner than this (seconds) is not finished: the
#: key is read again (and, expired by then, deleted on the other side).
EXPIRY_MARGIN = 1.0


def finish_events(expire_at):
    """The keyspace events the finish script causes on the key."""
    return [b"rename_to", b"persist" if expire_at is None else b"expire"]


def next_count(count, size, most=CHUNK_ITEMS, limit=CHUNK_BYTES):
    """Items to ask for next, after a chunk of ``count`` items took ``size``
    bytes: fewer when chunks are too big (big items), back up to ``most``."""
    if size > limit:
        return max(1, count * limit // size)
    if size < limit // 4:
        return min(most, count * 2)
    return count


async def read_chunk(store, key, kind, cursor, count=CHUNK_ITEMS, mode=b"items"):
    """One chunk of a big key: (next cursor, items or [digest], the side's
    generation); the cursor is b"0" after the last chunk. Raises KeyChanged
    if the key is no longer of type ``kind``."""
    reply, generation = await store.call(scripts.CHUNK, [key], [kind.encode(), cursor, b"%d" % count, mode])
    if len(reply) < 2:
        raise ReplicationError(f"unexpected chunk reply {reply!r:.80}", "bad_reply")
    if reply[1] != kind.encode():
        raise KeyChanged(reply[1])
    return reply[0], reply[2:], generation


@attrs.frozen
class BigCopy:
    """The outcome of a big key's copy: the BigState copied, with its digest
    (None when the target's table says it holds that state already: nothing
    was put in place); the write requests sent; the hub's stamp of the state
    (read from it, or written to it); ``refused``: a refill the hub refused
    because it holds something as fresh."""

    state: object = None
    requests: int = 0
    stamp: int = 0
    refused: bool = False
    local_generation: bytes | None = None  # the local side's, for the record of the copy
    sent: int = 0  # bytes of values written to the target


async def digest(store, key, kind):
    """The content digest of a big key, computed inside Redis a chunk per call."""
    digester = Digester(kind)
    cursor = b"0"
    count = DIGEST_PIECE if kind == STRING else DIGEST_CHUNK
    while True:
        cursor, piece, _ = await read_chunk(store, key, kind, cursor, count, b"digest")
        if piece and piece[0]:
            if kind in (state.LIST, state.STREAM, STRING):
                digester.add_chunk(piece[0])
            else:
                digester.add_xor(piece[0])
        if cursor in (b"0", 0):
            return digester.digest()


class BigCopier:
    """Copies big keys from one side to the other in chunks (see the module)."""

    def __init__(self, clock, meta_prefix, chunk_items=CHUNK_ITEMS, chunk_bytes=CHUNK_BYTES, piece_bytes=PIECE_BYTES):
        self._clock = clock
        self._meta = meta_prefix
        self.chunk_items = chunk_items
        self.chunk_bytes = chunk_bytes
        self.piece_bytes = piece_bytes

    def temporary_key(self, kind=None):
        """A new temporary key for each copy: a late request of an abandoned
        copy (its deletion included) can never touch the next one's. That of
        a string goes in URLs (its pieces are PUT bodies): plain characters
        only, so that no proxy changes it on the way."""
        if kind == STRING:
            return PLAIN_TEMPORARY + os.urandom(10).hex().encode()
        return self._meta + b"tmp:" + os.urandom(10).hex().encode()

    async def digest(self, side, key, kind):
        """The digest of a big key on ``side`` (a router Side), computed there."""
        return await self._on(side, digest(side.store, key, kind))

    async def copy(self, source, target, key, header, origin=None):
        """Make ``key`` on ``target`` (a router Side) hold what it holds on
        ``source`` (with ``origin``: as a refill of a state known since that
        stamp). Returns a BigCopy. Raises KeyChanged if the key must be read
        again from scratch (it changed type, went away, or is about to
        expire); errors of a side carry that side's name in ``side``."""
        kind = header.kind
        temporary = self.temporary_key(kind)
        digester = Digester(kind)
        cursor, reading, requests, sent = b"0", None, 1, 0
        count = self.piece_bytes if kind == STRING else self.chunk_items
        first, read_stamp, read_gen, offset = True, 0, None, 0
        try:
            reading = self._read(source, key, kind, cursor, count)
            while reading is not None:
                cursor, items, generation = await reading
                read_stamp, read_gen = generation.stamp, generation.id
                if kind != STRING:
                    count = next_count(count, sum(len(item) for item in items), self.chunk_items, self.chunk_bytes)
                # the next chunk is read while this one is written
                reading = self._read(source, key, kind, cursor, count) if cursor not in (b"0", 0) else None
                digester.add(items)
                if kind == STRING:
                    piece = items[0] if items else b""
                    if piece or first:
                        written = await self._on(
                            target, target.store.write_piece(temporary, offset, piece, TEMPORARY_LIFETIME * 1000)
                        )
                        if not written:
                            # the copy so far is gone (expired, evicted, the side wiped): start again
                            raise KeyChanged(b"none")
                        offset += len(piece)
                        sent += len(piece)
                        first = False
                        requests += 1
                elif items:
                    await self._write_chunk(target, temporary, kind, items, first)
                    sent += sum(len(item) for item in items)
                    first = False
                    requests += 1
            if header.expire_at is not None and header.expire_at - self._clock.seconds() < EXPIRY_MARGIN:
                raise KeyChanged(b"expiring")
            copied = state.BigState(kind, header.count, header.expire_at, digester.digest())
            if target.expected.holds(key, copied):
                # what redisrepl last wrote there: putting it in place again
                # would change nothing, or undo a newer change of the target
                self._abandon(target, temporary)
                return BigCopy(None, requests, read_stamp)
        except BaseException:
            self._abandon(target, temporary)
            raise
        finally:
            if reading is not None:
                reading.addErrback(lambda _: None)  # given up with the copy
        expire_ms = 0 if header.expire_at is None else max(1, round(header.expire_at * 1000))
        events = finish_events(header.expire_at)
        # its echo: by its events, or by its content if they come late or not at all
        target.expected.expect_events(key, events)
        target.expected.expect(key, copied)
        try:
            done, generation = await self._on(
                target,
                target.store.call(
                    scripts.FINISH, [temporary, key], [b"%d" % expire_ms, b"" if origin is None else b"%d" % origin]
                ),
            )
        except BaseException:
            # maybe done, maybe not: its echo is still recognised, but it is
            # not known to be there (and its events stay expected a while)
            target.expected.uncertain(key)
            raise
        outcome = int(done[0]) if done else 0
        if outcome != 1:
            target.expected.withdraw_events(key, len(events))
            target.expected.forget(key)
            if outcome == 2:
                return BigCopy(None, requests, read_stamp, refused=True)
            raise KeyChanged(b"none")
        if target.name == REMOTE:
            return BigCopy(copied, requests, generation.stamp, local_generation=read_gen, sent=sent)
        return BigCopy(copied, requests, read_stamp, local_generation=generation.id, sent=sent)

    def _read(self, side, key, kind, cursor, count):
        return Deferred.fromCoroutine(self._on(side, read_chunk(side.store, key, kind, cursor, count)))

    async def _write_chunk(self, side, temporary, kind, items, first):
        mode = b"=" if first else b"+"
        await self._on(
            side,
            side.store.run_script(
                scripts.WRITE,
                [temporary],
                state.write_segment(mode + kind.encode(), b"%d" % (TEMPORARY_LIFETIME * 1000), items),
            ),
        )

    def _abandon(self, side, temporary):
        """Delete what an abandoned copy wrote, if the side answers (it
        expires by itself otherwise)."""
        d = Deferred.fromCoroutine(
            side.store.run_script(scripts.WRITE, [temporary], state.write_segment(b"none", b"0", []))
        )
        d.addErrback(lambda _: None)

    @staticmethod
    async def _on(side, awaitable):
        try:
            return await awaitable
        except ReplicationError as e:
            raise e.on(side.name) from None
