"""Reading and writing whole key states on either side: the router's two writers.

Both run the same Lua scripts (redisrepl.state), so a key reads and writes
identically on the local Redis (txredisapi) and the remote one (Webdis).
"""

import txredisapi
from twisted.internet.defer import CancelledError, TimeoutError

from redisrepl import state
from redisrepl.errors import LinkError, RefusedError
from redisrepl.webdis_client import TRANSIENT_REDIS_ERRORS


class LocalStore:
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
            raise RefusedError(f"local Redis refused {args[0]!r}: {message.decode('utf-8', 'replace')}") from None
        except (txredisapi.ConnectionError, TimeoutError, CancelledError) as e:
            raise LinkError(f"the local Redis did not answer: {e or type(e).__name__}") from None

    async def read(self, key):
        reply = await self.command("EVAL", state.READ_SCRIPT, 1, key)
        return state.from_reply(reply, self._clock.seconds())

    async def write(self, key, key_state):
        await self.command("EVAL", state.WRITE_SCRIPT, 1, key,
                           *key_state.write_args(self._clock.seconds()))


class RemoteStore:
    """The remote Redis, through Webdis."""

    def __init__(self, client, clock):
        self._client = client
        self._clock = clock

    async def command(self, *args):
        return await self._client.command(*args)

    async def read(self, key):
        reply = await self._client.command("EVAL", state.READ_SCRIPT, 1, key)
        return state.from_reply(reply, self._clock.seconds())

    async def write(self, key, key_state):
        await self._client.command("EVAL", state.WRITE_SCRIPT, 1, key,
                                   *key_state.write_args(self._clock.seconds()))
