"""txredisapi's protocols, made fast: the one place redisrepl reaches into
txredisapi's internals (hence the pin ``txredisapi>=1.6,<1.7``).

Two methods of txredisapi are replaced, for speed (docs/benchmarks.md; with
txredisapi's own, a burst of 20,000 keys costs about 4 times the CPU):

- ``dataReceived``: redisrepl's RESP parser (redisrepl.resp) instead of
  txredisapi's line-by-line one, so that a burst of events or a large reply
  is parsed in one pass rather than with a call per line. Each reply goes to
  ``replyReceived`` as txredisapi's parser would hand it over with
  ``charset=None`` and ``convertNumbers=False`` (bytes stay bytes, numbers
  stay as sent), which is how redisrepl's factories are built; txredisapi's
  MULTI bookkeeping is skipped (redisrepl never sends MULTI).
- ``_build_command`` (private): the same bytes as txredisapi's, built in one
  join (a batch write carries thousands of arguments).

A subscriber's events take a shorter way still: once subscribed, runs of
its pattern's ``pmessage`` replies go from ``dataReceived`` straight to
``messagesReceived`` (``SubscriberProtocol.fast_pattern``), each as
txredisapi's ``replyReceived`` would hand it to ``messageReceived``;
anything else takes the way above.

And one is bypassed: ``connected(factory)`` hands out the factory's
connection for a command, as txredisapi's handler would find it (the first
of ``pool``, if still connected), without the handler's lookup per command
(an ``inlineCallbacks`` generator over a queue: about a sixth of a change's
CPU at a steady trickle).

What they rely on: ``execute_command`` writes what ``_build_command``
returns; a connection is in ``pool`` from when it is ready (authenticated,
its database selected: ``addConnection``) until it is lost
(``delConnection``), as in the queue ``getConnection`` takes from;
``_encode_value`` encodes what is not bytes; ``replyReceived`` takes whole
replies, errors as ``ResponseError``; ``connectionMade`` runs
before any reply. tests/test_redis_protocol.py checks that the installed
txredisapi still behaves so, and fails (naming this module) when the source
of any of those methods changed: see ``TXREDISAPI_FINGERPRINTS``.
"""

import hashlib
import inspect
from collections.abc import Callable

import txredisapi
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from redisrepl import resp

log = Logger()

#: The txredisapi methods replaced or relied upon here, and a hash of their
#: source in txredisapi 1.6.0 (``fingerprints()``).
TXREDISAPI_FINGERPRINTS = {
    "LineReceiver.dataReceived": "6f6e89d382f56047",
    "BaseRedisProtocol.connectionMade": "6c94381d54a9a2f9",
    "BaseRedisProtocol.lineReceived": "40dc7183700c8a84",
    "BaseRedisProtocol.rawDataReceived": "5371c38d1347883d",
    "BaseRedisProtocol.replyReceived": "f35b7e1e0c7c4298",
    "BaseRedisProtocol._encode_value": "8ed2e1648fce8ff2",
    "BaseRedisProtocol._build_command": "d2f6abc184c6abb9",
    "BaseRedisProtocol.execute_command": "835c592bd9402e99",
    "SubscriberProtocol.replyReceived": "c5c770fea9980a47",
    "RedisFactory.addConnection": "1086e8b55a354741",
    "RedisFactory.delConnection": "2e94b188bc80b254",
    "RedisFactory.getConnection": "a0dd1ab1777b1b79",
}


class _FastReplies(txredisapi.BaseRedisProtocol):
    """For txredisapi protocols: redisrepl's RESP parser underneath (first in
    the bases, so that its methods come before txredisapi's)."""

    def connectionMade(self) -> Deferred:
        self._parser = resp.RespParser()
        return super().connectionMade()

    def dataReceived(self, data: bytes) -> None:
        try:
            replies, error = self._parser.feed(data), None
        except resp.ProtocolError as e:
            replies, error = e.replies, e
        for reply in replies:
            if isinstance(reply, resp.ErrorReply):
                reply = txredisapi.ResponseError(str(reply))
            self.replyReceived(reply)
        if error is not None:
            log.error(
                "the local Redis sent something that is not the Redis protocol ({error}); reconnecting", error=error
            )
            self.transport.loseConnection()


class CommandProtocol(_FastReplies, txredisapi.RedisProtocol):
    """Commands and their replies, bytes in and bytes out."""

    def _build_command(self, *args, **kwargs) -> bytes:
        try:
            return resp.encode_bulks(args)
        except TypeError:  # not all bytes: spelled as txredisapi does
            return resp.encode_bulks([arg if isinstance(arg, bytes) else self._encode_value(arg) for arg in args])


class SubscriberProtocol(_FastReplies, txredisapi.SubscriberProtocol):
    """Subscriptions; override ``messageReceived(pattern, channel, message)``.

    With ``fast_pattern`` set (before subscribing to it), runs of that
    pattern's events go straight to ``messagesReceived``, a burst in a few
    passes of C (``resp.scan_pmessages``); the start of one cut by the end
    of a read waits for the next read; anything else goes through the
    parser and ``replyReceived``, in order."""

    #: The pattern whose events take the short way, or None.
    fast_pattern: bytes | None = None
    #: (most bytes the start of an event may take while it waits: a longer one goes to the parser)
    HELD_LIMIT = 1 << 20
    #: the start of an event waiting for the rest (a protocol per connection: none at first)
    _held = b""

    def dataReceived(self, data: bytes) -> None:
        pattern = self.fast_pattern
        if pattern is None or self._parser.pending:
            super().dataReceived(data)  # (the parser is in the middle of a reply: it goes on with it)
            return
        if self._held:
            data, self._held = self._held + data, b""
        events, taken = resp.scan_pmessages(data, pattern)
        if events:
            self.messagesReceived(pattern, events)
        rest = data[taken:] if taken else data
        if not rest:
            return
        if len(rest) <= self.HELD_LIMIT and resp.pmessage_begins(rest, pattern):
            self._held = rest
        else:
            super().dataReceived(rest)

    def messagesReceived(self, pattern: bytes, events: list[tuple[bytes, bytes]]) -> None:
        """Events of ``pattern``, (channel, message) each, in order, taken
        together (override to handle a burst at once)."""
        for channel, message in events:
            self.messageReceived(pattern, channel, message)


def connected(factory: txredisapi.RedisFactory) -> CommandProtocol | None:
    """The factory's ready connection, to send a command on directly; None
    while there is none (then txredisapi's handler waits for one)."""
    pool = factory.pool
    if pool and pool[0].connected:
        return pool[0]
    return None


def _relied_upon() -> dict[str, Callable[..., object]]:
    return {
        "LineReceiver.dataReceived": txredisapi.LineReceiver.dataReceived,
        "BaseRedisProtocol.connectionMade": txredisapi.BaseRedisProtocol.connectionMade,
        "BaseRedisProtocol.lineReceived": txredisapi.BaseRedisProtocol.lineReceived,
        "BaseRedisProtocol.rawDataReceived": txredisapi.BaseRedisProtocol.rawDataReceived,
        "BaseRedisProtocol.replyReceived": txredisapi.BaseRedisProtocol.replyReceived,
        "BaseRedisProtocol._encode_value": txredisapi.BaseRedisProtocol._encode_value,
        "BaseRedisProtocol._build_command": txredisapi.BaseRedisProtocol._build_command,
        "BaseRedisProtocol.execute_command": txredisapi.BaseRedisProtocol.execute_command,
        "SubscriberProtocol.replyReceived": txredisapi.SubscriberProtocol.replyReceived,
        "RedisFactory.addConnection": txredisapi.RedisFactory.addConnection,
        "RedisFactory.delConnection": txredisapi.RedisFactory.delConnection,
        "RedisFactory.getConnection": txredisapi.RedisFactory.getConnection,
    }


def fingerprints() -> dict[str, str]:
    """A hash of the source of each txredisapi method in TXREDISAPI_FINGERPRINTS,
    as installed."""
    found = {}
    for name, method in _relied_upon().items():
        source = inspect.getsource(getattr(method, "__wrapped__", method))
        found[name] = hashlib.sha256(source.encode()).hexdigest()[:16]
    return found
