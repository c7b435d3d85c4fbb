"""The reconcile: both sides equal again after any gap, deletions kept,
lost data refilled (real Redis, Webdis, nginx and daemon)."""

import json
import random

import pytest

from redisrepl import scripts
from redisrepl.state import HASH, LIST, SET, STREAM, STRING, ZSET, KeyState, content_digest
from redisrepl.testing import eval_script
from tests.harness import key_state, meta, run_dry, run_verify, wait_until

SLOW = 30.0


def test_digests_computed_in_redis_match(lab):
    rng = random.Random(7)
    r = lab.local
    states = {}
    for i in range(60):
        key = b"dg:%d:" % i + rng.randbytes(5)
        items = [rng.randbytes(rng.randrange(0, 30)) for _ in range(rng.randrange(1, 20))]
        if i % 6 == 5:
            entries = []
            for j, item in enumerate(items):
                entry_id = r.xadd(key, {item: rng.randbytes(3), b"n": b"%d" % j})
                entries.append(entry_id)
            states[key] = KeyState(
                STREAM, tuple((e[0], tuple(x for pair in e[1].items() for x in pair)) for e in r.xrange(key))
            )
        elif i % 5 == 0:
            value = rng.randbytes(rng.randrange(0, 200))
            r.set(key, value)
            states[key] = KeyState(STRING, value)
        elif i % 5 == 1:
            fields = {
                rng.randbytes(rng.randrange(0, 9)): rng.randbytes(rng.randrange(0, 50))
                for _ in range(rng.randrange(1, 20))
            }
            r.hset(key, mapping=fields)
            states[key] = KeyState(HASH, tuple(sorted(fields.items())))
        elif i % 5 == 2:
            r.rpush(key, *items)
            states[key] = KeyState(LIST, tuple(items))
        elif i % 5 == 3:
            r.sadd(key, *items)
            states[key] = KeyState(SET, tuple(sorted(set(items))))
        else:
            scores = {m: rng.uniform(-1e6, 1e6) for m in items}
            r.zadd(key, scores)
            flat = r.zrange(key, 0, -1, withscores=True, score_cast_func=bytes)
            states[key] = KeyState(ZSET, tuple(sorted(flat)))
    reply, _ = eval_script(r, scripts.DIGEST_SCAN, [], [b"0", b"dg:*", b"1000"], b"dg:")
    assert reply[0] == b"0" and reply[1].isdigit()  # the step's time on the server, in µs
    got = dict(zip(reply[2::4], reply[3::4]))
    assert set(reply[4::4]) == {b"-1"}
    assert got == {key: content_digest(s) for key, s in states.items()}


# -- end to end -------------------------------------------------------------------


def sync_and_stop(lab, ns, keys, rc=True, extra=()):
    """Start a daemon, make ``keys`` (name -> value) equal on both sides, stop it."""
    d = lab.daemon(ns, rc=rc, extra=list(extra))
    d.wait_log("done:")  # a first reconcile has marked both sides
    for name, value in keys.items():
        lab.local.set(ns + name, value)
    for name, value in keys.items():
        wait_until(lambda: lab.remote.get(ns + name) == value.encode())
    # the synchronised state is recorded after each copy
    wait_until(lambda: lab.local.hlen(meta(ns, "synced")) >= len(keys))
    d.stop()
    lab.daemons.remove(d)


def equal_namespace(lab, ns):
    def snapshot(r):
        out = {}
        for key in r.scan_iter(match=ns + "*", count=1000):
            if b"__redisrepl__:" in key:
                continue
            out[key] = key_state(r, key)[1]
        return out

    a, b = snapshot(lab.local), snapshot(lab.remote)
    return a == b and a


def test_changes_on_both_sides_while_stopped(daemons):
    lab = daemons
    ns = "gap:"
    sync_and_stop(lab, ns, {k: "v0" for k in ("l-mod", "l-del", "r-mod", "r-del", "both")})
    lab.local.set(ns + "l-mod", "local change")
    lab.local.delete(ns + "l-del")
    lab.local.hset(ns + "l-new", "f", "local new")
    lab.remote.set(ns + "r-mod", "remote change")
    lab.remote.delete(ns + "r-del")
    lab.remote.set(ns + "r-new", "remote new")
    lab.local.set(ns + "both", "local side")
    lab.remote.set(ns + "both", "remote side")
    lab.daemon(ns, rc=True)
    state = wait_until(lambda: equal_namespace(lab, ns), SLOW, what="both sides equal")
    assert state[b"gap:l-mod"] == b"local change"
    assert state[b"gap:r-mod"] == b"remote change"
    assert state[b"gap:l-new"] == {b"f": b"local new"}
    assert state[b"gap:r-new"] == b"remote new"
    assert state[b"gap:both"] == b"remote side"  # the default winner
    assert b"gap:l-del" not in state and b"gap:r-del" not in state  # deletions stay


@pytest.mark.parametrize("flushed", ["remote", "local"])
def test_side_that_lost_its_data_is_refilled(daemons, flushed):
    lab = daemons
    ns = f"fl{flushed}:"
    sync_and_stop(lab, ns, {"a": "1", "b": "2", "c": "3"})
    getattr(lab, flushed).flushdb()
    lab.daemon(ns, rc=True)
    state = wait_until(lambda: equal_namespace(lab, ns), SLOW, what="refilled")
    assert state == {f"{ns}{k}".encode(): v for k, v in (("a", b"1"), ("b", b"2"), ("c", b"3"))}


def test_one_way_mirror_makes_the_remote_an_exact_copy(daemons):
    lab = daemons
    ns = "mir:"
    lab.local.set(ns + "a", "1")
    lab.remote.set(ns + "a", "tampered")
    lab.remote.set(ns + "extra", "remote only")
    lab.daemon(ns, rc=False, extra=["--mirror"])
    wait_until(lambda: lab.remote.get(ns + "a") == b"1", SLOW)
    wait_until(lambda: not lab.remote.exists(ns + "extra"), SLOW)


def test_one_way_leaves_alone_what_it_never_wrote(daemons):
    lab = daemons
    ns = "ow:"
    lab.local.set(ns + "a", "1")
    lab.remote.set(ns + "extra", "another site's")
    d = lab.daemon(ns, rc=False)
    d.wait_log("done:")
    wait_until(lambda: lab.remote.get(ns + "a") == b"1", SLOW)
    assert lab.remote.get(ns + "extra") == b"another site's"
    # what it wrote and then deleted is deleted, live and by a reconcile
    lab.local.delete(ns + "a")
    wait_until(lambda: not lab.remote.exists(ns + "a"))
    lab.local.set(ns + "b", "2")
    wait_until(lambda: lab.remote.get(ns + "b") == b"2")
    wait_until(lambda: lab.local.hexists(meta(ns, "synced"), ns + "b"))
    d.stop()
    lab.daemons.remove(d)
    lab.local.delete(ns + "b")  # while no daemon watches
    d = lab.daemon(ns, rc=False)
    wait_until(lambda: not lab.remote.exists(ns + "b"), SLOW)
    assert lab.remote.get(ns + "extra") == b"another site's"


def test_one_way_keep_remote_only(daemons):
    lab = daemons
    ns = "keep:"
    lab.local.set(ns + "a", "1")
    lab.remote.set(ns + "extra", "remote only")
    d = lab.daemon(ns, rc=False, extra=["--keep-remote-only"])
    d.wait_log("reconcile (")
    d.wait_log("done:")
    wait_until(lambda: lab.remote.get(ns + "a") == b"1", SLOW)
    assert lab.remote.get(ns + "extra") == b"remote only"


def test_remote_changes_during_a_stream_gap_arrive(daemons):
    lab = daemons
    ns = "sg:"
    d = lab.daemon(ns, rc=True, extra=["--heartbeat", "0.5"])
    lab.sandbox.stop_component("webdis")
    lab.remote.set(ns + "unannounced", "made while the stream was down")
    lab.remote.hset(ns + "h", "f", "v")
    lab.sandbox.start_component("webdis")
    wait_until(lambda: lab.local.get(ns + "unannounced") == b"made while the stream was down", SLOW)
    wait_until(lambda: lab.local.hgetall(ns + "h") == {b"f": b"v"}, SLOW)
    assert d.proc.poll() is None


def test_overflow_turns_into_a_reconcile(daemons):
    lab = daemons
    ns = "ovf:"
    lab.daemon(ns, rc=False, extra=["--max-backlog", "100"])
    lab.sandbox.stop_component("nginx")
    try:
        pipe = lab.local.pipeline(transaction=False)
        for i in range(1000):
            pipe.set(f"{ns}{i}", i)
        pipe.execute()
    finally:
        lab.sandbox.start_component("nginx")
    wait_until(
        lambda: lab.remote.exists(*[f"{ns}{i}" for i in range(1000)]) == 1000,
        SLOW,
        what="every key, beyond the queue's bound too",
    )


def test_periodic_reconcile_catches_flushdb(daemons):
    lab = daemons
    ns = "per:"
    d = lab.daemon(ns, rc=True, extra=["--reconcile-interval", "1"])
    lab.local.set(ns + "a", "1")
    wait_until(lambda: lab.remote.get(ns + "a") == b"1")
    d.wait_log("done:", count=2)  # a reconcile after the key was there: its state is known
    lab.remote.flushdb()  # announces nothing
    wait_until(lambda: lab.remote.get(ns + "a") == b"1", SLOW, what="refilled by a periodic reconcile")
    assert lab.local.get(ns + "a") == b"1"


def test_verify_reports_differences_and_never_writes(daemons):
    lab = daemons
    ns = "vf:"
    lab.local.set(ns + "same", "1")
    lab.remote.set(ns + "same", "1")
    lab.local.set(ns + "type", "1")
    lab.remote.hset(ns + "type", "f", "1")
    lab.local.hset(ns + "value", "f", "1")
    lab.remote.hset(ns + "value", "f", "2")
    lab.local.set(ns + "local-only", "1")
    lab.remote.set(ns + "remote-only", "1")
    lab.local.set(ns + "ttl", "1", ex=100)
    lab.remote.set(ns + "ttl", "1")
    before = (lab.local.dbsize(), lab.remote.dbsize())
    result = run_verify(lab, ns)
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert "vf:type: type differs: string locally, hash remotely" in lines
    assert "vf:value: hash value differs" in lines
    assert "vf:local-only: missing on the remote side (string on the local)" in lines
    assert "vf:remote-only: missing on the local side (string on the remote)" in lines
    assert "vf:ttl: expires only locally" in lines
    assert not any(line.startswith("vf:same") for line in lines)
    assert lines[-1] == "6 keys compared, 5 differ"
    assert (lab.local.dbsize(), lab.remote.dbsize()) == before
    # the same, as one JSON object
    result = run_verify(lab, ns, ["--json"])
    assert result.returncode == 1, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert (report["compared"], report["differ"], report["equal"]) == (6, 5, False)
    assert {"key": "vf:ttl", "what": "expires only locally"} in report["differences"]


def test_verify_agrees_after_the_daemon_reconciled(daemons):
    lab = daemons
    ns = "vg:"
    for i in range(20):
        lab.local.set(f"{ns}l{i}", i)
        lab.remote.hset(f"{ns}r{i}", "f", i)
    d = lab.daemon(ns, rc=True)
    d.wait_log("done:")
    result = wait_until(lambda: (r := run_verify(lab, ns)).returncode == 0 and r, SLOW)
    assert result.stdout.strip().endswith("40 keys compared, 0 differ: both sides are equal")


def test_key_deleted_on_both_sides_while_stopped_is_forgotten(daemons):
    lab = daemons
    ns = "both:"
    sync_and_stop(lab, ns, {"gone": "v0"})
    lab.local.delete(ns + "gone")
    lab.remote.delete(ns + "gone")
    d = lab.daemon(ns, rc=True)
    d.wait_log("done:")
    wait_until(lambda: not lab.local.hexists(meta(ns, "synced"), ns + "gone"))
    # a new key of that name is a new key, not a conflict with the old one
    lab.local.set(ns + "gone", "reborn")
    wait_until(lambda: lab.remote.get(ns + "gone") == b"reborn")


def test_collections_changed_while_stopped(daemons):
    lab = daemons
    ns = "coll:"
    sync_and_stop(lab, ns, {"anchor": "v"})
    lab.local.rpush(ns + "list", "a", "b", "a")
    lab.remote.sadd(ns + "set", "x", "y")
    lab.local.zadd(ns + "zset", {"m": 2.5})
    lab.daemon(ns, rc=True)
    state = wait_until(
        lambda: (
            equal_namespace(lab, ns)
            and lab.local.exists(ns + "set")
            and lab.remote.exists(ns + "list", ns + "zset") == 2
        ),
        SLOW,
    )
    assert lab.remote.lrange(ns + "list", 0, -1) == [b"a", b"b", b"a"]
    assert lab.local.smembers(ns + "set") == {b"x", b"y"}
    assert lab.remote.zrange(ns + "zset", 0, -1, withscores=True) == [(b"m", 2.5)]
    assert state


def test_hub_lost_its_data_and_a_live_write_came_first(daemons):
    lab = daemons
    ns = "lw:"
    sync_and_stop(lab, ns, {"a": "1", "b": "2"})
    lab.remote.flushdb()  # the hub restarted without persistence
    lab.daemon(ns, rc=True)
    lab.local.set(ns + "live", "3")  # copied before the first reconcile reads markers
    state = wait_until(lambda: equal_namespace(lab, ns) if lab.remote.exists(ns + "a") else None, SLOW)
    assert state == {b"lw:a": b"1", b"lw:b": b"2", b"lw:live": b"3"}


def test_one_way_local_lost_its_data_is_refilled_not_mirrored(daemons):
    lab = daemons
    ns = "ll:"
    # a site named by an option is known to the hub by that name, even
    # after its local Redis lost everything (and its own record with it)
    sync_and_stop(lab, ns, {"a": "1", "b": "2"}, rc=False, extra=["--site", "ll-site"])
    lab.local.flushdb()  # the local Redis lost everything
    d = lab.daemon(ns, rc=False, extra=["--site", "ll-site"])
    d.wait_log("the local side lost or rolled back data")
    wait_until(lambda: lab.local.get(ns + "a") == b"1" and lab.local.get(ns + "b") == b"2", SLOW)
    assert lab.remote.get(ns + "a") == b"1"


def test_long_runs_log_their_progress():
    from types import SimpleNamespace

    from twisted.internet.task import Clock
    from twisted.logger import capturedLogs, formatEvent

    from redisrepl.walk import PROGRESS_EVERY, progress

    clock = Clock()
    run = SimpleNamespace(fixed=0, compared=0)
    report = progress(clock, "remote", clock.seconds(), run)
    with capturedLogs() as events:
        clock.advance(2)
        report(PROGRESS_EVERY - 1)  # not yet
        run.fixed, run.compared = 12, PROGRESS_EVERY
        report(PROGRESS_EVERY)
        report(PROGRESS_EVERY + 1)  # once per step
        report(2 * PROGRESS_EVERY, 0.375)  # how far through the keyspace, when known
    assert [formatEvent(e) for e in events] == [
        f"reconcile: {PROGRESS_EVERY} keys scanned on the remote side ({PROGRESS_EVERY // 2} keys/s), "
        f"12 of {PROGRESS_EVERY} compared so far differ and are being copied",
        f"reconcile: {2 * PROGRESS_EVERY} keys scanned on the remote side, about 38% of its keyspace "
        f"({PROGRESS_EVERY} keys/s), 12 of {PROGRESS_EVERY} compared so far differ and are being copied",
    ]


# -- the reconcile on blocking stores over the lab's two Redis servers --------------------


class BlockingWorld:
    """A router and a reconcile between the lab's local and remote Redis,
    through blocking stores (``hub`` the remote store's class): each call
    finishes at once, on a clock set to the servers' time."""

    def __init__(self, lab, ns, hub=None, max_backlog=100_000):
        from twisted.internet.task import Clock

        from redisrepl.epochs import SideEpoch
        from redisrepl.expected import ExpectedEvents
        from redisrepl.namespace import Namespace
        from redisrepl.router import Router, Side
        from redisrepl.sides import LOCAL, REMOTE
        from redisrepl.synced import SyncedTable
        from redisrepl.testing import BlockingStore

        self.names = Namespace(ns)
        self.clock = Clock()
        self.clock.advance(lab.local.time()[0])
        self.epochs = {LOCAL: SideEpoch(LOCAL), REMOTE: SideEpoch(REMOTE)}
        self.local = BlockingStore(lab.local, ns, clock=self.clock, epoch=self.epochs[LOCAL])
        self.remote = (hub or BlockingStore)(lab.remote, ns, hub=True, clock=self.clock, epoch=self.epochs[REMOTE])
        self.synced = SyncedTable(self.local, self.names)
        self.router = Router(
            self.clock,
            Side(LOCAL, self.local, ExpectedEvents(self.clock)),
            Side(REMOTE, self.remote, ExpectedEvents(self.clock)),
            ns,
            synced=self.synced,
            max_backlog=max_backlog,
        )

    def reconcile(self, stats=None, max_delete=None):
        """One run, then what it asked of the router; returns its stats and
        its outcome."""
        from twisted.internet.defer import Deferred

        from redisrepl.comparison import Comparison
        from redisrepl.merge import DeleteLimit
        from redisrepl.reconcile import ReconcileStats

        stats = stats or ReconcileStats()
        comparison = Comparison(
            self.router,
            self.local,
            self.remote,
            self.synced,
            self.epochs,
            self.names,
            self.clock,
            stats,
            two_way=True,
            max_delete=max_delete or DeleteLimit(),
        )
        done = Deferred.fromCoroutine(comparison.run("test"))
        for _ in range(100):  # (a refill run waits for its copies)
            self.clock.advance(0.1)  # the router copies what the run asked for
            if done.called:
                return stats, done.result
        raise AssertionError("the run did not end")


# -- pace ---------------------------------------------------------------------------------


def test_a_periodic_run_walks_the_hub_at_its_pace_and_a_repair_at_full_speed(lab):
    """--walk-share: the hub's digest steps of a periodic run wait for the
    share; a run for any other reason does not wait, and both count the
    hub's time they took."""
    import types

    import redis

    # in a database of their own: a keyspace table grown for 20,000 keys
    # would make other tests' walks take more steps, even once emptied
    far = types.SimpleNamespace(
        **{
            side: redis.Redis(port=getattr(lab, side).connection_pool.connection_kwargs["port"], db=9)
            for side in ("local", "remote")
        }
    )
    ns = b"paced:"
    for side in (far.local, far.remote):
        side.mset({ns + b"%d" % i: b"v" for i in range(20_000)})
    try:
        _paced_runs(far, ns)
    finally:
        for side in (far.local, far.remote):
            side.flushdb()
            side.close()


def _paced_runs(lab, ns):
    from twisted.internet.defer import Deferred

    from redisrepl.comparison import Comparison
    from redisrepl.reconcile import ReconcileStats
    from redisrepl.testing import BlockingStore

    class FarHub(BlockingStore):
        async def call(self, script, keys, args, limit=None):
            if script is scripts.DIGEST_SCAN:
                world.clock.advance(0.05)  # each step's round trip, as the daemon sees it
            return await super().call(script, keys, args, limit)

    world = BlockingWorld(lab, ns, hub=FarHub)
    stats = ReconcileStats()
    comparison = Comparison(
        world.router,
        world.local,
        world.remote,
        world.synced,
        world.epochs,
        world.names,
        world.clock,
        stats,
        two_way=True,
        walk_share=0.01,
    )
    repair = Deferred.fromCoroutine(comparison.run("the remote side's generation changed"))
    assert repair.called, "a repair waited"
    repaired = stats.hub_seconds
    assert 0 < repaired < 0.05 * 40  # the hub's own time, under the round trips
    periodic = Deferred.fromCoroutine(comparison.run("periodic: the namespace's full walk is due", paced=True))
    assert not periodic.called  # its second steps wait for the pace
    began, waits = world.clock.seconds(), 0
    while not periodic.called:
        world.clock.advance(0.1)
        waits += 1
        assert waits < 100_000
    assert periodic.result.again == ()
    spent = stats.hub_seconds - repaired
    # the walk took at least what a 1 % share of the hub allows (its first
    # steps, one per range, go at once)
    assert world.clock.seconds() - began >= 0.5 * spent / 0.01
    # the hub loses data (its epoch): the next run is a refill, never paced,
    # even one the schedule alone asked for
    lab.remote.delete(world.names.meta + b"epoch")
    refill = Deferred.fromCoroutine(comparison.run("periodic: the namespace's full walk is due", paced=True))
    assert refill.called, "a refill waited"
    # at most one walk at full speed per full_speed_every: another repair
    # that soon is paced (a flapping link cannot keep the hub busy)
    comparison.full_speed_every = 3600
    first = Deferred.fromCoroutine(comparison.run("remote events (re)subscribed"))
    assert first.called
    again = Deferred.fromCoroutine(comparison.run("remote events (re)subscribed"))
    assert not again.called
    while not again.called:
        world.clock.advance(0.1)
    world.clock.advance(3600)
    assert Deferred.fromCoroutine(comparison.run("remote events (re)subscribed")).called  # an interval later


# -- a hub that lists keys outside the namespace ----------------------------------


def test_keys_a_hub_lists_outside_the_namespace_are_refused(lab):
    """A hub is trusted to be the hub, not to reach outside the namespace:
    keys its digest scan lists outside it are neither deleted nor written
    here, by the reconcile or by verify."""
    from redisrepl.scan import scan_digests
    from redisrepl.testing import BlockingStore, run

    ns = b"hostile:"
    lab.local.set(b"other:victim", b"mine")
    lab.local.set(ns + b"a", b"1")
    lab.remote.set(ns + b"b", b"2")

    scans = []

    class HostileHub(BlockingStore):
        async def call(self, script, keys, args, limit=None):
            payload, generation = await super().call(script, keys, args, limit)
            if script is scripts.DIGEST_SCAN:
                scans.append(args)
                payload = payload + [
                    b"other:victim",
                    b"0" * 40,
                    b"-1",
                    b"",
                    b"other:planted",
                    b"1" * 40,
                    b"-1",
                    b"",
                    ns + b"__redisrepl__:heartbeat:x",
                    b"2" * 40,
                    b"-1",
                    b"",
                ]
            return payload, generation

    world = BlockingWorld(lab, ns, hub=HostileHub)
    # every step of the walk (one per range of the hub's keyspace) listed three
    assert world.reconcile()[0].refused_keys == 3 * len(scans) and len(scans) >= 1
    assert lab.local.get(b"other:victim") == b"mine"
    assert not lab.local.exists(b"other:planted") and not lab.remote.exists(b"other:planted")
    assert lab.local.get(ns + b"b") == b"2" and lab.remote.get(ns + b"a") == b"1"
    refused = []
    digests = run(scan_digests(world.remote, world.names, refused=lambda side, key: refused.append(key)))
    assert set(digests) == {ns + b"a", ns + b"b"}
    assert sorted(refused) == [ns + b"__redisrepl__:heartbeat:x", b"other:planted", b"other:victim"]


# -- a stream reopened while a run looks -------------------------------------------


def reopening_world(lab, ns, **kw):
    """A BlockingWorld whose hub stream is subscribed again during the next
    run's walk each time an item is put in the list returned with it."""
    from redisrepl.sides import REMOTE
    from redisrepl.testing import BlockingStore

    reopen = []

    class ReopeningHub(BlockingStore):
        async def call(self, script, keys, args, limit=None):
            if script is scripts.DIGEST_SCAN and reopen:
                reopen.pop()
                world.router.subscribed(REMOTE)  # the stream came back while the run walks
            return await super().call(script, keys, args, limit)

    world = BlockingWorld(lab, ns, hub=ReopeningHub, **kw)
    return world, reopen


def test_a_run_during_which_a_stream_was_reopened_deletes_nothing(lab):
    """Events are lost while a stream is reopened: a change the run missed
    (another site's refill, say) may be what it takes for a deletion, so a
    run during which a source was subscribed again makes none; the next
    run does."""
    ns = b"reopen:"
    world, reopen = reopening_world(lab, ns)
    reconcile = world.reconcile

    for key in (b"a", b"b"):
        lab.local.set(ns + key, b"1")
    reconcile()  # copied to the hub and recorded as synchronised
    reconcile()  # both sides confirmed
    assert lab.remote.get(ns + b"b") == b"1"
    lab.remote.delete(ns + b"b")  # deleted on the hub, its event missed
    reopen.append(True)
    reconcile()
    assert lab.local.get(ns + b"b") == b"1"  # held back: the run may have missed a refill
    reconcile()
    assert not lab.local.exists(ns + b"b")  # the next run deletes it
    assert lab.local.get(ns + b"a") == b"1" and lab.remote.get(ns + b"a") == b"1"


@pytest.mark.parametrize("held_by", ["a reopened stream", "the guard", "the backlog", "the guard, past the backlog"])
def test_a_refill_run_that_did_not_make_every_lost_deletion_confirms_nothing(lab, held_by):
    """The hub goes back to before some deletions; the refill run that
    would delete the keys again does not make them all (a stream was
    reopened while it looked, the deletion guard tripped, or there are more
    than --max-backlog). It does not confirm the hub's new generation:
    confirmed, the next run would take those keys for new ones and bring
    them back here. The next run is a refill run again and makes them (once
    the guard lets it)."""
    from redisrepl.merge import DeleteLimit
    from redisrepl.sides import REMOTE

    ns = b"heldrefill:"
    world, reopen = reopening_world(lab, ns, max_backlog=2 if "backlog" in held_by else 100_000)
    deleted = [ns + b"b%d" % i for i in range(4)]
    for key in [ns + b"a", *deleted]:
        lab.local.set(key, b"1")
    world.reconcile()
    world.reconcile()  # both sides confirmed
    lab.local.delete(*deleted)
    for _ in range(2):  # (with a backlog of 2, in two runs)
        world.reconcile()  # the deletions cross, recorded as tombstones
    assert not lab.remote.exists(*deleted)
    # the hub goes back to before them: its data and its epoch as then
    lab.remote.delete(world.names.meta + b"epoch")
    for key in deleted:
        lab.remote.set(key, b"1")
    guard = DeleteLimit(count=0) if "guard" in held_by else None
    allow = world.names.allow_key
    if held_by == "a reopened stream":
        reopen.append(True)
        lab.local.set(allow, b"1")  # let through, by an operator: kept until the deletions are made
    held = []
    for _ in range(3 if guard else 1):
        held.append(world.reconcile(max_delete=guard)[1])
        assert lab.remote.exists(*deleted) >= 2 and not lab.local.exists(*deleted)  # not all made, none brought back
    assert lab.local.exists(allow) == (held_by == "a reopened stream")
    if guard and "backlog" in held_by:
        # let through: the key is kept for the runs that make them all
        lab.local.set(allow, b"1")
        held.append(world.reconcile(max_delete=guard)[1])
        assert lab.remote.exists(*deleted) == 2 and lab.local.exists(allow)
        world.reconcile(max_delete=guard)
        assert not lab.local.exists(allow)
    for _ in range(2):
        world.reconcile()
        assert not lab.remote.exists(*deleted) and not lab.local.exists(*deleted)
    assert lab.local.get(ns + b"a") == lab.remote.get(ns + b"a") == b"1"
    assert world.epochs[REMOTE].confirmed == world.epochs[REMOTE].current.id
    assert not lab.local.exists(allow)
    # held back: no run at once (it would hold them again); past the
    # backlog, once not held back (the last): the next at once
    expected = [False] * len(held)
    expected[-1] = "backlog" in held_by
    assert [bool(outcome.again) for outcome in held] == expected


def snapshot(r, ns):
    """Every key of the namespace and of redisrepl's records of it, dumped."""
    return {key: (r.dump(key), r.pttl(key) > 0) for key in r.scan_iter(match=f"*{ns}*", count=1000)}


def copied_by_a_daemon(lab, ns, names):
    """A two-way daemon that copied ``names`` (set to "1" here) to the hub."""
    d = lab.daemon(ns, rc=True)
    for name in names:
        lab.local.set(ns + name, "1")
    wait_until(lambda: all(lab.remote.get(ns + name) == b"1" for name in names))
    return d


def test_dry_run_says_what_the_reconcile_then_does_and_writes_nothing(daemons):
    lab = daemons
    ns = "dry:"
    copied_by_a_daemon(lab, ns, "abcde").stop()  # its records of what it copied are written as it exits
    lab.local.set(ns + "a", "2")  # edited here while the daemon is away
    lab.remote.set(ns + "b", "3")  # edited on the hub
    lab.local.delete(ns + "c")  # deleted here
    lab.remote.delete(ns + "d")  # deleted on the hub
    lab.local.set(ns + "new-here", "4")
    lab.remote.set(ns + "new-there", "5")
    before = (snapshot(lab.local, ns), snapshot(lab.remote, ns))
    result = run_dry(lab, ns)
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert sorted(lines[:-1]) == [
        "dry:a: copy to the remote side (from the local side)",
        "dry:b: copy to the local side (from the remote side)",
        "dry:c: delete on the remote side",
        "dry:d: delete on the local side",
        "dry:new-here: copy to the remote side (from the local side)",
        "dry:new-there: copy to the local side (from the remote side)",
    ]
    assert lines[-1] == (
        "7 keys compared: a reconcile would copy 2 keys to the remote side and 2 to the local side, "
        "delete 1 on the remote side and 1 on the local side"
    )
    # the guard: past --max-delete, the deletions are held back, the copies made
    held = run_dry(lab, ns, ["--max-delete", "0", "--json"])
    assert held.returncode == 1, held.stdout + held.stderr
    report = json.loads(held.stdout)
    assert (report["copy"], report["delete"]) == ({"local": 2, "remote": 2}, {"local": 1, "remote": 1})
    assert report["held_back"] == {"local": True, "remote": True}
    assert {"key": "dry:c", "action": "delete", "on": "remote", "refill": False, "held_back": True} in report["keys"]
    assert (snapshot(lab.local, ns), snapshot(lab.remote, ns)) == before  # nothing written, records included
    # the daemon's reconcile then does what the dry run said
    lab.daemon(ns, rc=True).wait_log("done:")
    wait_until(lambda: lab.remote.get(ns + "a") == b"2" and lab.local.get(ns + "b") == b"3", SLOW)
    wait_until(lambda: not lab.remote.exists(ns + "c") and not lab.local.exists(ns + "d"), SLOW)
    wait_until(lambda: lab.remote.get(ns + "new-here") == b"4" and lab.local.get(ns + "new-there") == b"5", SLOW)
    assert lab.local.get(ns + "e") == lab.remote.get(ns + "e") == b"1"
    again = wait_until(lambda: (r := run_dry(lab, ns)).returncode == 0 and r, SLOW)
    assert again.stdout.splitlines()[-1].endswith("delete 0 on the remote side and 0 on the local side: nothing to do")


def test_dry_run_after_the_hub_lost_its_data_refills_and_deletes_nothing(daemons):
    lab = daemons
    ns = "dryw:"
    d = copied_by_a_daemon(lab, ns, "abc")
    d.wait_log("done:")  # a reconcile confirmed the hub's generation
    d.stop()
    for key in lab.remote.scan_iter(match=f"*{ns}*"):
        lab.remote.delete(key)  # the hub lost everything of the namespace, its records too
    lab.remote.set(ns + "new-there", "2")  # and was written to since
    before = (snapshot(lab.local, ns), snapshot(lab.remote, ns))
    result = run_dry(lab, ns)
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert sorted(lines[:4]) == [
        *(f"dryw:{name}: refill the remote side (from the local side)" for name in "abc"),
        "dryw:new-there: copy to the local side (from the remote side)",
    ]
    assert "the remote side lost or rolled back data" in lines[4] and "deleting nothing" in lines[4]
    assert not any("delete on" in line for line in lines), lines
    assert (snapshot(lab.local, ns), snapshot(lab.remote, ns)) == before
    lab.daemon(ns, rc=True)
    wait_until(lambda: all(lab.remote.get(ns + name) == b"1" for name in "abc"), SLOW)
    wait_until(lambda: lab.local.get(ns + "new-there") == b"2", SLOW)


def test_forgetting_stale_records_asks_the_hub_only_about_keys_gone_here(lab):
    from redisrepl.testing import BlockingStore, run

    ns = b"stale:"
    asked = []

    class CountingHub(BlockingStore):
        async def call(self, script, keys, args, limit=None):
            if script is scripts.EXISTS:
                asked.extend(keys)
            return await super().call(script, keys, args, limit)

    for i in range(5):
        lab.local.set(ns + b"%d" % i, b"v")
        lab.remote.set(ns + b"%d" % i, b"v")
    world = BlockingWorld(lab, ns, hub=CountingHub)
    world.reconcile()  # the five are recorded as synchronised
    lab.local.delete(ns + b"0")
    lab.remote.delete(ns + b"0")  # gone on both sides while nobody looked
    asked.clear()
    world.reconcile()
    # the local phase asks about the four keys here, once each; forgetting
    # stale records asks about the one key gone here, not the four again
    assert sorted(asked) == [ns + b"%d" % i for i in range(5)]
    assert run(world.synced.get([ns + b"0", ns + b"1"]))[0] is None
    assert run(world.synced.get([ns + b"1"]))[0] is not None


def test_a_record_made_while_stale_ones_are_forgotten_stays(lab):
    """A key absent on both sides has its record dropped, unless a record
    of it was made since it was read (the tombstone of its deletion, copied
    meanwhile): that one is newer than what was judged."""
    from redisrepl.testing import BlockingStore

    ns = b"forget:"
    key = ns + b"k"
    newer = []

    class RecordingHub(BlockingStore):
        async def call(self, script, keys, args, limit=None):
            if script is scripts.EXISTS and key in keys and newer:
                lab.local.hset(world.synced.key, key, newer.pop())  # the live path's record lands
            return await super().call(script, keys, args, limit)

    world = BlockingWorld(lab, ns, hub=RecordingHub)
    lab.local.set(key, b"v")
    world.reconcile()
    world.reconcile()
    read = lab.local.hget(world.synced.key, key)
    assert read is not None and not read.startswith(b"#")
    lab.local.delete(key)
    lab.remote.delete(key)  # deleted on both sides while nobody looked
    tombstone = b"#%d" % (lab.remote.time()[0] * 1_000_000)
    newer.append(tombstone)
    world.reconcile()
    assert lab.local.hget(world.synced.key, key) == tombstone
    world.reconcile()  # (no newer record: the tombstone is kept for the window, as any)
    assert lab.local.hget(world.synced.key, key) == tombstone


def test_what_becomes_of_the_record_of_a_key_absent_on_both_sides():
    import types

    from redisrepl.comparison import _absent_record
    from redisrepl.live import Watched
    from redisrepl.merge import Mode
    from redisrepl.synced import SyncedEntry

    def fate(entry, mode, watcher=(), events_lost=False, evicted=False, oldest=1000):
        watched = Watched(watcher)
        watched.events_lost = events_lost
        live = types.SimpleNamespace(was_evicted=lambda side, key: evicted)
        return _absent_record(types.SimpleNamespace(mode=mode, watcher=watched, live=live), b"k", entry, oldest)

    normal = Mode(two_way=True)
    lost = Mode(two_way=True, hub_lost=True, windows=((100, 5000),), recovery_start=5000)
    # a record of a key deleted on both sides: dropped; a tombstone kept for its window
    assert fate(SyncedEntry(b"d", 2000), normal) == 0
    assert fate(SyncedEntry(b"", 2000), normal) is None and fate(SyncedEntry(b"", 900), normal) == 0
    # ... and, older, while the hub's recovery window is open
    assert fate(SyncedEntry(b"", 900), Mode(two_way=True, recovery_start=5000)) is None
    # the hub lost the key, deleted here since: a tombstone just after what it lost
    assert fate(SyncedEntry(b"d", 2000), lost) == 2001
    assert fate(SyncedEntry(b"d", 50), lost) == 0  # the hub kept that state: deleted there too
    for unsure in ({"watcher": [b"k"]}, {"events_lost": True}, {"evicted": True}):
        assert fate(SyncedEntry(b"d", 2000), lost, **unsure) == 0
    assert fate(SyncedEntry(b"d", 2000, "local"), lost) == 0  # evicted, as its record says
    assert fate(SyncedEntry(b"d", 0), lost) == 0  # a stamp unknown
