"""StreamProtocol: the body of Webdis' PSUBSCRIBE .raw stream, in chunks of any size."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from redisrepl.errors import StreamError
from redisrepl.remote_source import StreamProtocol
from redisrepl.resp import encode_command

PATTERN = b"__keyspace@0__:ns:*"
CONFIRMATION = encode_command("psubscribe", PATTERN, "1")


def pmessage(key, event):
    return encode_command("pmessage", PATTERN, b"__keyspace@0__:" + key, event)


class FakeTransport:
    """Records stopProducing(), which is how the protocol gives up on a stream."""

    def __init__(self):
        self.stopped = 0

    def stopProducing(self):
        self.stopped += 1


class Recorder:
    def __init__(self):
        self.events = []
        self.subscribed = 0
        self.transport = FakeTransport()
        self.protocol = StreamProtocol(self.on_event, self.on_subscribed)
        self.protocol.makeConnection(self.transport)

    def on_event(self, channel, event):
        self.events.append((channel, event))

    def on_subscribed(self):
        self.subscribed += 1

    def feed(self, *chunks):
        for chunk in chunks:
            self.protocol.dataReceived(chunk)


def split(data, draw):
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=12)))
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:])]


@settings(max_examples=200, deadline=None, database=None)
@given(st.lists(st.tuples(st.binary(), st.sampled_from([b"set", b"del", b"hset", b"expired"])), max_size=6), st.data())
def test_events_arrive_in_order_whatever_the_chunking(events, data):
    stream = CONFIRMATION + b"".join(pmessage(k, e) for k, e in events)
    rec = Recorder()
    rec.feed(*split(stream, data.draw))
    assert rec.protocol.error is None
    assert rec.subscribed == 1
    assert rec.events == [(b"__keyspace@0__:" + k, e) for k, e in events]
    assert rec.transport.stopped == 0


def test_callbacks_fire_as_soon_as_each_message_is_complete():
    rec = Recorder()
    first = pmessage(b"ns:a", b"set")
    rec.feed(CONFIRMATION[:-1])
    assert rec.subscribed == 0
    rec.feed(CONFIRMATION[-1:] + first[:-1])
    assert (rec.subscribed, rec.events) == (1, [])
    rec.feed(first[-1:])
    assert rec.events == [(b"__keyspace@0__:ns:a", b"set")]


def test_message_kind_is_case_insensitive():
    rec = Recorder()
    rec.feed(
        encode_command("PSUBSCRIBE", PATTERN, "1"), encode_command("PMESSAGE", PATTERN, b"__keyspace@0__:ns:k", b"del")
    )
    assert (rec.subscribed, rec.events, rec.protocol.error) == (1, [(b"__keyspace@0__:ns:k", b"del")], None)


def test_garbage_ends_the_stream_and_later_data_is_ignored():
    rec = Recorder()
    rec.feed(CONFIRMATION, b"<html>502 Bad Gateway</html>\r\n")
    assert isinstance(rec.protocol.error, StreamError)
    assert "malformed" in str(rec.protocol.error)
    assert rec.transport.stopped == 1
    rec.feed(pmessage(b"ns:late", b"set"), b"more garbage\r\n")
    assert rec.events == []
    assert rec.transport.stopped == 1


@pytest.mark.parametrize(
    "message",
    [
        pytest.param(encode_command("message", "ns:chan", "x"), id="message-of-3"),
        pytest.param(encode_command("pmessage", PATTERN, "x"), id="pmessage-of-3"),
        pytest.param(encode_command("pmessage", PATTERN, "a", "b", "c"), id="pmessage-of-5"),
        pytest.param(encode_command("psubscribe", PATTERN), id="psubscribe-of-2"),
        pytest.param(encode_command("subscribe", "ns:chan", "1"), id="subscribe"),
        pytest.param(b":1\r\n", id="integer"),
        pytest.param(b"$3\r\nset\r\n", id="bulk-string"),
        pytest.param(b"+OK\r\n", id="simple-string"),
        pytest.param(b"-ERR no\r\n", id="error-reply"),
        pytest.param(b"$-1\r\n", id="nil"),
        pytest.param(b"*0\r\n", id="empty-array"),
        pytest.param(b"*4\r\n$8\r\npmessage\r\n$1\r\np\r\n$-1\r\n$3\r\nset\r\n", id="nil-channel"),
        pytest.param(b"*4\r\n$8\r\npmessage\r\n$1\r\np\r\n*1\r\n$1\r\nc\r\n$3\r\nset\r\n", id="nested-channel"),
    ],
)
def test_a_message_of_the_wrong_shape_ends_the_stream(message):
    rec = Recorder()
    rec.feed(CONFIRMATION, message, pmessage(b"ns:after", b"set"))
    assert isinstance(rec.protocol.error, StreamError)
    assert rec.events == []
    assert rec.transport.stopped == 1


def test_a_pmessage_before_garbage_in_another_chunk_is_delivered():
    rec = Recorder()
    rec.feed(CONFIRMATION + pmessage(b"ns:k", b"set"), b"garbage\r\n")
    assert rec.events == [(b"__keyspace@0__:ns:k", b"set")]
    assert rec.protocol.error is not None


def test_a_pmessage_before_garbage_in_the_same_chunk_is_delivered():
    rec = Recorder()
    rec.feed(CONFIRMATION + pmessage(b"ns:k", b"set") + b"garbage\r\n")
    assert rec.protocol.error is not None
    assert rec.events == [(b"__keyspace@0__:ns:k", b"set")]


class FinishedTests(TestCase):
    def test_clean_end_fires_finished_with_the_reason(self):
        rec = Recorder()
        rec.feed(CONFIRMATION)
        rec.protocol.connectionLost(Failure(ConnectionDone("body ended")))
        self.assertIsInstance(self.successResultOf(rec.protocol.finished), ConnectionDone)

    def test_lost_connection_fires_finished_with_the_reason(self):
        rec = Recorder()
        self.assertNoResult(rec.protocol.finished)
        rec.protocol.connectionLost(Failure(ConnectionLost("reset")))
        self.assertIsInstance(self.successResultOf(rec.protocol.finished), ConnectionLost)

    def test_after_an_error_finished_fires_with_the_error(self):
        rec = Recorder()
        rec.feed(b"?\r\n")
        self.assertNoResult(rec.protocol.finished)
        rec.protocol.connectionLost(Failure(ConnectionDone("stopped")))
        result = self.successResultOf(rec.protocol.finished)
        self.assertIs(result, rec.protocol.error)
        self.assertIn("malformed event stream", str(result))
