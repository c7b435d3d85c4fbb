"""Reading and writing whole key states on either side: the router's two writers.

Both run the same Lua scripts (redisrepl/lua), so a key reads and writes
identically on the local Redis (txredisapi) and the remote one (Webdis).
Every script call carries the context the scripts need (where redisrepl's
own keys are, a fresh generation id, whether this side stamps its writes) and
every reply ends with the side's generation, which the store hands to the
side's ``SideEpoch`` before returning the rest.
"""

import os

import attrs
import txredisapi
from twisted.internet.defer import CancelledError, Deferred

from redisrepl import scripts, state
from redisrepl.deadlines import Deadlines
from redisrepl.epochs import Generation
from redisrepl.errors import LinkError, NoScriptError, RefusedError, ReplicationError
from redisrepl.redis_protocol import connected
from redisrepl.webdis_client import TRANSIENT_REDIS_ERRORS

#: A write request is split when the states it carries pass this many bytes.
MAX_WRITE_BYTES = 4 * 1024 * 1024


def _crossed(script):
    return LinkError(f"the {script.name} script was answered NOSCRIPT, another request's reply", "crossed_reply")


def _fresh_id():
    """A call's fresh random id, which its reply must end with."""
    return os.urandom(8).hex().encode()


@attrs.frozen
class ReadReply:
    """States read on one side: one per key, in order; for each, the hub's
    stamp of what it holds if it was written since the hub's generation
    started (None otherwise, and always on the local side); the side's
    generation when it answered."""

    states: list
    tags: list
    generation: Generation | None = None


@attrs.frozen
class WriteReply:
    """A write done: the side's generation after it (its stamp is the
    write's), and the keys not written (refills of keys that hold something
    as fresh already)."""

    generation: Generation | None = None
    skipped: frozenset = frozenset()
    #: bytes of keys and values the write carried (each item's, as state.size counts them)
    sent: int = 0


@attrs.frozen
class CheckReply:
    """A side's state for the periodic check: its generation, the record of
    its generations (redisrepl.epochs.parse_hist), whether the flag key
    asked about exists, and the server's time (microseconds)."""

    generation: Generation
    hist: bytes
    flagged: bool
    now: int


class _StateStore:
    """Reads and writes whole key states, many keys per round trip, with the
    scripts of redisrepl/lua; subclasses provide ``command(*args)``. Keys
    of more than ``big_items`` items are read as headers only (big keys)."""

    big_items = state.BIG_ITEMS
    #: Does this side stamp its writes and remember them after a loss (the hub)?
    track_writes = False
    names = None  # the Namespace (where redisrepl's own keys are)
    epoch = None  # the side's SideEpoch, told every generation seen
    #: Only look (redisrepl verify): scripts do not start or touch the epoch.
    look_only = False

    async def call(self, script, keys, args, limit=None):
        """Run ``script``; (its reply without the generation, the generation).
        A reply over ``limit`` bytes is refused (on the hub; the local Redis
        is trusted)."""
        fresh_id = _fresh_id()
        context = scripts.context_args(self.names, fresh_id, self.track_writes, look_only=self.look_only)
        try:
            reply = await self.command(b"EVALSHA", script.sha, b"%d" % len(keys), *keys, *args, *context, limit=limit)
        except NoScriptError:
            # first use, or the server restarted: EVAL caches it again
            reply = await self._eval(script, script.body, b"%d" % len(keys), *keys, *args, *context, limit=limit)
        try:
            payload, (gen_id, stamp, start, base) = scripts.split_generation(reply, fresh_id)
        except scripts.CrossedReply as e:
            # its own reply went elsewhere: as a reply lost (a write may have run)
            raise LinkError(f"the {script.name} script was answered with {e}", "crossed_reply") from None
        except (ValueError, TypeError) as e:
            raise ReplicationError(f"unexpected reply to the {script.name} script: {e}", "bad_reply") from None
        generation = Generation(gen_id, stamp, start, base)
        if self.epoch is not None:
            self.epoch.observe(generation)
        return payload, generation

    async def run_script(self, script, keys, args, limit=None):
        """Run ``script``; its reply without the generation."""
        return (await self.call(script, keys, args, limit))[0]

    async def get(self, key, limit=None):
        """The string value of one of redisrepl's own keys (None if none),
        read by a script so that a reply meant for another request is
        refused (a LinkError, ``crossed_reply``): what it reads decides
        things (a site's record, the shared walk's)."""
        reply = await self.run_script(scripts.GET, [key], [], limit)
        if reply == [b"0"]:
            return None
        if len(reply) == 2 and reply[0] == b"1" and isinstance(reply[1], bytes):
            return reply[1]
        raise ReplicationError(f"unexpected reply to the get script: {reply!r:.80}", "bad_reply")

    async def write_piece(self, key, offset, data, lifetime_ms):
        """Append ``data`` to the string ``key`` if it holds ``offset`` bytes
        (a piece of a big string's copy, into its temporary key, which
        expires ``lifetime_ms`` from now unless finished). True once
        written, False if the key does not hold ``offset`` bytes (a piece is
        missing, or the copy was abandoned). A reply that is not this
        call's is a reply lost (LinkError): the piece may run later, but
        the key will not hold the bytes the next piece needs."""
        fresh_id = _fresh_id()
        args = [b"%d" % offset, b"%d" % lifetime_ms, fresh_id]
        try:
            reply = await self._run_with_body(scripts.PIECE, key, args, data)
        except NoScriptError:
            await self._eval(scripts.PIECE, scripts.PIECE.body, b"0")  # caches it
            try:
                reply = await self._run_with_body(scripts.PIECE, key, args, data)
            except NoScriptError:
                raise _crossed(scripts.PIECE) from None  # (cached just before)
        if isinstance(reply, list) and reply and reply[-1] != fresh_id:
            raise LinkError(f"the piece script was answered with another call's reply: {reply!r:.80}", "crossed_reply")
        if not isinstance(reply, list) or len(reply) != 2 or reply[0] not in (b"0", b"1"):
            raise ReplicationError(f"unexpected reply to the piece script: {reply!r:.80}", "bad_reply")
        return reply[0] == b"1"

    async def _eval(self, script, *args, limit=None):
        """``EVAL`` of ``script`` (after a NOSCRIPT: it caches it again)."""
        try:
            return await self.command(b"EVAL", *args, limit=limit)
        except NoScriptError:
            # an EVAL is never answered NOSCRIPT: the answer is another
            # request's (README, "Crossed replies"); its own went elsewhere
            raise _crossed(script) from None

    def _run_with_body(self, script, key, args, body):
        """Run a script without the prelude on ``key``, ``body`` its last argument."""
        return self.command(b"EVALSHA", script.sha, b"1", key, *args, body)

    async def check(self, heartbeat_key=b"", lifetime_ms=0, flag_key=b""):
        """The side's generation and its record (setting ``heartbeat_key``
        for ``lifetime_ms`` if given): a CheckReply."""
        reply, generation = await self.call(scripts.CHECK, [], [heartbeat_key, b"%d" % lifetime_ms, flag_key])
        if len(reply) != 3:
            raise ReplicationError(f"unexpected reply to the check script: {reply!r:.80}", "bad_reply")
        return CheckReply(generation, reply[0], reply[1] == b"1", int(reply[2]))

    async def read(self, keys):
        """The current states of ``keys``, read atomically: a ReadReply."""
        reply, generation = await self.call(
            scripts.READ, keys, (b"%d" % self.big_items, b"%d" % state.BIG_BYTES, b"%d" % state.READ_BUDGET)
        )
        states, tags = state.split_reply(reply, len(keys), self._clock.seconds())
        return ReadReply(states, tags, generation)

    async def write(self, items, origins=None, expects=None):
        """Make each (key, state) of ``items`` hold that state; ``origins``
        maps the keys that are refills to the stamp their state is known
        since, ``expects`` keys to the digest they must still hold (None:
        absent) to be written. A WriteReply."""
        batch, total, sent, skipped, generation = [], 0, 0, set(), None
        for key, key_state in items:
            batch.append((key, key_state))
            total += len(key) + state.size(key_state)
            if total >= MAX_WRITE_BYTES:
                generation = await self._write(batch, origins, expects, skipped)
                batch, sent, total = [], sent + total, 0
        if batch:
            generation = await self._write(batch, origins, expects, skipped)
        return WriteReply(generation, frozenset(skipped), sent + total)

    async def _write(self, items, origins, expects, skipped):
        keys = [key for key, _ in items]
        refills = [b"%d" % origins[key] if origins and key in origins else b"" for key in keys]
        conditions = [(expects[key] or b"-") if expects and key in expects else b"" for key in keys]
        args = state.batch_write_args(
            [s for _, s in items], self._clock.seconds(), refills if origins else None, conditions if expects else None
        )
        reply, generation = await self.call(scripts.WRITE, keys, args)
        for position in reply:
            skipped.add(keys[int(position) - 1])
        return generation


class LocalStore(_StateStore):
    """The local Redis, through a txredisapi connection factory."""

    def __init__(self, factory, clock, names, timeout=30.0, big_items=state.BIG_ITEMS, epoch=None):
        self._factory = factory
        self._clock = clock
        #: the commands waiting for their reply, each cancelled after ``timeout`` seconds
        self._waiting = Deadlines(clock, timeout, Deferred.cancel)
        self.names = names
        self.big_items = big_items
        self.epoch = epoch

    async def command(self, *args, limit=None):
        """Run one command (``limit``, the hub's bound on a reply's size, is
        not needed here: the local Redis is trusted)."""
        if not self._factory.size:
            raise LinkError("the local Redis is not connected", "not_connected")
        conn = connected(self._factory)
        d = conn.execute_command(*args) if conn is not None else self._factory.handler.execute_command(*args)
        self._waiting.start(d)
        try:
            return await d
        except txredisapi.ResponseError as e:
            message = e.args[0] if e.args else b""
            if isinstance(message, str):
                message = message.encode("utf-8", "replace")
            if message.startswith(TRANSIENT_REDIS_ERRORS):
                raise LinkError(f"local Redis: {message.decode('utf-8', 'replace')}", "redis_busy") from None
            if message.startswith(b"NOSCRIPT"):
                raise NoScriptError("local Redis: NOSCRIPT", "noscript") from None
            raise RefusedError(
                f"local Redis refused {args[0]!r}: {message.decode('utf-8', 'replace')}", "redis_error"
            ) from None
        except CancelledError:
            how = "(cancelled)" if self._waiting.end(d) else f"within {self._waiting.seconds:g} s"
            raise LinkError(f"the local Redis did not answer {how}", "connection") from None
        except txredisapi.ConnectionError as e:
            raise LinkError(f"the local Redis did not answer: {e or type(e).__name__}", "connection") from None
        finally:
            self._waiting.end(d)


class RemoteStore(_StateStore):
    """The remote Redis, through Webdis: the hub, which stamps its writes."""

    track_writes = True

    def __init__(self, client, clock, names, big_items=state.BIG_ITEMS, epoch=None):
        self._client = client
        self._clock = clock
        self.names = names
        self.big_items = big_items
        self.epoch = epoch

    async def command(self, *args, limit=None):
        """Run one command through Webdis (a reply over ``limit`` bytes, by
        default the client's, is refused)."""
        return await self._client.command(*args, limit=limit)

    async def put(self, args, body):
        """Run ``args`` with ``body`` as their last argument, sent as it is
        (redisrepl.webdis_client.WebdisClient.put: ``args`` must be plain)."""
        return await self._client.put(args, body)

    def _run_with_body(self, script, key, args, body):
        """The body as that of a PUT: Webdis takes it as the last argument,
        byte for byte, so a piece travels as it is (no escaping, no growth);
        the key must be plain (``big_keys`` names it so): it goes in the URL."""
        return self._client.put([b"EVALSHA", script.sha, b"1", key, *args], body)
