"""Strings and hashes cross both ways, byte for byte, with no loops (real
Redis, Webdis, nginx with mTLS, and the daemon under twistd)."""

import time

import pytest
import redis

from tests.harness import key_state, wait_until

NS = "rep:"


@pytest.fixture(scope="module")
def running(lab):
    daemon = lab.daemon(NS, rc=True)
    yield lab
    daemon.stop()


def test_set_crosses_both_ways(running):
    running.crosses_both_ways("rep:set:")


def test_hset_crosses_both_ways(running):
    lab = running
    lab.local.hset("rep:h1", mapping={"a": "1", "b": "2"})
    lab.wait_same("rep:h1")
    lab.remote.hset("rep:h2", mapping={"x": "9"})
    lab.wait_same("rep:h2")
    assert lab.local.hgetall("rep:h2") == {b"x": b"9"}


def _move_in(r, key):
    """``key`` made in database 9, then moved into database 0."""
    kwargs = r.connection_pool.connection_kwargs
    other = redis.Redis(host=kwargs["host"], port=kwargs["port"], db=9)
    other.set(key, "from db 9")
    other.move(key, 0)
    other.close()


# Each command of the string and hash families, as a user would type it.
LOCAL_COMMANDS = {
    "set": lambda r, k: r.set(k, "v"),
    "setex": lambda r, k: r.execute_command("SETEX", k, 300, "v"),
    "setnx": lambda r, k: r.setnx(k, "v"),
    "getset": lambda r, k: (r.set(k, "old"), r.getset(k, "new")),
    "mset": lambda r, k: r.mset({k: "m1", k + ":2": "m2"}),
    "incr": lambda r, k: (r.incr(k), r.incr(k)),
    "incrby": lambda r, k: r.incrby(k, 41),
    "incrbyfloat": lambda r, k: r.incrbyfloat(k, 2.5),
    "decr": lambda r, k: (r.set(k, 10), r.decr(k)),
    "append": lambda r, k: (r.set(k, "ab"), r.append(k, "cd")),
    "setrange": lambda r, k: (r.set(k, "hello world"), r.setrange(k, 6, "redis")),
    "getdel": lambda r, k: (r.set(k, "x"), r.getdel(k)),
    "hset": lambda r, k: r.hset(k, "f", "v"),
    "hmset": lambda r, k: r.execute_command("HMSET", k, "a", "1", "b", "2"),
    "hsetnx": lambda r, k: (r.hsetnx(k, "f", "1"), r.hsetnx(k, "f", "2")),
    "hincrby": lambda r, k: r.hincrby(k, "n", 7),
    "hincrbyfloat": lambda r, k: r.hincrbyfloat(k, "n", 1.25),
    "hdel": lambda r, k: (r.hset(k, mapping={"a": "1", "b": "2"}), r.hdel(k, "a")),
    "hdel_last": lambda r, k: (r.hset(k, "a", "1"), r.hdel(k, "a")),
    "del": lambda r, k: (r.set(k, "x"), r.delete(k)),
    "unlink": lambda r, k: (r.hset(k, "a", "1"), r.unlink(k)),
    "pexpire_gone": lambda r, k: (r.set(k, "x"), r.pexpire(k, 50)),
    # lists
    "lpush": lambda r, k: r.lpush(k, "a", "b", "c"),
    "rpush_dup": lambda r, k: r.rpush(k, "x", "x", "y"),
    "lset": lambda r, k: (r.rpush(k, "a", "b"), r.lset(k, 0, "z")),
    "lrem": lambda r, k: (r.rpush(k, "a", "b", "a"), r.lrem(k, 1, "a")),
    "ltrim": lambda r, k: (r.rpush(k, *"abcdef"), r.ltrim(k, 1, 3)),
    "lmove": lambda r, k: (r.rpush(k, "a", "b"), r.rpush(k + ":dst", "c"), r.lmove(k, k + ":dst", "LEFT", "RIGHT")),
    "lpop_last": lambda r, k: (r.rpush(k, "only"), r.lpop(k)),
    # sets
    "sadd": lambda r, k: r.sadd(k, "a", "b", "\x00\xff"),
    "srem": lambda r, k: (r.sadd(k, "a", "b"), r.srem(k, "a")),
    "smove": lambda r, k: (r.sadd(k, "a", "b"), r.smove(k, k + ":dst", "a")),
    "sunionstore": lambda r, k: (r.sadd(k + ":1", "a"), r.sadd(k + ":2", "b"), r.sunionstore(k, [k + ":1", k + ":2"])),
    # sorted sets
    "zadd": lambda r, k: r.zadd(k, {"a": 1.5, "b": -2, "c": 1e300}),
    "zincrby": lambda r, k: (r.zadd(k, {"a": 1}), r.zincrby(k, 0.1, "a")),
    "zrem": lambda r, k: (r.zadd(k, {"a": 1, "b": 2}), r.zrem(k, "a")),
    "zpopmin": lambda r, k: (r.zadd(k, {"a": 1, "b": 2}), r.zpopmin(k)),
    # streams
    "xadd": lambda r, k: (r.xadd(k, {"t": "21.5", "\x00": "\xff"}), r.xadd(k, {"t": "22"}, id="99999999999999-0")),
    "xdel": lambda r, k: (r.xadd(k, {"a": 1}, id="1-1"), r.xadd(k, {"b": 2}, id="1-2"), r.xdel(k, "1-1")),
    "xtrim": lambda r, k: ([r.xadd(k, {"n": i}) for i in range(5)], r.xtrim(k, maxlen=2)),
    "xdel_all": lambda r, k: (r.xadd(k, {"a": 1}, id="5-5"), r.xdel(k, "5-5")),
    "zunionstore": lambda r, k: (
        r.zadd(k + ":1", {"a": 1}),
        r.zadd(k + ":2", {"a": 2}),
        r.zunionstore(k, [k + ":1", k + ":2"]),
    ),
    # keys as a whole
    "rename_in": lambda r, k: (
        r.set(k.replace("rep:", "out-of-ns:"), "v"),
        r.rename(k.replace("rep:", "out-of-ns:"), k),
    ),
    "rename_within": lambda r, k: (r.rpush(k + ":old", "a"), r.rename(k + ":old", k)),
    "copy": lambda r, k: (r.sadd(k + ":src", "a"), r.copy(k + ":src", k)),
    "sort_store": lambda r, k: (r.rpush(k + ":src", 3, 1, 2), r.sort(k + ":src", store=k)),
    "restore": lambda r, k: (r.zadd(k + ":src", {"a": 1}), r.restore(k, 0, r.dump(k + ":src"))),
    # MOVE to and from another database: gone from this one, or arrived in it
    "move_out": lambda r, k: (r.sadd(k, "a"), r.move(k, 9)),
    "move_in": lambda r, k: _move_in(r, k),
    # expiries
    "set_keepttl": lambda r, k: (r.set(k, "a", ex=300), r.set(k, "b", keepttl=True)),
    "expire": lambda r, k: (r.rpush(k, "a"), r.expire(k, 300)),
    "pexpireat": lambda r, k: (r.hset(k, "f", "v"), r.pexpireat(k, int(time.time() * 1000) + 300_000)),
    "persist": lambda r, k: (r.set(k, "v", ex=300), r.persist(k)),
}


def _settle(lab, writer, key):
    """Wait until both sides agree on ``key`` after a command on ``writer``."""
    other = lab.remote if writer is lab.local else lab.local
    # a marker written after the command crosses after it: then compare
    marker = key + ":marker"
    writer.set(marker, "m")
    wait_until(lambda: other.get(marker) == b"m", what=f"marker after {key}")
    lab.wait_same(key)


@pytest.mark.parametrize("name", sorted(LOCAL_COMMANDS))
@pytest.mark.parametrize("direction", ["local-to-remote", "remote-to-local"])
def test_each_command(running, name, direction):
    lab = running
    writer = lab.local if direction == "local-to-remote" else lab.remote
    key = f"rep:cmd:{direction}:{name}"
    LOCAL_COMMANDS[name](writer, key)
    expected = key_state(writer, key)
    _settle(lab, writer, key)
    other = lab.remote if writer is lab.local else lab.local
    if name == "pexpire_gone":
        wait_until(lambda: key_state(lab.local, key)[0] == "none" == key_state(lab.remote, key)[0])
    else:
        assert key_state(other, key) == expected
    if name == "mset":
        lab.wait_same(key + ":2")
    for suffix in (":dst", ":old", ":src"):
        lab.wait_same(key + suffix)


def test_rename_out_of_the_namespace_deletes_on_the_other_side(running):
    lab = running
    lab.local.hset("rep:leaving", "f", "v")
    wait_until(lambda: lab.remote.hget("rep:leaving", "f") == b"v")
    lab.local.rename("rep:leaving", "elsewhere:left")
    wait_until(lambda: not lab.remote.exists("rep:leaving"))
    assert not lab.remote.exists("elsewhere:left")


def test_ttl_crosses_with_the_value(running):
    lab = running
    lab.local.execute_command("SETEX", "rep:ttl", 100, "v")
    wait_until(lambda: lab.remote.get("rep:ttl") == b"v")
    assert 95_000 < lab.remote.pttl("rep:ttl") <= 100_000


def test_expired_key_is_deleted_on_the_other_side(running):
    lab = running
    lab.remote.set("rep:exp", "v")
    wait_until(lambda: lab.local.get("rep:exp") == b"v")
    # the remote copy carries no TTL; the local one expires
    lab.local.pexpire("rep:exp", 100)
    wait_until(lambda: not lab.local.exists("rep:exp"))
    wait_until(lambda: not lab.remote.exists("rep:exp"))


BINARY_VALUES = [
    bytes(range(256)),
    b"x\xff\x00y",
    b"a/b.c%d?e#f+g h\r\n",
    b"",
    b"\x00",
    b".raw",
    "ünïcödé €".encode(),
]
BINARY_KEYS = [
    b"rep:bin:/slash/",
    b"rep:bin:dot.raw",
    b"rep:bin:pct%41%",
    b"rep:bin:nul\x00nul",
    b"rep:bin:new\nline",
    b"rep:bin:bad\xff\xfeutf8",
    b"rep:bin:q?h#p+ sp",
    b"rep:bin:" + bytes(range(256)),
]


@pytest.mark.parametrize("direction", ["local-to-remote", "remote-to-local"])
def test_binary_keys_and_values_byte_for_byte(running, direction):
    lab = running
    src, dst = (lab.local, lab.remote) if direction == "local-to-remote" else (lab.remote, lab.local)
    tag = direction.encode()
    for i, key in enumerate(BINARY_KEYS):
        src.set(key + tag, BINARY_VALUES[i % len(BINARY_VALUES)])
    for i, value in enumerate(BINARY_VALUES):
        src.hset(b"rep:binhash:" + tag, b"f%d\x00\xff/." % i, value)
    for i, key in enumerate(BINARY_KEYS):
        wait_until(lambda: dst.get(key + tag) == BINARY_VALUES[i % len(BINARY_VALUES)], what=f"binary key {key!r}")
    wait_until(lambda: dst.hgetall(b"rep:binhash:" + tag) == src.hgetall(b"rep:binhash:" + tag))


def test_namespace_filter_both_ways(running):
    lab = running
    lab.local.set("outside:a", "1")
    lab.remote.set("outside:b", "2")
    lab.local.set("re:x", "prefix of the namespace but not in it")
    _settle(lab, lab.local, "rep:filter1")
    _settle(lab, lab.remote, "rep:filter2")
    assert lab.remote.get("outside:a") is None
    assert lab.local.get("outside:b") is None
    assert lab.remote.get("re:x") is None


def test_reserved_keys_are_not_replicated(running):
    lab = running
    lab.local.set("rep:__redisrepl__:mine", "1")
    _settle(lab, lab.local, "rep:reserved")
    assert lab.remote.get("rep:__redisrepl__:mine") is None
    # the remote heartbeat keys never come to the local side
    assert not lab.local.keys("rep:__redisrepl__:heartbeat:*")
    wait_until(lambda: lab.remote.keys("rep:__redisrepl__:heartbeat:*"))


class EventCounter:
    """Counts keyspace events for one key on one Redis."""

    def __init__(self, r, key):
        self.pubsub = r.pubsub()
        self.pubsub.subscribe(f"__keyspace@0__:{key}")
        self.pubsub.get_message(timeout=5)  # subscription confirmation
        self.events = []

    def drain(self):
        while True:
            msg = self.pubsub.get_message(timeout=0.01)
            if msg is None:
                return self.events
            if msg["type"] == "message":
                self.events.append(msg["data"])

    def close(self):
        self.pubsub.close()


@pytest.mark.parametrize("writer_side", ["local", "remote"])
def test_no_loops(running, writer_side):
    lab = running
    key = f"rep:loop:{writer_side}"
    writer = getattr(lab, writer_side)
    counters = {"local": EventCounter(lab.local, key), "remote": EventCounter(lab.remote, key)}
    try:
        writer.set(key, "once")
        lab.wait_same(key)
        # two later changes to other keys cross after any echo of this one would
        _settle(lab, lab.local, key + ":after-l")
        _settle(lab, lab.remote, key + ":after-r")
        counts = {side: len(c.drain()) for side, c in counters.items()}
        assert counts == {"local": 1, "remote": 1}, counts
    finally:
        for c in counters.values():
            c.close()


def test_concurrent_writes_converge(running):
    lab = running
    for i in range(30):
        lab.local.set("rep:race", f"L{i}")
        lab.remote.set("rep:race", f"R{i}")
        lab.local.hset("rep:racehash", "f", f"L{i}")
        lab.remote.hset("rep:racehash", "f", f"R{i}")
    lab.wait_same("rep:race")
    lab.wait_same("rep:racehash")


def test_another_database_on_both_sides(lab):
    local2, remote2 = (
        type(lab.local)(port=lab.sandbox.local_redis_port, db=2),
        type(lab.remote)(port=lab.sandbox.remote_redis_port, db=2),
    )
    daemon = lab.daemon("db2:", rc=True, extra=["--db", "2"])
    try:
        local2.set("db2:a", "in db 2")
        wait_until(lambda: remote2.get("db2:a") == b"in db 2")
        remote2.hset("db2:h", "f", "v")
        wait_until(lambda: local2.hgetall("db2:h") == {b"f": b"v"})
        assert lab.remote.get("db2:a") is None and lab.local.get("db2:h") is None
    finally:
        daemon.stop()


@pytest.mark.parametrize(
    "ns",
    ["lab/1:", "lab+1:", "lab%2F1:", "lab?1:", "lab#1:", "lab 1:", "läb-é:"],
    ids=["slash", "plus", "percent", "question", "hash", "space", "non-ascii"],
)
def test_any_namespace_crosses_both_ways_through_the_proxy(daemons, ns):
    """nginx decodes %2F and %2B in a URL on its way to Webdis: the stream's
    pattern goes in a request body, where nothing touches it."""
    lab = daemons
    d = lab.daemon(ns, rc=True)
    lab.crosses_both_ways(ns)
    lab.remote.set(ns + "second", "2")
    wait_until(lambda: lab.local.get(ns + "second") == b"2")
    assert "reconnecting" not in d.log()
