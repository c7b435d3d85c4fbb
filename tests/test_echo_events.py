"""The events redisrepl.echoes predicts for a write are the ones a real
redis-server sends, whatever the key held before (the write script makes
them so): the copier drops its echoes by these events without a read."""

import time

import pytest
from twisted.internet.task import Clock

from redisrepl import notify
from redisrepl.echoes import write_events
from redisrepl.state import ABSENT, HASH, LIST, SET, STREAM, STRING, ZSET, KeyState
from redisrepl.testing import BlockingStore, run

NS = b"ev:"
SENTINEL = NS + b"~sentinel"
FAR = 3600.0


def _state(kind, value=None, expire_in=None):
    return KeyState(kind, value, None if expire_in is None else time.time() + expire_in)


#: What the key holds before the write (written with plain commands).
BEFORE = {
    "absent": lambda r, k: None,
    "string": lambda r, k: r.set(k, b"old"),
    "hash with ttl": lambda r, k: (r.hset(k, mapping={b"x": b"1"}), r.expire(k, 500)),
    "list": lambda r, k: r.rpush(k, b"a", b"b"),
}

#: The states written.
STATES = {
    "string": lambda: _state(STRING, b"v"),
    "string with expiry": lambda: _state(STRING, b"v", FAR),
    "string already expired": lambda: _state(STRING, b"v", -5),
    "hash": lambda: _state(HASH, ((b"f", b"1"), (b"g", b"2"))),
    "hash of 2,500 fields": lambda: _state(HASH, tuple((b"f%05d" % i, b"v") for i in range(2500))),
    "list of 4,001": lambda: _state(LIST, tuple(b"%d" % i for i in range(4001))),
    "set with expiry": lambda: _state(SET, (b"a", b"b"), FAR),
    "zset": lambda: _state(ZSET, ((b"m", b"1.5"), (b"n", b"-2"))),
    "stream": lambda: _state(STREAM, ((b"1-1", (b"f", b"v")), (b"2-0", (b"g", b"w")))),
    "empty stream": lambda: _state(STREAM, ()),
    "absent": lambda: ABSENT,
}


@pytest.fixture(scope="module")
def redis_events(lab):
    r = lab.local
    r.config_set("notify-keyspace-events", notify.NEEDED)
    pubsub = r.pubsub()
    pubsub.psubscribe(b"__keyspace@0__:" + NS + b"*")
    assert pubsub.get_message(timeout=5)["type"] == "psubscribe"
    yield r, pubsub
    pubsub.close()


def events_of(r, pubsub, action):
    """The (key, event) pairs ``action`` causes, in the order Redis sends them."""
    action()
    r.set(SENTINEL, b"1")
    seen = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        message = pubsub.get_message(timeout=1)
        if message is None or message["type"] != "pmessage":
            continue
        key = message["channel"].split(b":", 1)[1]
        if key == SENTINEL:
            return seen
        seen.append((key, message["data"]))
    raise AssertionError(f"the sentinel's event never came; seen {seen}")


@pytest.mark.parametrize("hub", [False, True], ids=["local", "hub"])
@pytest.mark.parametrize("before", sorted(BEFORE))
@pytest.mark.parametrize("written", sorted(STATES))
def test_predicted_events_are_the_events_redis_sends(redis_events, written, before, hub):
    r, pubsub = redis_events
    key = NS + b"k"
    r.delete(key)
    events_of(r, pubsub, lambda: BEFORE[before](r, key))
    clock = Clock()
    clock.advance(time.time())
    store = BlockingStore(r, NS, hub=hub, clock=clock)
    target = STATES[written]()
    predicted = write_events(target, clock.seconds())
    seen = events_of(r, pubsub, lambda: run(store.write([(key, target)])))
    assert predicted is not None
    assert seen == [(key, event) for event in predicted]


def test_an_expiry_within_the_margin_is_not_predicted():
    assert write_events(_state(STRING, b"v", 30), time.time()) is None
