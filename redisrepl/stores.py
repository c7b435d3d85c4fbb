"""Reading and writing whole key states on either side: the router's two writers.

Both run the same Lua scripts (redisrepl.state), so a key reads and writes
identically on the local Redis (txredisapi) and the remote one (Webdis).
"""

import txredisapi
from twisted.internet.defer import CancelledError, TimeoutError

from redisrepl import state
from redisrepl.errors import LinkError, NoScriptError, RefusedError
from redisrepl.webdis_client import TRANSIENT_REDIS_ERRORS


class _StateStore:
    """Reads and writes whole key states with the scripts of redisrepl.state;
    subclasses provide ``command(*args)``."""

    async def _run(self, script, key, *args):
        try:
            return await self.command("EVALSHA", script.sha, 1, key, *args)
        except NoScriptError:
            # first use, or the server restarted: EVAL caches it again
            return await self.command("EVAL", script.body, 1, key, *args)

    async def read(self, key):
        reply = await self._run(state.READ_SCRIPT, key)
        return state.from_reply(reply, self._clock.seconds())

    async def write(self, key, key_state):
        await self._run(state.WRITE_SCRIPT, key, *key_state.write_args(self._clock.seconds()))


class LocalStore(_StateStore):
    """The local Redis, through a txredisapi connection factory."""

    def __init__(self, factory, clock, timeout=30.0):
        self._factory = factory
        self._clock = clock
        self._timeout = timeout

    async def command(self, *args):
        if not self._factory.size:
            raise LinkError("the local Redis is not connected")
        d = self._factory.handler.execute_command(*args)
        d.addTimeout(self._timeout, self._clock)
        try:
            return await d
        except txredisapi.ResponseError as e:
            message = e.args[0] if e.args else b""
            if isinstance(message, str):
                message = message.encode("utf-8", "replace")
            if message.startswith(TRANSIENT_REDIS_ERRORS):
                raise LinkError(f"local Redis: {message.decode('utf-8', 'replace')}") from None
            if message.startswith(b"NOSCRIPT"):
                raise NoScriptError("local Redis: NOSCRIPT") from None
            raise RefusedError(f"local Redis refused {args[0]!r}: {message.decode('utf-8', 'replace')}") from None
        except (txredisapi.ConnectionError, TimeoutError, CancelledError) as e:
            raise LinkError(f"the local Redis did not answer: {e or type(e).__name__}") from None



class RemoteStore(_StateStore):
    """The remote Redis, through Webdis."""

    def __init__(self, client, clock):
        self._client = client
        self._clock = clock

    async def command(self, *args):
        return await self._client.command(*args)

