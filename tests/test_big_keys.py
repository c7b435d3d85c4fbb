"""Big keys: copied and digested in chunks, never held whole (real Redis,
Webdis, nginx and daemon). The threshold is set low (--big-key-items) so
that keys of a few thousand items take the chunked path; one test takes a
hash of 1,000,000 fields at the default threshold and bounds the daemon's
peak memory."""

import random

import pytest

from redisrepl import big_keys, scripts
from redisrepl.sandbox import free_port
from redisrepl.state import DIGEST_CHUNK, split_reply
from redisrepl.testing import BlockingStore, eval_script, run
from tests.harness import key_state, meta, run_verify, wait_until
from tests.test_replication import EventCounter
from tests.test_service import metric, scrape

NS = "big:"
THRESHOLD = 50
#: Items in a big key of the tests: several chunks, and a last one cut short.
ITEMS = 2 * DIGEST_CHUNK + 345
SLOW = 60.0
KINDS = ["hash", "list", "set", "zset", "stream"]


def fill(r, key, kind, n, seed):
    """Give ``key`` ``n`` random items of type ``kind``."""
    rng = random.Random(seed)
    pipe = r.pipeline(transaction=False)
    for start in range(0, n, 500):
        count = min(500, n - start)
        if kind == "hash":
            pipe.hset(
                key,
                mapping={
                    b"f%d:" % (start + i) + rng.randbytes(3): rng.randbytes(rng.randrange(0, 20)) for i in range(count)
                },
            )
        elif kind == "list":
            pipe.rpush(key, *[rng.randbytes(rng.randrange(0, 12)) for _ in range(count)])
        elif kind == "set":
            pipe.sadd(key, *[b"m%d:" % (start + i) + rng.randbytes(4) for i in range(count)])
        elif kind == "zset":
            pipe.zadd(key, {b"m%d" % (start + i): rng.uniform(-1e9, 1e9) for i in range(count)})
        else:
            for i in range(count):
                pipe.xadd(key, {b"i": b"%d" % (start + i), rng.randbytes(3): rng.randbytes(rng.randrange(0, 9))})
    pipe.execute()


def same_with_expiry(lab, key):
    """Both sides hold the same type, value and absolute expiry (to the ms)."""
    return key_state(lab.local, key) == key_state(lab.remote, key) and lab.local.pexpiretime(
        key
    ) == lab.remote.pexpiretime(key)


def wait_same(lab, key, timeout=SLOW):
    wait_until(lambda: same_with_expiry(lab, key), timeout, what=f"{key} equal on both sides")


def settle(lab):
    """A marker written on each side has crossed: anything written before has."""
    for writer, reader in ((lab.local, lab.remote), (lab.remote, lab.local)):
        token = random.randbytes(8).hex()
        writer.set(NS + "marker", token)
        wait_until(lambda: reader.get(NS + "marker") == token.encode(), what="marker")


def SyncStore(r, big_items=THRESHOLD, namespace=b"t:", hub=False):
    return BlockingStore(r, namespace, big_items=big_items, hub=hub)


@pytest.mark.parametrize("kind", KINDS)
def test_digests_in_chunks_inside_redis_match_the_daemons(lab, kind):
    r = lab.local
    key = f"dgc:{kind}"
    fill(r, key, kind, ITEMS, seed=kind)
    # the whole state, read at once, digested by the daemon
    reply, _ = eval_script(r, scripts.READ, [key], [b"%d" % (10 * ITEMS)], b"dgc:")
    whole = split_reply(reply, 1, 0)[0][0]
    assert whole.kind == kind and not whole.big
    # digested inside Redis in one call (below the threshold)...
    reply, _ = eval_script(r, scripts.DIGEST_SCAN, [], [b"0", key, b"10", b"%d" % (10 * ITEMS)], b"dgc:")
    assert reply[2:4] == [key.encode(), whole.digest]
    # ...and a chunk per call (above it), summed by the daemon
    reply, _ = eval_script(r, scripts.DIGEST_SCAN, [], [b"0", key, b"10", b"%d" % THRESHOLD], b"dgc:")
    assert reply[3] == b"B" + kind.encode()
    assert run(big_keys.digest(SyncStore(r), key, kind)) == whole.digest
    # a change of one item changes it
    fill(r, key, kind, 1, seed="other")
    assert run(big_keys.digest(SyncStore(r), key, kind)) != whole.digest


@pytest.fixture(scope="module")
def big(lab):
    port = free_port()
    daemon = lab.daemon(NS, rc=True, extra=["--big-key-items", str(THRESHOLD), "--metrics", str(port)])
    daemon.metrics_port = port
    yield lab, daemon
    daemon.stop()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("direction", ["local-to-remote", "remote-to-local"])
def test_big_key_crosses_in_chunks_byte_for_byte(big, kind, direction):
    lab, daemon = big
    writer, other = (lab.local, lab.remote) if direction == "local-to-remote" else (lab.remote, lab.local)
    key = f"{NS}{kind}:{direction}"
    copied = metric(scrape(daemon.metrics_port), "redisrepl_big_keys_copied_total")
    fill(writer, key, kind, ITEMS, seed=kind + direction)
    writer.pexpire(key, 3_600_000)
    wait_same(lab, key)
    assert other.pttl(key) > 0
    assert metric(scrape(daemon.metrics_port), "redisrepl_big_keys_copied_total") > copied
    # one more item on the other side crosses back, the expiry kept
    fill(other, key, kind, 1, seed=99)
    wait_same(lab, key)
    # (a sorted set's new item is member m0 again, with a new score)
    assert len(key_state(writer, key)[1]) == ITEMS + (kind != "zset")
    # and removing the expiry crosses too
    other.persist(key)
    wait_until(lambda: writer.pttl(key) == -1, what="persist crossed")
    # no temporary key is left behind (once a copy that coalesced the
    # writes above has finished)
    wait_until(
        lambda: not lab.local.keys(meta(NS, "tmp:*")) and not lab.remote.keys(meta(NS, "tmp:*")),
        what="temporary keys gone",
    )


def test_no_loop_after_a_big_copy(big):
    lab, daemon = big
    key = NS + "loop"
    counters = {"local": EventCounter(lab.local, key), "remote": EventCounter(lab.remote, key)}
    try:
        lab.local.hset(key, mapping={b"f%d" % i: b"v" for i in range(ITEMS)})  # one event
        wait_same(lab, key)
        settle(lab)
        settle(lab)
        events = {side: c.drain() for side, c in counters.items()}
        # the copy: rename_to and persist on the remote, and nothing comes back
        assert events == {"local": [b"hset"], "remote": [b"rename_to", b"persist"]}, events
    finally:
        for c in counters.values():
            c.close()


def test_changes_during_a_big_copy_are_not_lost(big):
    lab, _ = big
    key = NS + "busy"
    fill(lab.local, key, "hash", 20 * DIGEST_CHUNK, seed=6)
    for i in range(300):  # while the chunks travel
        lab.local.hset(key, b"late%d" % i, b"%d" % i)
        if i % 50 == 0:
            lab.local.hdel(key, b"late%d" % (i // 2))
    wait_same(lab, key)
    assert lab.remote.hget(key, b"late299") == b"299"


def test_big_key_becomes_small_and_big_again(big):
    lab, _ = big
    key = NS + "shrink"
    fill(lab.local, key, "list", ITEMS, seed=8)
    wait_same(lab, key)
    lab.local.ltrim(key, 0, 9)  # below the threshold: written whole
    wait_until(lambda: lab.remote.llen(key) == 10)
    wait_same(lab, key)
    lab.local.delete(key)
    lab.local.set(key, "now a string")
    wait_same(lab, key)
    fill(lab.remote, key + ":2", "set", ITEMS, seed=9)
    lab.remote.rename(key + ":2", key)  # a big set replaces the string
    wait_same(lab, key)


def test_changes_on_both_sides_during_a_big_copy(big):
    lab, _ = big
    key = NS + "both"
    lab.local.hset(key, mapping={b"f%d" % i: b"v" for i in range(30 * DIGEST_CHUNK)})
    # while its chunks travel (its temporary key exists on the remote)...
    wait_until(lambda: lab.remote.keys(meta(NS, "tmp:*")), what="a copy under way")
    lab.remote.hset(key, "remote-during-copy", "r")  # replaced by the copy's rename
    lab.local.hset(key, "local-during-copy", "l")  # newer than what is being copied
    wait_until(lambda: lab.remote.hget(key, "local-during-copy") == b"l", SLOW)
    wait_same(lab, key)
    assert lab.local.hget(key, "local-during-copy") == b"l"


def copy_sides(lab, namespace):
    """A clock at the local Redis' time and the router's two sides over the
    lab's Redis servers (the remote one stamping its writes), for driving
    the copier without a daemon."""
    from twisted.internet.task import Clock

    from redisrepl.expected import ExpectedEvents
    from redisrepl.router import LOCAL, REMOTE, Side

    clock = Clock()
    clock.advance(lab.local.time()[0])
    sides = [
        Side(name, SyncStore(r, namespace=namespace, hub=name == REMOTE), ExpectedEvents(clock))
        for name, r in ((LOCAL, lab.local), (REMOTE, lab.remote))
    ]
    return clock, sides


def test_copier_shrinks_chunks_of_big_items(lab):
    """The copier itself, against two real Redis servers, with small limits."""

    from redisrepl.state import BigState

    key = b"cp:list"
    items = [random.randbytes(300) for _ in range(120)]
    lab.local.rpush(key, *items)
    clock, sides = copy_sides(lab, b"cp:")
    copier = big_keys.BigCopier(clock, b"__redisrepl__:{cp:}:", chunk_items=50, chunk_bytes=2000)
    requests = []
    store = sides[1].store
    original = store.call

    async def counting(script, keys, args, limit=None):
        requests.append(len(args))
        return await original(script, keys, args, limit)

    store.call = counting
    result = run(copier.copy(sides[0], sides[1], key, BigState("list", len(items))))
    copied, sent = result.state, result.requests
    assert lab.remote.lrange(key, 0, -1) == items
    assert copied.digest == run(big_keys.digest(SyncStore(lab.local), key, "list"))
    assert sent == len(requests)
    assert result.sent == sum(map(len, items))  # the bytes of values written, for redisrepl_bytes_written_total
    # the first chunk has 50 items (15 KB); the next ones no more than 2 KB
    items_per_chunk = [n - 5 for n in requests[:-1]]  # (the last request puts it in place)
    assert items_per_chunk[0] == 50 and max(items_per_chunk[1:]) <= 2000 // 300
    assert sum(items_per_chunk) == len(items)
    assert lab.remote.pttl(key) == -1 and not lab.remote.keys(b"__redisrepl__:{cp:}:tmp:*")
    assert sorted(sides[1].expected._events[key], key=lambda e: e[1]) == [
        (clock.seconds() + 30, b"persist"),
        (clock.seconds() + 30, b"rename_to"),
    ]


def test_copier_lost_finish_reply_is_not_taken_as_there(lab):
    """The last script ran but its reply was lost: the state is not known to
    be there (a retry copies it again), but its echo is still recognised."""

    from redisrepl.errors import LinkError
    from redisrepl.state import BigState

    key = b"cpf:set"
    lab.local.sadd(key, *[b"m%d" % i for i in range(300)])
    clock, sides = copy_sides(lab, b"cpf:")
    store = sides[1].store
    original = store.call

    async def reply_lost(script, keys, args, limit=None):
        result = await original(script, keys, args, limit)
        if script is scripts.FINISH:
            raise LinkError("reply lost", "connection")
        return result

    store.call = reply_lost
    copier = big_keys.BigCopier(clock, b"__redisrepl__:{cpf:}:", chunk_items=100)
    coroutine = copier.copy(sides[0], sides[1], key, BigState("set", 300))
    try:
        coroutine.send(None)
        raise AssertionError("the copy did not fail")
    except LinkError:
        pass
    assert lab.remote.scard(key) == 300  # it did land
    state = BigState("set", 300, None, run(big_keys.digest(SyncStore(lab.local), key, "set")))
    assert not sides[1].expected.holds(key, state)  # not known to be there
    assert sides[1].expected.is_echo(key, state)  # but its echo is recognised


def test_copier_starts_again_when_its_temporary_key_is_gone(lab):
    """A piece of a big string refused (its temporary key expired, evicted
    or wiped mid-copy): the key is read again from scratch, and nothing of
    the copy is put in place or left behind."""

    from redisrepl.state import BigState

    key = b"cpg:str"
    value = random.randbytes(5 * 1024 + 17)
    lab.local.set(key, value)
    clock, sides = copy_sides(lab, b"cpg:")
    store = sides[1].store
    original = store.write_piece
    temporaries = []

    async def wiped_midway(temporary, offset, data, lifetime_ms):
        temporaries.append(temporary)
        if offset >= 2048:
            lab.remote.delete(temporary)
        return await original(temporary, offset, data, lifetime_ms)

    store.write_piece = wiped_midway
    copier = big_keys.BigCopier(clock, b"__redisrepl__:{cpg:}:", piece_bytes=1024)
    with pytest.raises(big_keys.KeyChanged):
        run(copier.copy(sides[0], sides[1], key, BigState("string", len(value))))
    assert len(temporaries) == 3  # no piece after the refused one
    assert not lab.remote.exists(key) and not lab.remote.exists(temporaries[0])
    assert not sides[1].expected.has(key)


def test_big_key_of_big_items_crosses(big):
    lab, _ = big
    key = NS + "heavy"
    items = [random.randbytes(64 * 1024) for _ in range(3 * THRESHOLD)]  # 9.6 MB
    lab.local.rpush(key, *items)
    wait_until(lambda: lab.remote.llen(key) == len(items), SLOW)
    assert lab.remote.lrange(key, 0, -1) == items


def test_reconcile_compares_big_keys_in_chunks(daemons):
    lab = daemons
    ns = "bigr:"
    extra = ["--big-key-items", str(THRESHOLD)]
    for name, kind in (("changed", "hash"), ("deleted", "list"), ("same", "zset"), ("stream", "stream")):
        fill(lab.local, ns + name, kind, ITEMS, seed=len(name))
    d = lab.daemon(ns, rc=True, extra=extra)
    for name in ("changed", "deleted", "same", "stream"):
        wait_same(lab, ns + name)
    wait_until(lambda: lab.local.hlen(meta(ns, "synced")) >= 4, what="synced digests recorded")
    d.stop()
    lab.daemons.remove(d)
    # while the daemon is stopped: one field changes on the remote, a big
    # list is deleted locally, a stream entry is added locally
    lab.remote.hset(ns + "changed", "f0", "remote")
    lab.local.delete(ns + "deleted")
    lab.local.xadd(ns + "stream", {"late": "entry"})
    d = lab.daemon(ns, rc=True, extra=extra)
    d.wait_log("done:", SLOW)
    assert "digesting the big hash" in d.log()
    for name in ("changed", "deleted", "same", "stream"):
        wait_same(lab, ns + name)
    assert lab.local.hget(ns + "changed", "f0") == b"remote"
    assert not lab.remote.exists(ns + "deleted")  # deleted stays deleted
    assert lab.remote.xrevrange(ns + "stream", count=1)[0][1] == {b"late": b"entry"}
    result = run_verify(lab, ns, extra)
    assert result.returncode == 0, result.stdout + result.stderr
    # verify compares big keys too: a difference in one field is seen
    d.stop()
    lab.daemons.remove(d)
    lab.remote.zincrby(ns + "same", 1, b"m7")
    result = run_verify(lab, ns, extra)
    assert result.returncode == 1 and "bigr:same: sorted set value differs" in result.stdout, result.stdout


def peak_rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


#: The documented bound on the daemon's peak RSS while it copies and
#: reconciles a hash of 1,000,000 fields (README, "Big keys").
HUGE_RSS_MB = 80


def test_million_field_hash_is_reconciled_in_bounded_memory(daemons):
    lab = daemons
    ns = "huge:"
    key = ns + "h"
    fields = 1_000_000
    for start in range(0, fields, 100_000):  # built inside Redis, 100,000 fields a call
        lab.local.eval(
            "for i = ARGV[1], ARGV[2] do redis.call('HSET', KEYS[1], 'field:' .. i, 'value:' .. i) end",
            1,
            key,
            start,
            start + 99_999,
        )
    assert lab.local.hlen(key) == fields
    # the start-up reconcile digests it in chunks, finds it missing remotely
    # and copies it in chunks
    d = lab.daemon(ns, rc=True)
    wait_until(lambda: lab.remote.hlen(key) == fields, 120, what="1,000,000 fields copied")
    d.wait_log("done:", SLOW)
    rss = [peak_rss_mb(d.proc.pid)]
    d.stop()
    lab.daemons.remove(d)
    # one field changed on the remote while stopped: both sides are digested
    # in chunks and that side's state crosses
    lab.remote.hset(key, "field:123456", "changed remotely")
    d = lab.daemon(ns, rc=True)
    wait_until(
        lambda: lab.local.hget(key, "field:123456") == b"changed remotely", 120, what="the remote change reconciled"
    )
    rss.append(peak_rss_mb(d.proc.pid))
    assert lab.local.hlen(key) == fields
    assert max(rss) < HUGE_RSS_MB, rss
    result = run_verify(lab, ns)
    assert result.returncode == 0, result.stdout + result.stderr
