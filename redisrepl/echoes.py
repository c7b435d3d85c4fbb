"""The keyspace events a write of redisrepl causes, and their announcement.

Before the copier writes a key's state to a side, it records there the
exact events the write script will cause (``IExpectedEvents.expect_events``),
so that when that side announces them they are dropped on arrival, without
a read: one request per change instead of two (the write, then a read of
its echo). The write script makes these events independent of what the key
held before (see redisrepl/lua/write.lua):

- a string: ``set``;
- anything else (a collection, or an absence): ``set`` then ``del`` (the key
  made a string, then deleted: a DEL of an absent key says nothing), then the
  items in chunks of ``WRITE_CHUNK`` arguments (``hset``, ``rpush``,
  ``sadd``, ``zadd``), or ``xadd`` per stream entry (``xadd``, ``xdel`` for
  an empty stream);
- then ``expire`` if the state has an expiry.

Only an event that was not expected leads to a read and the content
comparison of ``IExpectedEvents.is_echo``. ``None`` means "not certain", and
the echo is then recognised by its content as before: a state whose
expiry is near (``EXPIRY_MARGIN``: the hub's clock decides whether
``PEXPIREAT`` sets an expiry or deletes).
A write that may be refused (a refill, a copy made only if the key still
holds what the reconcile saw) announces its events provisionally: they
wait for its reply (``announce``, ``settle``; redisrepl.expected).

``write_events`` is pure; ``announce`` and ``settle`` act on the side's
expected-event table only.
"""

from redisrepl.state import HASH, LIST, NONE, SET, STREAM, STRING, SUPPORTED, ZSET

#: Arguments per command when the write script adds items (write.lua's chunked()).
WRITE_CHUNK = 4000
#: An expiry closer than this (seconds) may have passed on the target's
#: clock when the write runs: its events are not predicted.
EXPIRY_MARGIN = 60.0

_ADD = {HASH: b"hset", LIST: b"rpush", SET: b"sadd", ZSET: b"zadd"}
_ARGUMENTS_PER_ITEM = {HASH: 2, ZSET: 2, LIST: 1, SET: 1}


def _chunks(arguments: int) -> int:
    return -(-arguments // WRITE_CHUNK)


def write_events(state, now: float) -> tuple[bytes, ...] | None:
    """The events writing ``state`` whole causes (in the order the script
    causes them), or None when they cannot be known for certain."""
    expire_at = state.expire_at
    if expire_at is not None and expire_at <= now + EXPIRY_MARGIN and expire_at > now:
        return None
    kind = state.kind
    if kind not in SUPPORTED or kind == NONE or (expire_at is not None and expire_at <= now):
        return (b"set", b"del")  # written as absent
    if kind == STRING:
        events: tuple[bytes, ...] = (b"set",)
    elif kind == STREAM:
        entries = len(state.value or ())
        events = (b"set", b"del") + ((b"xadd",) * entries if entries else (b"xadd", b"xdel"))
    else:
        count = len(state.value or ())
        if not count:
            return (b"set", b"del")  # an empty collection is no key
        events = (b"set", b"del") + (_ADD[kind],) * _chunks(count * _ARGUMENTS_PER_ITEM[kind])
    if expire_at is not None:
        events += (b"expire",)
    return events


def announce(expected, items, refusable, now: float) -> tuple[list[tuple[bytes, int]], list[bytes]]:
    """Before writing ``items`` (key, state) to a side: record each state in
    that side's expected-event table (``IExpectedEvents``) and announce the
    events its write causes, provisionally for the keys in ``refusable``
    (writes that may be refused). Returns ([(key, events announced)], [keys
    announced provisionally])."""
    announced, provisional = [], []
    for key, state in items:
        expected.expect(key, state)
        if not expected.events:
            continue  # nobody listens to that side's events (the hub, one-way)
        events = write_events(state, now)
        if events is None:
            continue  # not certain: its echo is told by its content
        if key in refusable:
            expected.expect_provisionally(key, events)
            provisional.append(key)
        else:
            expected.expect_events(key, events)
            announced.append((key, len(events)))
    return announced, provisional


def settle(expected, side: str, provisional, refused, replay) -> None:
    """The write of the keys announced ``provisional`` on ``side`` is
    answered (``refused``: those not made, or not known to be): take again,
    through ``replay(side, key, event)``, the events held meanwhile."""
    for key in provisional:
        for event in expected.settle(key, applied=key not in refused):
            if replay is not None:
                replay(side, key, event)
