"""The hub's shared walk: one site walks the hub's namespace for every site
and publishes its bucket digests (redisrepl.buckets) there, so that each
site confirms an unchanged namespace by reading 128 KiB instead of having
the hub digest every key for it (docs/hub-scale.md).

On the hub, under the namespace's meta prefix (outside the namespace: no
event on anyone's stream):

- ``walk:lease``: the site walking now (``SET NX PX``, renewed as it goes).
  It only saves work: two walks at once are both sound.
- ``walk:table:<id>``: a walk's table, 128 KiB, expiring.
- ``walk:info``: the last walk published: ``1 <id> <begin> <end>
  <generation> <keys>``, its stamps in the hub's time (µs), taken before
  its first step and after its last, and the hub's generation it walked.
"""

import os
from contextlib import aclosing, contextmanager

import attrs
from twisted.logger import Logger

from redisrepl.big_keys import PLAIN_TEMPORARY
from redisrepl.buckets import TABLE_BYTES, Buckets
from redisrepl.errors import RefusedError, ReplicationError
from redisrepl.merge import UNSUPPORTED
from redisrepl.scan import scan_steps
from redisrepl.stores import RemoteStore

log = Logger()

#: The format of ``walk:info`` this version writes and reads.
FORMAT = b"1"
#: Steps between two renewals of the lease.
RENEW_EVERY = 8


class SharedWalkRefused(RefusedError):
    """The hub refuses a command of the shared walk for good (a Webdis ACL
    without SETEX or RENAME: HTTP 403; a proxy refusing a 128 KiB body:
    HTTP 413; a Redis ACL: NOPERM). Other Redis error replies (out of
    memory, a replica in a failover) are not this: they pass."""


#: The refusals that say the hub will never take the shared walk's commands.
FOR_GOOD = ("http_403", "http_413")
#: Most bytes of a walk's description taken from the hub.
INFO_LIMIT = 1024


@contextmanager
def _refusals():
    """A refusal for good raised as SharedWalkRefused; others as they are."""
    try:
        yield
    except RefusedError as e:
        if e.kind in FOR_GOOD or (e.kind == "redis_error" and "NOPERM" in str(e)):  # NOPERM: a Redis ACL
            raise SharedWalkRefused(str(e), e.kind) from None
        raise


@attrs.frozen
class WalkInfo:
    """A published walk of the hub."""

    id: bytes
    begin: int  # hub time (µs) before its first step
    end: int  # hub time (µs) after its last
    generation: bytes  # the hub's generation it walked
    keys: int

    def encode(self) -> bytes:
        return b" ".join([FORMAT, self.id, b"%d" % self.begin, b"%d" % self.end, self.generation, b"%d" % self.keys])

    @classmethod
    def decode(cls, raw: object) -> "WalkInfo | None":
        """The walk ``raw`` describes; None for nothing, another format, or garbage."""
        if not isinstance(raw, bytes):
            return None
        parts = raw.split(b" ")
        if len(parts) != 6 or parts[0] != FORMAT or not parts[1].isalnum():
            return None
        try:
            begin, end, keys = int(parts[2]), int(parts[3]), int(parts[5])
        except ValueError:
            return None
        if not 0 <= begin <= end or keys < 0:
            return None
        return cls(parts[1], begin, end, parts[4], keys)


async def fold(store, names, parts=1, refused=None, each_step=None, pace=None):
    """The bucket digests of the namespace on ``store``'s side, walked in
    ``parts`` ranges at once (redisrepl.scan.scan_steps, at ``pace``), keys
    of types redisrepl does not replicate left out; ``each_step()`` after
    each step (it may raise to stop the walk)."""
    table = Buckets()
    async with aclosing(scan_steps(store, names, refused=refused, parts=parts, pace=pace)) as steps:
        async for step in steps:
            # (types left alone on both sides, a module's, are not in the table)
            table.add_all((key, digest) for key, digest, _ in step if digest != UNSUPPORTED)
            if each_step is not None:
                await each_step()
    return table


@attrs.define
class HubWalks:
    """The shared walk's keys on the hub (``store``: the RemoteStore)."""

    store: RemoteStore
    meta: bytes  # the namespace's meta prefix

    @property
    def info_key(self) -> bytes:
        return self.meta + b"walk:info"

    @property
    def lease_key(self) -> bytes:
        return self.meta + b"walk:lease"

    def table_key(self, walk_id: bytes) -> bytes:
        return self.meta + b"walk:table:" + walk_id

    async def _command(self, *args, limit=INFO_LIMIT):
        with _refusals():
            return await self.store.command(*args, limit=limit)

    async def _get(self, key, limit):
        with _refusals():
            return await self.store.get(key, limit)

    async def latest(self) -> WalkInfo | None:
        raw = await self._get(self.info_key, INFO_LIMIT)
        info = WalkInfo.decode(raw)
        if raw is not None and info is None:
            log.warn("the hub's last shared walk is described in a form this version does not read: ignored")
        return info

    async def table(self, info: WalkInfo) -> Buckets | None:
        """The table of walk ``info``; None once it expired."""
        raw = await self._get(self.table_key(info.id), TABLE_BYTES + INFO_LIMIT)
        if raw is None:
            return None
        try:
            return Buckets.from_bytes(raw, info.keys)
        except (ValueError, TypeError) as e:
            raise ReplicationError(f"the hub's shared walk table is not one: {e}", "bad_reply") from None

    async def take_lease(self, token: bytes, lifetime_ms: int) -> bool:
        reply = await self._command("SET", self.lease_key, token, "NX", "PX", b"%d" % lifetime_ms)
        return reply is not None

    async def renew_lease(self, lifetime_ms: int) -> None:
        await self._command("PEXPIRE", self.lease_key, b"%d" % lifetime_ms)

    async def release_lease(self) -> None:
        await self._command("DEL", self.lease_key)

    async def publish(self, info: WalkInfo, table: Buckets, lifetime: int) -> None:
        """Publish walk ``info`` with its ``table``, both kept ``lifetime`` seconds.
        The table travels as a PUT body (as it is, 128 KiB) to a plain
        temporary key, renamed then; the description last."""
        temporary = PLAIN_TEMPORARY + os.urandom(10).hex().encode()
        with _refusals():
            await self.store.put([b"SETEX", temporary, b"%d" % lifetime], table.to_bytes())
        await self._command("RENAME", temporary, self.table_key(info.id))
        await self._command("SET", self.info_key, info.encode(), "EX", b"%d" % lifetime)
