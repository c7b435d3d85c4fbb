"""Reading and writing whole key states on either side: the router's two writers.

Both run the same Lua scripts (redisrepl.state), so a key reads and writes
identically on the local Redis (txredisapi) and the remote one (Webdis).
"""

import txredisapi
from twisted.internet.defer import CancelledError, TimeoutError

from redisrepl import state
from redisrepl.errors import LinkError, NoScriptError, RefusedError
from redisrepl.webdis_client import TRANSIENT_REDIS_ERRORS


#: A write request is split when the states it carries pass this many bytes.
MAX_WRITE_BYTES = 4 * 1024 * 1024


class _StateStore:
    """Reads and writes whole key states, many keys per round trip, with the
    scripts of redisrepl.state; subclasses provide ``command(*args)``. Keys
    of more than ``big_items`` items are read as headers only (big keys)."""

    big_items = state.BIG_ITEMS

    async def run_script(self, script, keys, args):
        try:
            return await self.command("EVALSHA", script.sha, len(keys), *keys, *args)
        except NoScriptError:
            # first use, or the server restarted: EVAL caches it again
            return await self.command("EVAL", script.body, len(keys), *keys, *args)

    async def read(self, keys):
        """The current states of ``keys``, in order, read atomically."""
        reply = await self.run_script(state.READ_SCRIPT, keys, (b"%d" % self.big_items,))
        return state.split_reply(reply, len(keys), self._clock.seconds())

    async def write(self, items):
        """Make each (key, state) of ``items`` hold that state."""
        batch, total = [], 0
        for key, key_state in items:
            batch.append((key, key_state))
            total += len(key) + state.size(key_state)
            if total >= MAX_WRITE_BYTES:
                await self._write(batch)
                batch, total = [], 0
        if batch:
            await self._write(batch)

    async def _write(self, items):
        keys = [key for key, _ in items]
        args = state.batch_write_args([s for _, s in items], self._clock.seconds())
        await self.run_script(state.WRITE_SCRIPT, keys, args)


class LocalStore(_StateStore):
    """The local Redis, through a txredisapi connection factory."""

    def __init__(self, factory, clock, timeout=30.0, big_items=state.BIG_ITEMS):
        self._factory = factory
        self._clock = clock
        self._timeout = timeout
        self.big_items = big_items

    async def command(self, *args):
        if not self._factory.size:
            raise LinkError("the local Redis is not connected", "not_connected")
        d = self._factory.handler.execute_command(*args)
        d.addTimeout(self._timeout, self._clock)
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
            raise RefusedError(f"local Redis refused {args[0]!r}: {message.decode('utf-8', 'replace')}",
                               "redis_error") from None
        except (txredisapi.ConnectionError, TimeoutError, CancelledError) as e:
            raise LinkError(f"the local Redis did not answer: {e or type(e).__name__}", "connection") from None



class RemoteStore(_StateStore):
    """The remote Redis, through Webdis."""

    def __init__(self, client, clock, big_items=state.BIG_ITEMS):
        self._client = client
        self._clock = clock
        self.big_items = big_items

    async def command(self, *args):
        return await self._client.command(*args)

