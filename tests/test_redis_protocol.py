"""redisrepl.redis_protocol: the two txredisapi methods it replaces, and
what the replacements rely on in the installed txredisapi."""

import pytest
import txredisapi
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import TestCase

from redisrepl import redis_protocol, resp
from redisrepl.redis_protocol import CommandProtocol, SubscriberProtocol


def test_txredisapi_is_the_one_redis_protocol_was_written_for():
    found = redis_protocol.fingerprints()
    changed = sorted(
        name for name, digest in redis_protocol.TXREDISAPI_FINGERPRINTS.items() if found.get(name) != digest
    )
    if changed:
        pytest.fail(
            f"txredisapi {txredisapi.__version__} is not the txredisapi that redisrepl/redis_protocol.py "
            f"was written for: {', '.join(changed)} changed. redis_protocol replaces txredisapi's "
            "dataReceived and _build_command and relies on these methods: read the new ones, check "
            "that the replacements still fit (bytes out, replies in, as its docstring says), then "
            "update TXREDISAPI_FINGERPRINTS and the txredisapi pin in pyproject.toml.",
            pytrace=False,
        )


def _protocol(cls):
    protocol = cls(charset=None, convertNumbers=False)
    protocol.makeConnection(StringTransport())
    return protocol


def _native():
    protocol = txredisapi.BaseRedisProtocol(charset=None, convertNumbers=False)
    protocol.makeConnection(StringTransport())
    return protocol


arguments = st.lists(
    st.one_of(
        st.binary(max_size=40), st.text(max_size=20), st.integers(), st.floats(allow_nan=False, allow_infinity=False)
    ),
    min_size=1,
    max_size=30,
)


@given(arguments)
def test_commands_are_the_bytes_txredisapi_would_send(args):
    assert _protocol(CommandProtocol)._build_command(*args) == _native()._build_command(*args)


class ProtocolTests(TestCase):
    def test_execute_command_writes_the_built_command_and_gets_the_reply(self):
        protocol = _protocol(CommandProtocol)
        d = protocol.execute_command(b"SET", b"k\r\n", 7)
        self.assertEqual(protocol.transport.value(), b"*3\r\n$3\r\nSET\r\n$3\r\nk\r\n\r\n$1\r\n7\r\n")
        protocol.dataReceived(b"$3\r\nab")
        protocol.dataReceived(b"c\r\n")
        self.assertEqual(self.successResultOf(d), b"abc")

    def test_replies_in_order_with_errors_as_response_errors(self):
        protocol = _protocol(CommandProtocol)
        first, second, third = (protocol.execute_command(b"X") for _ in range(3))
        protocol.dataReceived(b"*2\r\n:1\r\n$-1\r\n-NOSCRIPT gone\r\n+OK\r\n")
        self.assertEqual(self.successResultOf(first), [1, None])
        self.failureResultOf(second, txredisapi.ResponseError)
        self.assertEqual(self.successResultOf(third), b"OK")

    def test_garbage_drops_the_connection(self):
        protocol = _protocol(CommandProtocol)
        d = protocol.execute_command(b"X")
        protocol.dataReceived(b":5\r\n?what\r\n")
        self.assertEqual(self.successResultOf(d), 5)
        self.assertTrue(protocol.transport.disconnecting)
        self.flushLoggedErrors()

    def test_subscriber_messages_reach_message_received(self):
        got = []

        class Subscriber(SubscriberProtocol):
            def messageReceived(self, pattern, channel, message):
                got.append((pattern, channel, message))

        protocol = _protocol(Subscriber)
        protocol.dataReceived(b"*4\r\n$8\r\npmessage\r\n$2\r\np*\r\n$2\r\npk\r\n$3\r\nset\r\n" * 2)
        self.assertEqual(got, [(b"p*", b"pk", b"set")] * 2)


def test_a_command_goes_to_the_ready_connection_or_waits_for_the_handler():
    from types import SimpleNamespace

    factory = SimpleNamespace(pool=[])
    assert redis_protocol.connected(factory) is None  # not connected yet: the handler waits
    conn = SimpleNamespace(connected=0)
    factory.pool = [conn]
    assert redis_protocol.connected(factory) is None  # lost, not yet removed from the pool
    conn.connected = 1
    assert redis_protocol.connected(factory) is conn


# -- the short way for a subscriber's events ---------------------------------------

PATTERN = b"__keyspace@0__:ns:*"

# what a subscriber may be sent: its pattern's events (keys with CRLF, long
# keys too), other patterns' events, confirmations, errors, plain replies
_wire_items = st.one_of(
    st.tuples(
        st.just("event"),
        st.just(PATTERN),
        # keys that break the stream into lines that look like headers, too
        st.one_of(st.binary(max_size=30), st.sampled_from([b"a\r\n$2", b"\r\n$3\r\nset\r\n", b"b\r\n*4\r\n$8"])),
        st.sampled_from([b"set", b"del", b"hset"]),
    ),
    st.tuples(st.just("event"), st.just(PATTERN), st.just(b"k" * 70_000), st.just(b"set")),
    st.tuples(st.just("event"), st.just(b"other:*"), st.binary(max_size=8), st.just(b"set")),
    st.tuples(st.just("reply"), st.sampled_from([b"+PONG\r\n", b"-ERR no\r\n", b":1\r\n", b"$-1\r\n"])),
    st.tuples(st.just("reply"), st.just(b"*3\r\n$10\r\npsubscribe\r\n$19\r\n" + PATTERN + b"\r\n:1\r\n")),
)


def _wire(item):
    if item[0] == "event":
        _, pattern, key, event = item
        channel = b"__keyspace@0__:ns:" + key
        return b"*4\r\n$8\r\npmessage\r\n" + b"".join(b"$%d\r\n%s\r\n" % (len(x), x) for x in (pattern, channel, event))
    return item[1]


def _heard(fast, pieces):
    """What a subscriber made of ``pieces``: messages and other replies, in order."""
    heard = []

    class Subscriber(SubscriberProtocol):
        def messageReceived(self, pattern, channel, message):
            heard.append(("message", pattern, channel, message))

        def replyReceived(self, reply):
            if isinstance(reply, list) and reply[:1] == [b"pmessage"]:
                super().replyReceived(reply)
            else:
                heard.append(("reply", repr(reply)))

    protocol = _protocol(Subscriber)
    if fast:
        protocol.fast_pattern = PATTERN
    for piece in pieces:
        protocol.dataReceived(piece)
    return heard, protocol


@settings(max_examples=150, deadline=None, database=None)
@given(st.lists(_wire_items, max_size=24), st.data())
def test_events_the_short_way_are_what_the_parser_makes_of_them_in_any_chunking(items, data):
    wire = b"".join(map(_wire, items))
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=10)))
    bounds = [0, *cuts, len(wire)]
    pieces = [wire[a:b] for a, b in zip(bounds, bounds[1:])]
    slow, _ = _heard(False, [wire])
    fast, protocol = _heard(True, pieces)
    assert fast == slow
    assert len(slow) == len(items)
    assert not protocol._held and not protocol._parser.pending


@pytest.mark.parametrize("arg", [bytearray(b"ab"), "text", 7, 1.5])
def test_arguments_not_bytes_are_spelled_as_txredisapi_spells_them(arg):
    assert _protocol(CommandProtocol)._build_command(b"SET", arg) == _native()._build_command(b"SET", arg)


@pytest.mark.parametrize("arg", [bytearray(b"ab"), memoryview(b"ab"), __import__("array").array("i", [1, 2])])
def test_bulk_strings_are_bytes_only(arg):
    # (join would take them, and a buffer of wider items would lie about its length)
    with pytest.raises(TypeError):
        resp.encode_bulks([b"SET", arg])


def _fast_subscriber():
    """A subscriber whose pattern's events take the short way, and the channels it hears."""
    got = []

    class Subscriber(SubscriberProtocol):
        def messageReceived(self, pattern, channel, message):
            got.append(channel)

    protocol = _protocol(Subscriber)
    protocol.fast_pattern = PATTERN
    return protocol, got


def test_the_start_of_an_event_too_long_to_hold_goes_to_the_parser():
    protocol, got = _fast_subscriber()
    protocol.HELD_LIMIT = 100
    event = _wire(("event", PATTERN, b"k" * 500, b"set"))
    protocol.dataReceived(event[:300])
    assert not protocol._held and protocol._parser.pending  # the parser has it, bounded by its own limits
    protocol.dataReceived(event[300:] + event)
    assert got == [b"__keyspace@0__:ns:" + b"k" * 500] * 2 and not protocol._parser.pending


def test_events_the_short_way_skip_the_parser():
    protocol, got = _fast_subscriber()
    event = _wire(("event", PATTERN, b"k1", b"set"))
    protocol.dataReceived(event * 3 + event[:20])
    assert got == [b"__keyspace@0__:ns:k1"] * 3
    assert protocol._held == event[:20] and protocol._parser.pending == 0  # waits, unparsed
    protocol.dataReceived(event[20:])
    assert len(got) == 4 and not protocol._held


def test_a_burst_of_keyspace_events_reaches_the_router_as_single_events_would():
    from redisrepl.local_source import LocalSource

    class Router:
        def __init__(self):
            self.seen = []

        def changes(self, side, events):
            self.seen.extend((side, key, event) for key, event in events)

    events = [
        (b"__keyspace@3__:ns:a", b"set"),
        (b"__keyspace@0__:ns:b", b"del"),  # another database's: not a key of this one
        (b"__keyspace@3__:ns:\r\nc", b"hset"),
    ]
    one, burst = Router(), Router()
    for router, deliver in ((one, "message"), (burst, "messages")):
        source = LocalSource(None, router, 3, b"ns:", "test")
        if deliver == "message":
            for channel, event in events:
                source.message(channel, event)
        else:
            source.messages(events)
    assert burst.seen == one.seen == [("local", b"ns:a", b"set"), ("local", b"ns:\r\nc", b"hset")]
