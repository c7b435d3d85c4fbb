"""The Lua scripts of redisrepl/lua, each against one real redis-server.

Every script is called the way the daemon calls it: through the stores'
own code (``redisrepl.testing.BlockingStore`` is a ``_StateStore``: EVALSHA,
EVAL after NOSCRIPT, the context arguments, the generation trailer taken
off the reply) and the daemon's callers (``big_keys``, ``reconcile``,
``synced``). What each test expects is computed here, from the data it
wrote with plain Redis commands, never from a script's output.

The digests get a property test: for random data of every type, the
digest computed inside Redis (digest_keys, digest_scan, and a chunk per
call) equals the daemon's (``state.content_digest`` of the state the read
script gives, ``state.Digester`` over chunks) and the definition written
out below (``reference_digest``, from the scripts' comments), so that the
Lua and Python definitions cannot drift apart.

One redis-server serves the module; each test takes a database of its own,
emptied before and after.
"""

import hashlib
import itertools
import random
import shutil
import subprocess
import time
from importlib import resources

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock

from redisrepl import big_keys, scan, scripts, state
from redisrepl.epochs import lost_windows, parse_hist
from redisrepl.errors import RefusedError
from redisrepl.expected import ExpectedEvents
from redisrepl.namespace import Namespace
from redisrepl.sandbox import SandboxError, free_port
from redisrepl.sandbox.components import redis_server_argv
from redisrepl.sides import LOCAL, REMOTE, Side
from redisrepl.state import (
    ABSENT,
    HASH,
    LIST,
    SET,
    STREAM,
    STRING,
    ZSET,
    BigState,
    Digester,
    KeyState,
    split_reply,
    synced_digest,
)
from redisrepl.synced import SyncedEntry, SyncedTable
from redisrepl.testing import BlockingStore, run

pytestmark = pytest.mark.real_servers  # one redis-server for the module

NS = b"ns:"
NAMES = Namespace(NS)
EPOCH = NAMES.meta + b"epoch"
DATABASES = 16
KINDS = [STRING, HASH, LIST, SET, ZSET, STREAM]
COLLECTIONS = [HASH, LIST, SET, ZSET, STREAM]

#: The digest's sizes, as the scripts' comments give them (not imported:
#: the definition here must not follow the code if the code changes).
PIECE = 1024 * 1024  # a string longer than this is digested a piece at a time
CHUNK = 1000  # list elements, stream entries per SHA1
BIG_BYTES = 8 * 1024 * 1024  # the daemon's limit of a string read whole
#: That limit (``state.BIG_BYTES``, an argument of the read and digest
#: scripts) lowered for the digests' tests: the boundary shown on 2 MB, not 8
LOW_BIG_BYTES = 2 * PIECE + 5


# -- the server ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One redis-server on a free loopback port for the whole module: its port."""
    workdir = tmp_path_factory.mktemp("lua-redis")
    for _ in range(3):  # a port taken between free_port() and the bind: another one
        port = free_port()
        try:
            argv = redis_server_argv(port, str(workdir), str(workdir / "redis.log"), "--databases", str(DATABASES))
        except SandboxError as e:
            pytest.fail(f"{e}; ./dev.sh test installs what the tests need")
        proc = subprocess.Popen(
            argv,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                redis.Redis(host="127.0.0.1", port=port, socket_timeout=1).ping()
                break
            except redis.ConnectionError:
                time.sleep(0.02)
        else:
            proc.kill()
            proc.wait()
            continue
        break
    else:
        pytest.fail(f"redis-server did not start: {(workdir / 'redis.log').read_text()[-2000:]}")
    yield port
    proc.terminate()
    proc.wait(10)
    shutil.rmtree(workdir, ignore_errors=True)


_databases = itertools.count(1)


def client(port, db):
    """A client speaking RESP2 as the daemon's do, replies as Redis sends them."""
    c = redis.Redis(host="127.0.0.1", port=port, db=db, protocol=2, socket_timeout=60)
    c.response_callbacks = {}
    return c


def fresh_db(port):
    c = client(port, next(_databases) % DATABASES)
    c.execute_command("FLUSHDB")
    return c


@pytest.fixture
def r(server):
    """A database of this test's own, empty."""
    c = fresh_db(server)
    yield c
    c.execute_command("FLUSHDB")
    c.close()


@pytest.fixture
def r2(server):
    """Another one (the other side of a copy)."""
    c = fresh_db(server)
    yield c
    c.execute_command("FLUSHDB")
    c.close()


def server_us(r):
    seconds, micros = r.execute_command("TIME")
    return int(seconds) * 1_000_000 + int(micros)


def store(r, ns=NS, hub=False, big_items=state.BIG_ITEMS):
    """The daemon's store over ``r``: the hub's (it stamps its writes) or a local one."""
    clock = Clock()
    clock.advance(server_us(r) / 1e6)
    return BlockingStore(r, ns, big_items=big_items, hub=hub, clock=clock)


def hgetall(r, key):
    flat = r.execute_command("HGETALL", key)
    return dict(zip(flat[0::2], flat[1::2]))


def call(s, script, keys, args):
    """(payload, generation) of one script, as the stores call it."""
    return run(s.call(script, keys, args))


# -- the definition of the digest, from the scripts' comments ------------------------------


def sha1hex(data):
    return hashlib.sha1(data).hexdigest().encode()


def framed(item):
    return b"%d:" % len(item) + item


def xor_of(hexes):
    acc = 0
    for h in hexes:
        acc ^= int(h, 16)
    return b"%040x" % acc


def sha1_of_chunks(parts):
    return sha1hex(b"".join(sha1hex(b"".join(parts[i : i + CHUNK])) for i in range(0, len(parts), CHUNK)))


def score_text(score):
    """A score as the digest spells it: %.17g, zero without a sign (Redis
    keeps the sign of zero in some encodings of a sorted set, not others)."""
    return b"%.17g" % (score if score != 0 else 0.0)


def reference_digest(kind, value):
    """The content digest of a value given as Python data: a string's bytes,
    a dict (hash; sorted set: member -> float), a set, a list, a stream's
    [(id, (field, value, ...))]."""
    if kind == STRING:
        if len(value) <= PIECE:
            return sha1hex(b"s" + value)
        return b"S" + sha1hex(b"".join(sha1hex(value[i : i + PIECE]) for i in range(0, len(value), PIECE)))
    if kind == HASH:
        return b"h" + xor_of(sha1hex(framed(f) + v) for f, v in value.items())
    if kind == SET:
        return b"m" + xor_of(sha1hex(m) for m in value)
    if kind == ZSET:
        return b"z" + xor_of(sha1hex(framed(m) + score_text(s)) for m, s in value.items())
    if kind == LIST:
        return b"l" + sha1_of_chunks([framed(e) for e in value])
    if kind == STREAM:
        return b"t" + sha1_of_chunks([framed(i) + b"".join(framed(x) for x in fields) + b";" for i, fields in value])
    raise AssertionError(kind)


def daemon_state(kind, value, expire_ms=None):
    """The KeyState the daemon holds for that value (its canonical form)."""
    canonical = {
        STRING: lambda: value,
        HASH: lambda: tuple(sorted(value.items())),
        SET: lambda: tuple(sorted(value)),
        ZSET: lambda: tuple(sorted((m, score_text(s)) for m, s in value.items())),
        LIST: lambda: tuple(value),
        STREAM: lambda: tuple((i, tuple(fields)) for i, fields in value),
    }[kind]()
    return KeyState(kind, canonical, expire_ms / 1000 if expire_ms else None)


# -- data in and out with plain commands ------------------------------------------------


def batched(items, n=2000):
    for i in range(0, len(items), n):
        yield items[i : i + n]


def put(r, key, kind, value, expire_ms=None):
    """Make ``key`` hold ``value`` with plain Redis commands (not the scripts)."""
    pipe = r.pipeline(transaction=False)
    pipe.execute_command("DEL", key)
    if kind == STRING:
        pipe.execute_command("SET", key, value)
    elif kind == HASH:
        for part in batched([x for pair in value.items() for x in pair]):
            pipe.execute_command("HSET", key, *part)
    elif kind == LIST:
        for part in batched(list(value)):
            pipe.execute_command("RPUSH", key, *part)
    elif kind == SET:
        for part in batched(list(value)):
            pipe.execute_command("SADD", key, *part)
    elif kind == ZSET:
        for part in batched([x for m, s in value.items() for x in (repr(float(s)), m)]):
            pipe.execute_command("ZADD", key, *part)
    elif kind == STREAM:
        if not value:  # an empty stream: one entry added and taken away
            pipe.execute_command("XADD", key, "0-1", "f", "v")
            pipe.execute_command("XDEL", key, "0-1")
        for entry_id, fields in value:
            pipe.execute_command("XADD", key, entry_id, *fields)
    if expire_ms:
        pipe.execute_command("PEXPIREAT", key, expire_ms)
    pipe.execute()


def held(r, key):
    """(type, value) of ``key``, read with plain commands, as Python data;
    scores as floats (so -0.0 == 0.0, as for Redis)."""
    kind = r.execute_command("TYPE", key).decode()
    if kind == STRING:
        return kind, r.execute_command("GET", key)
    if kind == HASH:
        return kind, hgetall(r, key)
    if kind == LIST:
        return kind, r.execute_command("LRANGE", key, 0, -1)
    if kind == SET:
        return kind, set(r.execute_command("SMEMBERS", key))
    if kind == ZSET:
        flat = r.execute_command("ZRANGE", key, 0, -1, "WITHSCORES")
        return kind, {m: float(s) for m, s in zip(flat[0::2], flat[1::2])}
    if kind == STREAM:
        return kind, [(i, tuple(f)) for i, f in r.execute_command("XRANGE", key, "-", "+")]
    return kind, None


def random_value(kind, n, rng):
    """A value of ``n`` random items (binary: NULs, invalid UTF-8)."""

    def b(most=12):
        return rng.randbytes(rng.randrange(0, most))

    if kind == STRING:
        return rng.randbytes(n)
    if kind == HASH:
        return {b"f%d:" % i + b(): b(30) for i in range(n)}
    if kind == LIST:
        return [b() for _ in range(n)]
    if kind == SET:
        return {b"m%d:" % i + b() for i in range(n)}
    if kind == ZSET:
        return {
            b"m%d:" % i + b(): rng.choice(
                [
                    rng.uniform(-1e9, 1e9),
                    float(rng.randrange(-99, 99)),
                    rng.uniform(-1, 1) * 10 ** rng.randrange(-300, 300),
                ]
            )
            for i in range(n)
        }
    return [(b"%d-%d" % (1 + i // 3, i % 3), tuple(b(8) for _ in range(2 * rng.randrange(1, 3)))) for i in range(n)]


# -- every script, shipped and loaded ------------------------------------------------------

SCRIPTS = {name: value for name, value in vars(scripts).items() if isinstance(value, scripts.Script)}


def test_prelude_and_every_script_are_package_files_each_tested_here():
    lua = resources.files("redisrepl").joinpath("lua")
    files = sorted(p.name[:-4] for p in lua.iterdir() if p.name.endswith(".lua"))
    prelude = lua.joinpath("prelude.lua").read_bytes()
    assert "prelude" in files
    assert sorted(s.name for s in SCRIPTS.values()) == sorted(set(files) - {"prelude"})
    for script in SCRIPTS.values():
        own = lua.joinpath(script.name + ".lua").read_bytes()
        if script is scripts.PIECE:  # its last argument is the piece: loaded alone
            assert script.body == own
        else:
            assert script.body.startswith(prelude) and own in script.body
        assert script.sha == sha1hex(script.body)
    for name in files:
        assert any(test.startswith("test_" + name) for test in globals()), f"no test of {name}.lua"


# -- prelude: the generation at the end of every reply ---------------------------------------


def minimal_calls():
    """One valid call of each script: (script, keys, args)."""
    k = NS + b"k"
    return [
        (scripts.READ, [k], []),
        (scripts.WRITE, [k], state.write_segment(b"string", b"0", [b"v"])),
        (scripts.DIGEST_SCAN, [], [b"0", b"ns:*", b"10"]),
        (scripts.KEY_SCAN, [], [b"0", b"ns:*", b"10"]),
        (scripts.DIGEST_KEYS, [k], []),
        (scripts.EXISTS, [k], []),
        (scripts.CHUNK, [k], [b"string", b"0", b"10", b"items"]),
        (scripts.FINISH, [NS + b"tmp", k], [b"0", b""]),
        (scripts.CHECK, [], [b"", b"0", b""]),
        (scripts.FLAG_EVICTED, [NAMES.meta + b"synced"], [b"L", k]),
        (scripts.RECORD, [NAMES.meta + b"synced"], [b"", k, b"d#1"]),
        (scripts.GET, [NAMES.meta + b"walk:info"], []),
        (scripts.FORGET, [NAMES.meta + b"synced"], [k, b"d#1"]),
    ]


def test_prelude_every_script_answers_with_the_same_generation(r):
    assert {c[0].name for c in minimal_calls()} == {s.name for s in SCRIPTS.values()} - {"piece"}  # no prelude
    for hub in (False, True):
        ns = b"hub:" if hub else NS
        s = store(r, ns, hub=hub)
        r.execute_command("DEL", Namespace(ns).meta + b"epoch")
        generations = [call(s, script, keys, args)[1] for script, keys, args in minimal_calls()]
        epoch = hgetall(r, Namespace(ns).meta + b"epoch")
        assert {g.id for g in generations} == {epoch[b"id"]}
        assert {g.start for g in generations} == {int(epoch[b"s0"])}
        stamps = [g.stamp for g in generations]
        assert stamps[-1] == int(epoch[b"n"])
        if hub:  # the write (2nd call) and the record (11th: a key of the meta prefix is not stamped)
            assert stamps[1] > stamps[0] and stamps == sorted(stamps) and stamps[2] == stamps[1]
        else:
            assert set(stamps) == {int(epoch[b"s0"])}


def test_prelude_starts_a_generation_once_and_a_new_one_after_a_loss(r):
    s = store(r)
    before = server_us(r)
    first = run(s.check())
    epoch = hgetall(r, EPOCH)
    g = first.generation
    assert g.id == epoch[b"id"] and len(g.id) == 16
    assert before <= g.start <= server_us(r) and g.stamp == g.start == g.base
    info = r.execute_command("INFO", "server")
    assert b"run_id:" + epoch[b"run"] in info
    assert parse_hist(first.hist) == [(g.id, 0, g.start)]
    # the same generation for as long as the data and the server last
    assert call(s, scripts.EXISTS, [NS + b"k"], [])[1] == g
    # a wipe: a new generation (its record went with the data)
    r.execute_command("FLUSHDB")
    wiped = run(s.check()).generation
    assert wiped.id != g.id and wiped.start >= g.start
    assert parse_hist(run(s.check()).hist) == [(wiped.id, 0, wiped.start)]
    # another server with the same data (a restart from a snapshot, a
    # failover): a new generation, which lost what came after what it loaded
    r.execute_command("HSET", EPOCH, "run", "0" * 40)
    moved = run(s.check())
    m = moved.generation
    assert m.id not in (g.id, wiped.id) and m.start > wiped.stamp
    assert parse_hist(moved.hist) == [(wiped.id, 0, wiped.start), (m.id, wiped.stamp, m.start)]
    assert lost_windows(moved.hist, wiped.id) == [(wiped.stamp, m.start)]
    # the record keeps the last 16 generations
    for _ in range(20):
        r.execute_command("HSET", EPOCH, "run", "1" * 40)
        last = run(s.check())
    records = parse_hist(last.hist)
    assert len(records) == 16 and records[-1][0] == last.generation.id and records[0][0] != wiped.id


def test_prelude_look_only_neither_starts_nor_touches_the_epoch(r):
    looker = store(r)
    looker.look_only = True
    _, g = call(looker, scripts.EXISTS, [NS + b"k"], [])
    assert g.id == b"" and r.execute_command("EXISTS", EPOCH) == 0
    started = run(store(r).check()).generation
    epoch = hgetall(r, EPOCH)
    _, g = call(looker, scripts.READ, [NS + b"k"], [])
    assert g.id == started.id and hgetall(r, EPOCH) == epoch
    # on another server: what the next writing call will do, a new generation
    # (told by the id b"" and its would-be record), and none is made
    r.execute_command("HSET", EPOCH, "run", "0" * 40)
    epoch = hgetall(r, EPOCH)
    looked = run(looker.check())
    assert looked.generation.id == b"" and looked.generation.start > started.start
    assert parse_hist(looked.hist)[-1][1:] == (int(epoch[b"n"]), looked.generation.start)
    assert hgetall(r, EPOCH) == epoch
    made = run(store(r).check()).generation
    assert made.id not in (b"", started.id) and made.start >= looked.generation.start


def test_prelude_hub_stamps_each_write_call_once_and_remembers_the_keys(r):
    hub = store(r, hub=True)
    a, b, c = NS + b"a", NS + b"b", NS + b"c"
    g0 = run(hub.check()).generation
    assert g0.base == 0  # within the window, a state without a record is as of the start: nothing
    before = server_us(r)
    g1 = run(hub.write([(a, KeyState(STRING, b"1")), (b, KeyState(SET, (b"x",)))])).generation
    assert g1.id == g0.id and g1.stamp > g0.stamp and g1.stamp >= before
    assert int(hgetall(r, EPOCH)[b"n"]) == g1.stamp
    after = NAMES.meta + b"after:" + g0.id
    assert hgetall(r, after) == {a: b"%d" % g1.stamp, b: b"%d" % g1.stamp}
    # the record lasts as long as the recovery window
    assert abs(r.execute_command("PEXPIRETIME", after) - (g0.start / 1000 + scripts.RECOVERY_WINDOW * 1000)) <= 1
    reply = run(hub.read([a, b, c]))
    assert reply.tags == [g1.stamp, g1.stamp, None] and reply.generation.stamp == g1.stamp
    g2 = run(hub.write([(a, KeyState(STRING, b"2"))])).generation
    assert g2.stamp > g1.stamp and hgetall(r, after)[a] == b"%d" % g2.stamp
    # redisrepl's own keys are neither stamped nor remembered
    g3 = run(
        hub.write([(NAMES.reserved + b"hb", KeyState(STRING, b"1")), (NAMES.meta + b"x", KeyState(STRING, b"1"))])
    ).generation
    assert g3.stamp == g2.stamp and set(hgetall(r, after)) == {a, b}
    # a local side stamps nothing and remembers nothing
    local = store(r, b"lo:")
    l0 = run(local.check()).generation
    l1 = run(local.write([(b"lo:a", KeyState(STRING, b"1"))])).generation
    assert l1 == l0 and l0.base == l0.stamp
    assert run(local.read([b"lo:a"])).tags == [None]
    assert not r.execute_command("KEYS", Namespace(b"lo:").meta + b"after:*")


def test_prelude_refills_on_the_hub_only_over_older_states_within_the_window(r):
    hub = store(r, hub=True)
    k, fresh = NS + b"k", NS + b"fresh"
    t = run(hub.write([(k, KeyState(STRING, b"new"))])).generation.stamp
    # a refill of a state known since t or before: k holds something as fresh
    w = run(hub.write([(k, KeyState(STRING, b"old"))], origins={k: t}))
    assert w.skipped == {k} and r.execute_command("GET", k) == b"new"
    w = run(hub.write([(k, KeyState(STRING, b"newer")), (fresh, KeyState(STRING, b"x"))], origins={k: t + 1, fresh: 5}))
    assert not w.skipped and r.execute_command("GET", k) == b"newer"
    after = hgetall(r, NAMES.meta + b"after:" + w.generation.id)
    assert after[k] == b"%d" % (t + 1) and after[fresh] == b"5"
    # the window closed (the generation started longer ago than it lasts)
    start = w.generation.start - (scripts.RECOVERY_WINDOW + 1) * 1_000_000
    r.execute_command("HSET", EPOCH, "s0", b"%d" % start)
    w = run(hub.write([(NS + b"late", KeyState(STRING, b"x"))], origins={NS + b"late": t + 99}))
    assert w.skipped == {NS + b"late"} and not r.execute_command("EXISTS", NS + b"late")
    g = run(hub.write([(NS + b"late", KeyState(STRING, b"x"))])).generation
    assert r.execute_command("GET", NS + b"late") == b"x"
    assert g.base == g.stamp and run(hub.read([k])).tags == [None]
    # a local side takes every refill
    local = store(r, b"lo:")
    assert not run(local.write([(b"lo:k", KeyState(STRING, b"x"))], origins={b"lo:k": 1})).skipped


# -- read --------------------------------------------------------------------------------


def test_read_gives_each_type_whole_with_its_absolute_expiry(r):
    rng = random.Random(1)
    at = server_us(r) // 1000 + 3_600_000
    values = {kind: random_value(kind, 5, rng) for kind in KINDS}
    for i, kind in enumerate(KINDS):
        put(r, NS + kind.encode(), kind, values[kind], at + i if i % 2 else None)
    put(r, NS + b"empty-stream", STREAM, [])
    keys = [NS + kind.encode() for kind in KINDS] + [NS + b"empty-stream", NS + b"absent"]
    reply = run(store(r).read(keys))
    expected = [daemon_state(kind, values[kind], at + i if i % 2 else None) for i, kind in enumerate(KINDS)]
    assert reply.states == expected + [KeyState(STREAM, ()), ABSENT]
    assert [s.expire_at for s in reply.states[:6]] == [
        None,
        (at + 1) / 1000,
        None,
        (at + 3) / 1000,
        None,
        (at + 5) / 1000,
    ]
    # the reply, flat: {type, absolute expiry, tag, n, items...} per key
    payload, _ = call(store(r), scripts.READ, [NS + b"list", NS + b"absent"], [])
    assert payload == [b"list", b"-1", b"", b"5", *values[LIST], b"none", b"-2", b"", b"0"]


def test_read_leaves_big_keys_and_keys_past_the_budget_unread(r):
    s = store(r)
    put(r, NS + b"h", HASH, {b"f%d" % i: b"v" for i in range(4)}, 4_000_000_000_000)
    put(r, NS + b"s", STRING, b"x" * 100)
    put(r, NS + b"l", LIST, [b"y" * 30, b"z" * 30])
    put(r, NS + b"one", SET, {b"m"})
    keys = [NS + b"h", NS + b"s", NS + b"l", NS + b"one"]
    # more items than 3, more bytes than 50: headers only
    payload, _ = call(s, scripts.READ, keys, [b"3", b"50"])
    assert payload == [
        b"big",
        b"4000000000000",
        b"",
        b"2",
        b"hash",
        b"4",
        b"big",
        b"-1",
        b"",
        b"2",
        b"string",
        b"100",
        b"big",
        b"-1",
        b"",
        b"2",
        b"list",
        b"2",
        b"set",
        b"-1",
        b"",
        b"1",
        b"m",
    ]
    states, _ = split_reply(payload, 4, 0)
    assert states[:3] == [BigState(HASH, 4, 4_000_000_000.0), BigState(STRING, 100), BigState(LIST, 2)]
    # once the reply holds the budget, the next keys are left for later (the first is always read)
    payload, _ = call(s, scripts.READ, [NS + b"s", NS + b"one", NS + b"l"], [b"10", b"1000", b"100"])
    assert payload == [b"string", b"-1", b"", b"1", b"x" * 100, b"later", b"-2", b"", b"0", b"later", b"-2", b"", b"0"]
    assert split_reply(payload, 3, 0)[0][1:] == [state.NOT_READ, state.NOT_READ]


# -- write -------------------------------------------------------------------------------


def test_write_makes_each_type_hold_a_state_exactly(r):
    rng = random.Random(2)
    s = store(r)
    at = server_us(r) // 1000 + 3_600_000
    values = {kind: random_value(kind, 7, rng) for kind in KINDS}
    values[ZSET].update({b"a": 1e300, b"b": -0.0, b"c": float("inf"), b"d": float("-inf"), b"e": 5e-324, b"f": 0.1})
    values[STREAM].append((b"99-1", (b"f", b"a", b"f", b"b")))  # a field twice in one entry
    # over keys of another type, some with an expiry
    for kind in KINDS:
        put(r, NS + kind.encode(), SET if kind != SET else LIST, {b"old"} if kind != SET else [b"old"], at + 5)
    items = [
        (NS + kind.encode(), daemon_state(kind, values[kind], at if kind in (HASH, ZSET) else None)) for kind in KINDS
    ]
    items.append((NS + b"empty-stream", KeyState(STREAM, ())))
    assert not run(s.write(items)).skipped
    for kind in KINDS:
        key = NS + kind.encode()
        assert held(r, key) == (
            kind,
            dict(values[kind]) if kind in (HASH, ZSET) else (set(values[kind]) if kind == SET else values[kind]),
        )
        assert r.execute_command("PEXPIRETIME", key) == (at if kind in (HASH, ZSET) else -1)
    assert held(r, NS + b"empty-stream") == (STREAM, [])
    # absent, or expired by now: deleted
    now = s._clock.seconds()
    run(s.write([(NS + b"string", ABSENT), (NS + b"list", KeyState(LIST, (b"x",), now - 1))]))
    assert r.execute_command("EXISTS", NS + b"string", NS + b"list") == 0


def test_write_takes_thousands_of_items_in_one_state(r):
    s = store(r)
    value = {b"m%d" % i: float(i) for i in range(9000)}
    assert not run(s.write([(NS + b"z", daemon_state(ZSET, value))])).skipped
    assert held(r, NS + b"z") == (ZSET, value)


def test_write_with_expect_only_over_the_state_seen(r):
    s = store(r)
    at = server_us(r) // 1000 + 3_600_000
    a, b, gone, big = NS + b"a", NS + b"b", NS + b"gone", NS + b"big"
    put(r, a, HASH, {b"f": b"1"}, at)
    put(r, b, LIST, [b"x"])
    r.execute_command("SETRANGE", big, BIG_BYTES, b"!")  # too big to digest in one call
    seen_a = reference_digest(HASH, {b"f": b"1"}) + b"@%d" % at
    seen_b = reference_digest(LIST, [b"x"])
    new = KeyState(STRING, b"new")
    # as seen (digest with its expiry; absent; too big to check): written
    w = run(
        s.write(
            [(a, new), (b, new), (gone, new), (big, new)], expects={a: seen_a, b: seen_b, gone: None, big: b"whatever"}
        )
    )
    assert not w.skipped
    assert [r.execute_command("GET", k) for k in (a, b, gone, big)] == [b"new"] * 4
    # changed since (value, expiry, or now present): not written
    put(r, a, HASH, {b"f": b"1"}, at + 1)
    put(r, b, LIST, [b"x", b"y"])
    w = run(
        s.write(
            [
                (a, KeyState(STRING, b"2")),
                (b, KeyState(STRING, b"2")),
                (gone, KeyState(STRING, b"2")),
                (NS + b"free", KeyState(STRING, b"2")),
            ],
            expects={a: seen_a, b: seen_b, gone: None},
        )
    )
    assert w.skipped == {a, b, gone}
    assert held(r, a) == (HASH, {b"f": b"1"}) and r.execute_command("GET", gone) == b"new"
    assert r.execute_command("GET", NS + b"free") == b"2"


def test_write_chunks_of_a_big_copy_into_a_temporary_key(r):
    hub = store(r, hub=True)
    tmp = NAMES.meta + b"tmp:1"
    stamp = run(hub.check()).generation.stamp
    put(r, tmp, SET, {b"stale"})
    run(
        hub.run_script(scripts.WRITE, [tmp], state.write_segment(b"=set", b"300000", [b"m%d" % i for i in range(5000)]))
    )
    run(
        hub.run_script(scripts.WRITE, [tmp], state.write_segment(b"+set", b"300000", [b"n%d" % i for i in range(5000)]))
    )
    assert held(r, tmp) == (SET, {b"m%d" % i for i in range(5000)} | {b"n%d" % i for i in range(5000)})
    assert 0 < r.execute_command("PTTL", tmp) <= 300000  # relative, by the server's clock
    run(hub.run_script(scripts.WRITE, [tmp + b"l"], state.write_segment(b"=list", b"1000", [b"a", b"b"])))
    run(hub.run_script(scripts.WRITE, [tmp + b"l"], state.write_segment(b"+list", b"1000", [b"c"])))
    assert held(r, tmp + b"l") == (LIST, [b"a", b"b", b"c"])
    # no stamp for a temporary key
    assert run(hub.check()).generation.stamp == stamp


def test_write_refuses_a_type_it_cannot_write(r):
    with pytest.raises(RefusedError, match="cannot write a key of type hyperloglog"):
        call(store(r), scripts.WRITE, [NS + b"k"], state.write_segment(b"hyperloglog", b"0", []))


# -- digest_scan, key_scan ---------------------------------------------------------------


def own_and_foreign_keys(r):
    """Keys of the namespace, redisrepl's own ones (matched by a pattern
    covering everything) and one of another namespace."""
    mine = {NS + b"a": b"1", NS + b"b\x00\xff": b"2", NS + b"c": b"3"}
    for k, v in mine.items():
        r.execute_command("SET", k, v)
    for k in (
        NAMES.reserved + b"hb",
        NAMES.meta + b"synced",
        big_keys.PLAIN_TEMPORARY + b"x",
        b"__redisrepl__:{other:}:epoch",
    ):
        r.execute_command("SET", k, b"own")
    r.execute_command("SET", b"other:x", b"4")
    return mine


def test_digest_scan_lists_keys_with_digest_expiry_and_tag_never_redisrepls_own(r):
    hub = store(r, hub=True)
    mine = own_and_foreign_keys(r)
    at = server_us(r) // 1000 + 60_000
    r.execute_command("PEXPIREAT", NS + b"a", at)
    stamp = run(hub.write([(NS + b"c", KeyState(STRING, b"3"))])).generation.stamp
    put(r, NS + b"h", HASH, {b"f%d" % i: b"v" for i in range(20)})
    listed, cursor, steps = {}, b"0", 0
    while True:  # COUNT 1: several steps
        reply = run(hub.run_script(scripts.DIGEST_SCAN, [], [cursor, b"*", b"1", b"10"]))
        assert len(reply) % 4 == 2
        cursor, steps = reply[0], steps + 1
        for key, digest, expiry, tag in zip(*[iter(reply[2:])] * 4):
            assert key not in listed
            listed[key] = (digest, expiry, tag)
        if cursor == b"0":
            break
    assert steps > 1
    expected = {k: (reference_digest(STRING, v), b"-1", b"") for k, v in mine.items()}
    expected[NS + b"a"] = (expected[NS + b"a"][0], b"%d" % at, b"")
    expected[NS + b"c"] = (expected[NS + b"c"][0], b"-1", b"%d" % stamp)
    expected[NS + b"h"] = (b"Bhash", b"-1", b"")  # more than 10 items: digested in chunks
    expected[b"other:x"] = (reference_digest(STRING, b"4"), b"-1", b"")
    assert listed == expected
    # as the reconcile scans: its namespace only, digest@expiry, big keys resolved
    expiries, bigs = {}, []
    digests = run(
        scan.scan_digests(store(r, hub=True, big_items=10), NAMES, expiries, on_big=lambda k, t: bigs.append((k, t)))
    )
    assert digests == {
        k: d + (b"@" + e if e != b"-1" else b"")
        for k, (d, e, _) in expected.items()
        if k.startswith(NS) and d != b"Bhash"
    } | {NS + b"h": reference_digest(HASH, {b"f%d" % i: b"v" for i in range(20)})}
    assert expiries == {NS + b"a": at} and bigs == [(NS + b"h", HASH)]


def test_key_scan_lists_keys_never_redisrepls_own(r):
    mine = own_and_foreign_keys(r)
    listed, cursor = [], b"0"
    while True:
        reply = call(store(r), scripts.KEY_SCAN, [], [cursor, b"*", b"1"])[0]
        cursor = reply[0]
        listed += reply[1:]
        if cursor == b"0":
            break
    assert sorted(listed) == sorted(set(mine) | {b"other:x"})
    # a namespace with glob characters in it: its own keys only
    odd = Namespace(b"n*[s]?\\:")
    r.execute_command("SET", odd.prefix + b"k", b"1")
    r.execute_command("SET", b"nX[s]?\\:k", b"1")
    r.execute_command("SET", odd.reserved + b"hb", b"1")
    steps = list(run_async_gen(scan.scan_keys(store(r, odd.prefix), odd)))
    assert [k for step in steps for k in step] == [odd.prefix + b"k"]


def run_async_gen(agen):
    """The steps of an async generator that never waits."""
    while True:
        try:
            yield run(agen.__anext__())
        except StopAsyncIteration:
            return


# -- digest_keys, exists -----------------------------------------------------------------


def test_digest_keys_in_order_absent_and_big(r):
    s = store(r, big_items=10)
    at = server_us(r) // 1000 + 60_000
    hash_value = {b"f%d" % i: b"%d" % i for i in range(11)}
    put(r, NS + b"s", STRING, b"v\x00\xff", at)
    put(r, NS + b"h", HASH, hash_value, at)
    put(r, NS + b"m", SET, {b"x", b"y"})
    keys = [NS + b"s", NS + b"absent", NS + b"h", NS + b"m"]
    payload, _ = call(s, scripts.DIGEST_KEYS, keys, [b"10"])
    assert payload == [
        reference_digest(STRING, b"v\x00\xff"),
        b"%d" % at,
        b"",
        b"-2",
        b"Bhash",
        b"%d" % at,
        reference_digest(SET, {b"x", b"y"}),
        b"-1",
    ]
    # as the reconcile asks: the big one digested in chunks, with expiries
    assert run(scan.digests_of(s, keys)) == [
        reference_digest(STRING, b"v\x00\xff") + b"@%d" % at,
        None,
        reference_digest(HASH, hash_value) + b"@%d" % at,
        reference_digest(SET, {b"x", b"y"}),
    ]


def test_exists_with_the_hubs_tag(r):
    hub = store(r, hub=True)
    r.execute_command("SET", NS + b"old", b"1")
    stamp = run(hub.write([(NS + b"new", KeyState(STRING, b"1"))])).generation.stamp
    keys = [NS + b"new", NS + b"old", NS + b"absent"]
    assert call(hub, scripts.EXISTS, keys, [])[0] == [b"1", b"%d" % stamp, b"1", b"", b"0", b""]
    assert run(scan.existing(hub, keys)) == [(True, stamp), (True, None), (False, None)]
    assert run(scan.existing(store(r, b"lo:"), [NS + b"new"])) == [(True, None)]


# -- chunk ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", COLLECTIONS)
def test_chunk_reads_and_digests_a_big_key_a_chunk_at_a_time(r, kind):
    value = random_value(kind, 2345, random.Random(kind))
    key = NS + b"big"
    put(r, key, kind, value)
    s = store(r)
    cursor, items, chunks = b"0", [], 0
    while True:
        following, part, _ = run(big_keys.read_chunk(s, key, kind, cursor, 100))
        digest_cursor, digest, _ = run(big_keys.read_chunk(s, key, kind, cursor, 100, b"digest"))
        assert digest_cursor == following and len(digest) == 1
        if kind == LIST:
            assert part == value[len(items) : len(items) + 100]
            assert following == (b"%d" % (len(items) + 100) if len(items) + 100 < len(value) else b"0")
            assert digest == [sha1hex(b"".join(framed(e) for e in part))]
        elif kind == STREAM:
            entries = state.value_of(STREAM, part)
            assert list(entries) == value[chunks * 100 : chunks * 100 + 100]
            assert following == (entries[-1][0] if (chunks + 1) * 100 < len(value) else b"0")
            assert digest == [sha1hex(b"".join(framed(i) + b"".join(framed(x) for x in f) + b";" for i, f in entries))]
        elif kind == SET:
            assert digest == [xor_of(sha1hex(m) for m in part)]
        else:
            assert digest == [xor_of(sha1hex(framed(m) + v) for m, v in zip(part[0::2], part[1::2]))]
        items += part
        chunks += 1
        cursor = following
        if cursor == b"0":
            break
    assert chunks > 5
    got = state.value_of(kind, items)
    assert got == daemon_state(kind, value).value
    # a key of another type by now, or gone
    with pytest.raises(big_keys.KeyChanged, match=kind):
        run(big_keys.read_chunk(s, key, STRING if kind != STRING else HASH, b"0"))
    r.execute_command("DEL", key)
    with pytest.raises(big_keys.KeyChanged, match="none"):
        run(big_keys.read_chunk(s, key, kind, b"0"))


@pytest.mark.parametrize("size", [0, 5, PIECE, 2 * PIECE, 2 * PIECE + 12345])
def test_chunk_reads_and_digests_a_string_a_piece_at_a_time(r, size):
    value = random.Random(size).randbytes(size)
    key = NS + b"s"
    put(r, key, STRING, value)
    s = store(r)
    offset, pieces = 0, []
    while True:
        following, part, _ = run(big_keys.read_chunk(s, key, STRING, b"%d" % offset, PIECE))
        _, digest, _ = run(big_keys.read_chunk(s, key, STRING, b"%d" % offset, PIECE, b"digest"))
        assert part == [value[offset : offset + PIECE]]
        assert digest == [sha1hex(part[0]) if part[0] else b""]
        pieces.append(part[0])
        offset += PIECE
        assert following == (b"%d" % offset if offset < size else b"0")
        if following == b"0":
            break
    assert len(pieces) == max(1, -(-size // PIECE)) and b"".join(pieces) == value
    if size > PIECE:
        # the chunked digest serves strings too big to read whole, which are
        # longer than a piece: there it must equal the one-call digest
        assert run(big_keys.digest(s, key, STRING)) == reference_digest(STRING, value)


# -- get ---------------------------------------------------------------------------------


def test_get_gives_a_value_of_any_bytes_or_none(r):
    """A site's record and the shared walk's description and table are read
    by a script, whose reply (unlike a plain GET's) proves it is the call's own."""
    s = store(r, hub=True)
    key = NAMES.meta + b"walk:info"
    value = bytes(range(256)) * 3
    r.execute_command("SET", key, value)
    assert run(s.get(key)) == value
    assert run(s.get(NAMES.meta + b"site:none")) is None
    r.execute_command("RPUSH", NAMES.meta + b"list", b"x")
    with pytest.raises(RefusedError):  # not a string: WRONGTYPE
        run(s.get(NAMES.meta + b"list"))


# -- piece -------------------------------------------------------------------------------


def test_piece_appends_only_at_the_offset_the_key_holds(r):
    """A big string's pieces land in order or not at all: a piece whose
    predecessor is missing, or that comes after its copy was abandoned or
    finished (a late request), writes nothing, so it can neither leave a
    gap in a copy nor a key without expiry behind it."""
    s = store(r)
    tmp = NAMES.meta + b"tmp-piece"
    assert run(s.write_piece(tmp, 4, b"late", 60_000)) is False  # nothing before it
    assert not r.execute_command("EXISTS", tmp)
    assert run(s.write_piece(tmp, 0, b"abcd", 60_000)) is True
    assert 59_000 < r.execute_command("PTTL", tmp) <= 60_000
    assert run(s.write_piece(tmp, 8, b"gap!", 60_000)) is False  # a piece missing before it
    assert run(s.write_piece(tmp, 4, b"\x00\xffe", 90_000)) is True
    assert run(s.write_piece(tmp, 4, b"again", 90_000)) is False  # already there
    assert r.execute_command("GET", tmp) == b"abcd\x00\xffe"
    assert 89_000 < r.execute_command("PTTL", tmp) <= 90_000  # each piece renews the expiry
    r.execute_command("DEL", tmp)  # abandoned (or renamed by finish)
    assert run(s.write_piece(tmp, 7, b"late", 60_000)) is False
    assert not r.execute_command("EXISTS", tmp)


def test_piece_is_cached_again_after_noscript(r):
    s = store(r)
    r.execute_command("SCRIPT", "FLUSH")
    assert run(s.write_piece(NAMES.meta + b"tmp-noscript", 0, b"x", 60_000)) is True
    assert r.execute_command("SCRIPT", "EXISTS", scripts.PIECE.sha) == [1]


# -- finish ------------------------------------------------------------------------------


def test_finish_puts_the_copy_in_place_once(r):
    hub = store(r, hub=True)
    tmp, key = NAMES.meta + b"tmp:1", NS + b"k"
    at = server_us(r) // 1000 + 60_000
    # no temporary key (the copy expired, or was finished already): nothing done
    assert call(hub, scripts.FINISH, [tmp, key], [b"0", b""])[0] == [0]
    # in place, with its absolute expiry, or none
    put(r, tmp, LIST, [b"a"])
    r.execute_command("PEXPIRE", tmp, 300000)
    payload, g = call(hub, scripts.FINISH, [tmp, key], [b"%d" % at, b""])
    assert payload == [1] and held(r, key) == (LIST, [b"a"]) and not r.execute_command("EXISTS", tmp)
    assert r.execute_command("PEXPIRETIME", key) == at
    assert hgetall(r, NAMES.meta + b"after:" + g.id)[key] == b"%d" % g.stamp
    put(r, tmp, LIST, [b"b"])
    r.execute_command("PEXPIRE", tmp, 300000)
    assert call(hub, scripts.FINISH, [tmp, key], [b"0", b""])[0] == [1]
    assert held(r, key) == (LIST, [b"b"]) and r.execute_command("PEXPIRETIME", key) == -1
    stamp = g.stamp
    # a refill over something as fresh: dropped
    put(r, tmp, LIST, [b"old"])
    payload, _ = call(hub, scripts.FINISH, [tmp, key], [b"0", b"%d" % stamp])
    assert payload == [2] and held(r, key) == (LIST, [b"b"]) and not r.execute_command("EXISTS", tmp)


@pytest.mark.parametrize("kind", KINDS)
def test_finish_and_chunk_and_write_copy_a_big_key_between_two_servers(r, r2, kind):
    """The copier, as the router runs it: chunks read on one side, written to
    a temporary key on the other (the hub), put in place by finish."""
    count = 3 * PIECE + 5 if kind == STRING else 2345
    value = random_value(kind, count, random.Random(kind + "copy"))
    key = NS + b"big"
    at = server_us(r) // 1000 + 3_600_000
    put(r, key, kind, value, at)
    clock = Clock()
    clock.advance(server_us(r) / 1e6)
    source = Side(LOCAL, BlockingStore(r, NS, clock=clock), ExpectedEvents(clock))
    target = Side(REMOTE, BlockingStore(r2, NS, hub=True, clock=clock), ExpectedEvents(clock))
    copier = big_keys.BigCopier(clock, NAMES.meta, chunk_items=300, piece_bytes=PIECE // 3)
    header = BigState(kind, count, at / 1000)
    copy = run(copier.copy(source, target, key, header))
    assert held(r2, key) == held(r, key) and r2.execute_command("PEXPIRETIME", key) == at
    assert copy.state.digest == reference_digest(kind, value)
    assert sorted(r2.execute_command("KEYS", b"__redisrepl__*")) == sorted(
        [NAMES.meta + b"epoch", NAMES.meta + b"after:" + hgetall(r2, EPOCH)[b"id"]]
    )
    assert hgetall(r2, NAMES.meta + b"after:" + hgetall(r2, EPOCH)[b"id"]) == {key: b"%d" % copy.stamp}


# -- check -------------------------------------------------------------------------------


def test_check_sets_the_heartbeat_and_tells_the_flag(r):
    s = store(r)
    hb, flag = NAMES.reserved + b"hb", NAMES.meta + b"allow"
    before = server_us(r)
    reply = run(s.check(hb, 5000, flag))
    assert before <= reply.now <= server_us(r)
    assert reply.hist == hgetall(r, EPOCH)[b"hist"] and not reply.flagged
    assert r.execute_command("GET", hb) == b"%d" % reply.now
    assert 0 < r.execute_command("PTTL", hb) <= 5000
    r.execute_command("SET", flag, b"1")
    r.execute_command("DEL", hb)
    assert run(s.check(b"", 0, flag)).flagged and not r.execute_command("EXISTS", hb)
    payload, _ = call(s, scripts.CHECK, [], [b"", b"0", b""])
    assert payload[1] == b"0" and len(payload) == 3


# -- synced table: record, flag_evicted --------------------------------------------------------


def test_record_only_under_the_generation_it_was_copied_under(r):
    s = store(r)
    table = SyncedTable(s, NAMES)
    current = run(s.check()).generation.id
    found = [(NS + b"k%d" % i, b"d%d" % i, i) for i in range(5000)]  # 10,000 arguments
    run(table.store(found, current))
    assert hgetall(r, table.key) == {k: SyncedEntry(d, n).encode() for k, d, n in found}
    # copied before the local Redis lost its data: not recorded
    payload, _ = call(s, scripts.RECORD, [table.key], [b"another", NS + b"x", b"d#1"])
    assert payload == [0] and not r.execute_command("HEXISTS", table.key, NS + b"x")
    table.record([(NS + b"x", KeyState(STRING, b"v", 1700000000.5), 7)], b"another")
    assert not r.execute_command("HEXISTS", table.key, NS + b"x")
    table.record([(NS + b"x", KeyState(STRING, b"v", 1700000000.5), 7)])  # (no generation: always)
    assert SyncedEntry.decode(r.execute_command("HGET", table.key, NS + b"x")) == SyncedEntry(
        reference_digest(STRING, b"v") + b"@1700000000500", 7
    )


def test_forget_drops_only_records_that_still_hold_what_was_read(r):
    s = store(r)
    table = SyncedTable(s, NAMES)
    current = run(s.check()).generation.id
    run(table.store([(NS + b"a", b"d", 5), (NS + b"b", b"d", 5), (NS + b"c", b"", 6)], current))
    read = hgetall(r, table.key)
    run(table.store([(NS + b"b", b"", 9)], current))  # b's deletion recorded since it was read
    run(table.forget([key for k in (NS + b"a", NS + b"b", NS + b"c") for key in (k, read[k])]))
    assert hgetall(r, table.key) == {NS + b"b": SyncedEntry(b"", 9).encode()}


def test_flag_evicted_marks_the_entries_known(r):
    s = store(r)
    table = SyncedTable(s, NAMES)
    run(table.store([(NS + b"a", b"da@5", 3), (NS + b"b", b"db", 4)], b""))
    table.evicted(LOCAL, [NS + b"a", NS + b"absent"])
    entries = {k: SyncedEntry.decode(v) for k, v in hgetall(r, table.key).items()}
    assert entries == {NS + b"a": SyncedEntry(b"da@5", 3, LOCAL), NS + b"b": SyncedEntry(b"db", 4)}
    # evicted on the other side since: that side's mark only
    payload, _ = call(s, scripts.FLAG_EVICTED, [table.key], [b"R", NS + b"a", NS + b"b"])
    assert payload == [2]
    entries = {k: SyncedEntry.decode(v) for k, v in hgetall(r, table.key).items()}
    assert entries == {NS + b"a": SyncedEntry(b"da@5", 3, REMOTE), NS + b"b": SyncedEntry(b"db", 4, REMOTE)}


# -- the digests: Lua and Python, one definition ----------------------------------------------


def assert_digests_agree(r, kind, value, expire_ms=None, pieces=7):
    """Put the value in Redis with plain commands, then check that every
    digest of it, Lua's and Python's, is the definition's. A copy reads it
    in chunks of ``pieces`` items (of a string: ``pieces`` * 4099 bytes, so
    that they straddle the digest's pieces)."""
    key = NS + b"p"
    put(r, key, kind, value, expire_ms)
    expected = reference_digest(kind, value)
    tail = b"@%d" % expire_ms if expire_ms else b""
    mine = daemon_state(kind, value, expire_ms)
    # Python: the state as the daemon holds it
    assert mine.digest == expected and synced_digest(mine) == expected + tail
    s = store(r)
    # the state as the read script gives it, digested by the daemon
    read = run(s.read([key])).states[0]
    if kind == STRING:  # (a collection here is never big)
        big = len(value) > state.BIG_BYTES
        assert read.big == big
        assert call(s, scripts.DIGEST_KEYS, [key], [b"%d" % s.big_items, b"%d" % state.BIG_BYTES])[0][0] == (
            b"Bstring" if big else expected
        )
    if read.big:
        assert (read.kind, read.expire_at) == (kind, mine.expire_at)
    else:
        assert read == mine and read.digest == expected
    # inside Redis: in one call, as a SCAN step, and a chunk per call
    assert run(scan.digests_of(s, [key])) == [expected + tail]
    assert run(scan.scan_digests(s, NAMES)) == {key: expected + tail}
    assert run(scan.digests_of(store(r, big_items=0), [key])) == [expected + tail]
    if kind != STRING or len(value) > PIECE:
        # the chunked digest serves only keys too big to read whole: of a
        # string, one longer than the limit, so longer than a piece (a
        # shorter one would get the "S" form of the pieces, not "s")
        assert run(big_keys.digest(s, key, kind)) == expected
    # as a copy digests it: the items of chunks of any size, in Python
    digester, cursor = Digester(kind), b"0"
    step = pieces * 4099 if kind == STRING else pieces
    while True:
        cursor, items, _ = run(big_keys.read_chunk(s, key, kind, cursor, step))
        digester.add(items)
        if cursor == b"0":
            break
    assert digester.digest() == expected
    # and what the write script makes of the state read holds the same
    if not read.big:
        copy = NS + b"copy"
        assert not run(s.write([(copy, read)])).skipped
        assert held(r, copy) == held(r, key)
        assert r.execute_command("PEXPIRETIME", copy) == r.execute_command("PEXPIRETIME", key)
        assert run(scan.digests_of(s, [copy])) == [expected + tail]


ODD_BYTES = st.sampled_from(
    [
        b"",
        b"\x00",
        b"\x00\x00",
        b"a\x00b",
        b"\xff",
        b"\xc3\x28",
        b"\xed\xa0\x80",
        "é€😀".encode(),
        b"1",
        b"-0",
        b"inf",
        b"0-1",
        b";",
        b":",
        b"1:x",
    ]
)
ITEM = st.binary(max_size=24) | ODD_BYTES
SCORE = st.floats(allow_nan=False) | st.sampled_from(
    [1e300, -1e300, 0.0, -0.0, float("inf"), float("-inf"), 5e-324, 0.1, 1.1, 2.0**53 + 1, 1e15 + 0.3]
)
#: random items added to the drawn ones: around the encodings' limits (128)
#: and the digest's chunks (1000)
BULK = st.sampled_from([0, 0, 0, 2, 127, 128, 129, 999, 1000, 1001, 2345])
#: string sizes: drawn bytes, or random ones around the digest's pieces and the daemon's (lowered) limit
STRING_SIZE = st.sampled_from(
    [None, None, None, None, PIECE - 1, PIECE, PIECE + 1, 3 * PIECE + 7, LOW_BIG_BYTES, LOW_BIG_BYTES + 1]
)


@st.composite
def values(draw):
    kind = draw(st.sampled_from(KINDS))
    rng = random.Random(draw(st.integers(0, 2**32)))
    if kind == STRING:
        size = draw(STRING_SIZE)
        return kind, draw(ITEM) if size is None else rng.randbytes(size)
    drawn = draw(st.lists(ITEM, max_size=8))
    bulk = random_value(kind, draw(BULK), rng)
    if kind == LIST:
        return kind, drawn + bulk or [b""]
    if kind == SET:
        return kind, set(drawn) | bulk or {b""}
    if kind == HASH:
        return kind, {**{f: draw(ITEM) for f in drawn}, **bulk} or {b"": b""}
    if kind == ZSET:
        return kind, {**{m: draw(SCORE) for m in drawn}, **bulk} or {b"": draw(SCORE)}
    entries = [
        (b"%d-%d" % (1 + i // 2, 1 + i % 2), tuple(draw(st.lists(ITEM, min_size=1, max_size=3)) * 2))
        for i in range(len(drawn))
    ]
    return kind, entries + [(b"%d-1" % (10**6 + i), fields) for i, (_, fields) in enumerate(bulk)]


@pytest.fixture
def low_big_bytes(monkeypatch):
    """The daemon's limit of a string read whole, lowered (the stores and
    the scan pass it to the scripts)."""
    monkeypatch.setattr(state, "BIG_BYTES", LOW_BIG_BYTES)


@pytest.mark.usefixtures("low_big_bytes")
@settings(
    max_examples=30,
    deadline=None,
    database=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
)
@given(data=values(), expiry=st.none() | st.integers(1, 10**10), pieces=st.integers(1, 3000))
def test_digest_scan_digest_keys_and_chunk_digests_equal_pythons_for_every_type(r, data, expiry, pieces):
    r.execute_command("FLUSHDB")
    kind, value = data
    expire_ms = server_us(r) // 1000 + 60_000 + expiry if expiry else None
    assert_digests_agree(r, kind, value, expire_ms, pieces)


@pytest.mark.usefixtures("low_big_bytes")
@pytest.mark.parametrize(
    "kind, count",
    [
        (LIST, 999),
        (LIST, 1000),
        (LIST, 1001),
        (LIST, 3000),
        (STREAM, 1000),
        (STREAM, 2001),
        (STREAM, 0),
        (STRING, 0),
        (STRING, PIECE),
        (STRING, PIECE + 1),
        (STRING, LOW_BIG_BYTES),
        (STRING, LOW_BIG_BYTES + 1),
        (STRING, LOW_BIG_BYTES + PIECE + 3),
        (HASH, 3000),
        (SET, 129),
        (ZSET, 129),
        (ZSET, 3000),
    ],
)
def test_digest_keys_digest_scan_and_chunks_at_the_boundaries(r, kind, count):
    value = random_value(kind, count, random.Random(count))
    if kind == ZSET:
        value.update({b"neg-zero": -0.0, b"inf": float("inf"), b"-inf": float("-inf"), b"big": 1e300})
    assert_digests_agree(r, kind, value, server_us(r) // 1000 + 60_000 if count % 2 else None)


def test_how_far_a_scan_is_grows_with_the_keys_it_returned(r):
    pipe = r.pipeline(transaction=False)
    for i in range(20000):
        pipe.set(b"far:%d" % i, b"x")
    pipe.execute()
    cursor, returned, points = 0, 0, []
    while True:
        cursor, keys = r.execute_command("SCAN", cursor, "COUNT", 500)
        returned += len(keys)
        points.append((returned / 20000, scan.scanned(cursor)))
        if int(cursor) == 0:
            break
    assert points[-1] == (1.0, 1.0)
    done = [d for _, d in points]
    assert done == sorted(done)
    # keys spread evenly over the table: the share of keys returned so far
    # and the share of the keyspace walked agree within a few per cent
    assert max(abs(share - d) for share, d in points) < 0.05


@pytest.mark.parametrize("keys", [0, 1, 3, 20000])
def test_a_walk_in_ranges_lists_every_key_once_whatever_the_table(r, keys):
    pipe = r.pipeline(transaction=False)
    for i in range(keys):
        pipe.set(NS + b"%d" % i, b"x")
    for i in range(keys // 2):
        pipe.set(b"other:%d" % i, b"y")  # outside the namespace: walked, not listed
    pipe.execute()
    hub = store(r, hub=True)

    async def walk(parts):
        listed, done = [], []
        async for step in scan.scan_steps(hub, NAMES, parts=parts):
            listed += [key for key, _, _ in step]
            done.append(step.done)
        return listed, done

    for parts in (1, 2, 4, 8):
        listed, done = run(walk(parts))
        assert sorted(listed) == sorted(NS + b"%d" % i for i in range(keys)), parts
        assert done[-1] == 1.0 and done == sorted(done)
