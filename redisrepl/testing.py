"""Test doubles of redisrepl's seams, for its own tests and anyone else's.

``BlockingStore`` is a state store over any blocking Redis client with an
``execute_command`` method (redis-py's ``Redis``): it runs the same scripts,
with the same context and replies, as the daemon's stores, so that the
coroutines of redisrepl (big-key copies, digests, scans) can be driven
without a reactor: each await finishes at once (see ``run``).
"""

from zope.interface import implementer

from redisrepl import scripts, state
from redisrepl.errors import NoScriptError, RefusedError
from redisrepl.interfaces import IReconcileRequests
from redisrepl.namespace import Namespace
from redisrepl.stores import _StateStore


class BlockingStore(_StateStore):
    """A store over a blocking client; ``hub=True`` makes it stamp its
    writes as the remote side does."""

    def __init__(self, client, namespace, big_items=state.BIG_ITEMS, hub=False, clock=None, epoch=None):
        self.client = client
        if hasattr(client, "response_callbacks"):
            # replies as Redis sends them (redis-py would turn HSCAN's into a dict)
            self.client = type(client)(connection_pool=client.connection_pool)
            self.client.response_callbacks = {}
        self.names = Namespace(namespace)
        self.big_items = big_items
        self.track_writes = hub
        self.epoch = epoch
        self._clock = clock

    async def command(self, *args, limit=None):
        try:
            return self.client.execute_command(*args)
        except Exception as e:  # the client's error type: ours, by message
            message = str(e)
            if message.startswith("NOSCRIPT") or type(e).__name__ == "NoScriptError":
                raise NoScriptError(message, "noscript") from None
            if type(e).__name__ == "ResponseError":
                raise RefusedError(message, "redis_error") from None
            raise


@implementer(IReconcileRequests)
class RecordedRequests(list):
    """A reconcile that only records why it was asked to run (a list of reasons)."""

    def request(self, reason, delay=0.2):
        self.append(reason)

    def generation_changed(self, side, generation):
        self.append(f"the {side} side's generation changed")


def run(coroutine):
    """The result of a coroutine that never waits (a BlockingStore's)."""
    try:
        coroutine.send(None)
    except StopIteration as e:
        return e.value
    raise AssertionError("the coroutine waited")


def eval_script(client, script, keys, args, namespace=b"", hub=False):
    """Run one of redisrepl's scripts with a blocking client: (payload,
    (generation id, stamp, start))."""
    context = scripts.context_args(Namespace(namespace), b"test-generation", hub)
    return scripts.split_generation(client.eval(script.body, len(keys), *keys, *args, *context), b"test-generation")
