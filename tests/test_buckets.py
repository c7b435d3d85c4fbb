"""Bucket digests, the bounded recorder, the shared walk's description,
and how the reconciler schedules checks and walks (pure, task.Clock)."""

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet import task

from redisrepl.bucket_check import CONFIRMED, WAIT
from redisrepl.buckets import BUCKETS, TABLE_BYTES, Buckets, bucket_of
from redisrepl.live import Watchers
from redisrepl.reconcile import WAITS, Outcome, Reconciler
from redisrepl.shared_walk import WalkInfo

items = st.dictionaries(st.binary(min_size=1, max_size=20), st.binary(max_size=30), max_size=40)


def table(pairs):
    t = Buckets()
    t.add_all(pairs)
    return t


@given(items, st.randoms())
def test_a_table_does_not_depend_on_the_order_keys_come_in(state, rnd):
    pairs = list(state.items())
    shuffled = pairs[:]
    rnd.shuffle(shuffled)
    assert table(pairs) == table(shuffled)
    assert table(pairs).differing(table(shuffled)) == []


@given(st.lists(st.tuples(st.binary(min_size=1, max_size=20), st.binary(max_size=30)), max_size=40))
def test_a_table_is_the_documented_sum_whether_keys_come_one_by_one_or_all_at_once(pairs):
    import hashlib
    import struct
    import zlib

    sums = [0] * BUCKETS
    for key, digest in pairs:  # the module's definition, spelled out
        bucket = zlib.crc32(key) % BUCKETS
        term = int.from_bytes(hashlib.sha1(key + b"\0" + digest).digest()[:8], "little")
        sums[bucket] = (sums[bucket] + term) % 2**64
    one_by_one = Buckets()
    for key, digest in pairs:
        one_by_one.add(key, digest)
    assert table(pairs).to_bytes() == one_by_one.to_bytes() == struct.pack(f"<{BUCKETS}Q", *sums)
    assert table(pairs).keys == one_by_one.keys == len(pairs)


@given(items, st.binary(min_size=1, max_size=20), st.binary(max_size=30))
def test_any_key_more_less_or_changed_makes_its_bucket_differ(state, key, digest):
    base = table(state.items())
    changed = dict(state)
    if changed.get(key) == digest:
        digest += b"!"
    changed[key] = digest
    assert base.differing(table(changed.items())) == [bucket_of(key)]
    without = {k: v for k, v in state.items() if k != key}
    if key in state:
        assert base.differing(table(without.items())) == [bucket_of(key)]
    # a key listed twice (SCAN may) is never taken for one listed once
    twice = table(list(state.items()) + [(key, digest)] * 2)
    once = table(list(state.items()) + [(key, digest)])
    assert twice.differing(once) == [bucket_of(key)]


def test_buckets_left_out_are_not_compared():
    a, b = table([(b"k1", b"x"), (b"k2", b"y")]), table([(b"k1", b"z"), (b"k2", b"y")])
    assert a.differing(b) == [bucket_of(b"k1")]
    assert a.differing(b, excluded={bucket_of(b"k1")}) == []


def test_a_table_travels_as_bytes():
    t = table([(b"k%d" % i, b"v") for i in range(1000)])
    data = t.to_bytes()
    assert len(data) == TABLE_BYTES == BUCKETS * 8
    assert Buckets.from_bytes(data) == t
    with pytest.raises(ValueError):
        Buckets.from_bytes(data[:-1])


def test_a_walk_description_is_read_back_or_refused():
    info = WalkInfo(b"ab12", 10, 20, b"f00d", 3)
    assert WalkInfo.decode(info.encode()) == info
    for garbage in (None, b"", b"2 ab12 10 20 f00d 3", b"1 ab12 20 10 f00d 3", b"1 a/b 10 20 g 3", b"1 ab 1 x g 3", 7):
        assert WalkInfo.decode(garbage) is None


def test_a_recorder_holds_at_most_its_limit_then_vouches_for_nothing():
    watchers = Watchers()
    recorder = watchers.watch({b"q"}, limit=3)
    watchers.touched(b"a")
    watchers.touched_all([b"b"])
    assert recorder == {b"q", b"a", b"b"} and not recorder.full
    watchers.touched_all([b"c", b"d"])
    assert recorder.full and len(recorder) == 0
    watchers.touched(b"e")
    assert len(recorder) == 0
    assert watchers.watch({b"1", b"2"}, limit=1).full


class Schedule:
    """A reconciler on a task.Clock with a scripted check and a counted run."""

    def __init__(self, answers, full_every=100.0, interval=10.0):
        self.clock = task.Clock()
        self.answers = list(answers)
        self.runs = []
        self.paced = []  # of each run: walking the hub at the pace of --walk-share?
        self.checks = 0

        async def run(reason, paced):
            self.runs.append(reason)
            self.paced.append(paced)
            return Outcome()

        outer = self

        class Check:
            off = False

            async def __call__(self):
                outer.checks += 1
                answer = outer.answers.pop(0)
                if callable(answer):  # something else happens during the check
                    answer = answer(outer.reconciler)
                return answer

            def stop(self):
                pass

        self.reconciler = Reconciler(self.clock, run, interval=interval, check=Check(), full_every=full_every)
        self.reconciler.startService()

    def tick(self, seconds):
        for _ in range(int(seconds * 10)):
            self.clock.advance(0.1)


def test_periodic_requests_are_checks_and_a_check_with_a_reason_is_followed_by_a_walk():
    s = Schedule([CONFIRMED, CONFIRMED, "the periodic check found 2 of 16384 buckets differing", CONFIRMED])
    s.reconciler.request("start-up")
    s.tick(1)
    assert s.runs == ["start-up"] and s.checks == 0
    s.tick(20)
    assert s.checks == 2 and len(s.runs) == 1
    assert s.reconciler.stats.last_end == pytest.approx(20, abs=0.5)
    s.tick(10)
    assert s.checks == 3 and s.runs[-1] == "periodic: the periodic check found 2 of 16384 buckets differing"
    s.tick(10)
    assert s.checks == 4 and len(s.runs) == 2


def test_a_request_for_another_reason_walks_even_at_a_periodic_time():
    s = Schedule([])
    s.reconciler.request("periodic")
    s.reconciler.request("local events (re)subscribed")
    s.tick(1)
    assert s.checks == 0 and s.runs == ["local events (re)subscribed, periodic"]
    assert s.paced == [False]  # a repair, at full speed


def test_only_runs_the_schedule_alone_asked_for_are_paced():
    s = Schedule(["the periodic check found 2 of 16384 buckets differing", WAIT])
    s.reconciler.request("start-up")
    s.tick(1)
    s.tick(10)  # the check found a difference: a walk, periodic
    s.reconciler.request("the queue was full")
    s.tick(1)
    s.reconciler.request("periodic")
    s.reconciler.request("the remote side's generation changed")
    s.tick(1)
    assert s.runs == [
        "start-up",
        "periodic: the periodic check found 2 of 16384 buckets differing",
        "the queue was full",
        "periodic, the remote side's generation changed",
    ]
    assert s.paced == [False, True, False, False]


def test_a_walk_a_check_asks_for_is_not_paced_if_a_side_lost_data_meanwhile():
    def losing(reconciler):
        reconciler.generation_changed("local", None)
        return "the local Redis's generation changed during the check"

    s = Schedule([losing])
    s.tick(10.5)
    assert s.runs[0] == "periodic: the local Redis's generation changed during the check"
    assert s.paced[0] is False  # a refill
    s.tick(1)
    assert s.runs[1] == "the local side's generation changed" and s.paced[1] is False


def test_waiting_for_another_sites_walk_is_bounded():
    s = Schedule([WAIT] * (WAITS + 2), interval=8.0)
    s.tick(8.3)
    assert s.checks == 1
    s.tick(2.3)  # a check that waited is tried again a quarter of an interval later
    assert s.checks == 2 and s.runs == []
    while not s.runs:
        s.tick(0.1)
    assert s.checks == WAITS and s.runs == ["periodic: no shared walk of the hub to compare with"]
    assert s.clock.seconds() < 8.3 + (WAITS - 1) * 2.3  # never a whole interval between waits


def test_a_retry_after_a_wait_is_dropped_once_a_check_or_a_run_begins():
    s = Schedule([WAIT, CONFIRMED, CONFIRMED], interval=8.0)
    s.tick(8.3)
    assert s.checks == 1  # waited: a retry is due 2 s later
    s.reconciler.request("local events (re)subscribed")
    s.tick(0.3)
    assert s.runs == ["local events (re)subscribed"]
    s.tick(7.0)  # the retry was for the wait: the run made it needless
    assert s.checks == 1
    s.tick(1.0)  # the next periodic check, on time
    assert s.checks == 2
    s.reconciler.stopService()
    s.tick(20.0)
    assert s.checks == 2 and s.clock.getDelayedCalls() == []


def test_a_full_walk_is_made_every_full_walk_interval_whatever_the_checks_say():
    s = Schedule([CONFIRMED] * 100, full_every=100.0)
    s.reconciler.request("start-up")
    s.tick(1)
    due = "periodic: the namespace's full walk is due"
    s.tick(150)  # the first is due 90 to 110 s after start-up, the next 90 to 110 s after it
    assert s.runs.count(due) == 1
    s.tick(100)
    assert s.runs.count(due) == 2
    assert s.checks == 25 - 2


def test_a_failed_check_is_retried_as_a_walk():
    clock = task.Clock()
    runs = []

    async def run(reason, paced):
        runs.append(reason)
        assert not paced  # a retry repairs
        return Outcome()

    class Failing:
        off = False

        async def __call__(self):
            raise RuntimeError("boom")

        def stop(self):
            pass

    r = Reconciler(clock, run, interval=10.0, check=Failing())
    r.startService()
    for _ in range(200):
        clock.advance(0.1)
    assert r.stats.failures >= 1 and runs and runs[0] == "retry"


# -- the check's flows, over in-memory sides ------------------------------------------------------


class Side:
    """A side in memory: keys and their digests, the shared walk's keys
    (on the hub), the hub's time, the scripts' SCAN in one step."""

    big_items = 10_000
    names = None

    def __init__(self, hub, keys=None, refuse=None, steps=1):
        self.track_writes = hub
        self.keys = dict(keys or {})
        self.meta = {}
        self.now = 1_000
        self.refuse = refuse  # (command, error) to raise
        self.epoch = None
        self.steps = steps  # SCAN steps a walk of the whole keyspace takes
        self.clock = None  # with one: each step's round trip takes ``step_seconds`` of it
        self.step_seconds = 0.0  # and the step says it ran that long on the server
        self.scans = 0  # SCAN steps asked for
        self.commands = []  # (command, reply limit)

    async def check(self):
        self.now += 1_000
        return type("Check", (), {"now": self.now})()

    async def run_script(self, script, keys, args):
        from redisrepl.scan import scanned, start_cursor

        self.scans += 1
        if self.clock is not None:
            await task.deferLater(self.clock, self.step_seconds, lambda: None)
        # every key in the first step; the cursor moves 1/steps of the keyspace a step
        position = 0.0 if args[0] == b"0" else scanned(args[0])
        after = position + 1.0 / self.steps
        out = [b"0" if after >= 1.0 else start_cursor(after), b"%d" % (self.step_seconds * 1e6)]
        for key, digest in sorted(self.keys.items()) if position == 0.0 else ():
            out += [key, digest, b"-1", b""]
        return out

    async def get(self, key, limit=None):
        self.commands.append(("GET", limit))
        if self.refuse and self.refuse[0] == "GET":
            raise self.refuse[1]
        return self.meta.get(key)

    async def command(self, *args, limit=None):
        name = args[0].upper() if isinstance(args[0], str) else args[0].decode().upper()
        self.commands.append((name, limit))
        if self.refuse and self.refuse[0] == name:
            raise self.refuse[1]
        if name == "SET":
            if "NX" in args and args[1] in self.meta:
                return None
            self.meta[args[1]] = args[2]
            return b"OK"
        if name == "RENAME":
            self.meta[args[2]] = self.meta.pop(args[1])
        if name == "DEL":
            self.meta.pop(args[1], None)
        return b"OK"

    async def put(self, args, body):
        if self.refuse and self.refuse[0] == args[0].decode():
            raise self.refuse[1]
        self.meta[args[1]] = body


class Live:
    def __init__(self):
        self.watchers = Watchers()
        self.evicted = []

    def watch(self, limit=None):
        return self.watchers.watch(set(), limit)

    def unwatch(self, watcher):
        self.watchers.unwatch(watcher)

    def evicted_keys(self, side):
        return self.evicted if side == "local" else []


class Generation:
    def __init__(self, gen_id=b"g1"):
        self.current = type("Gen", (), {"id": gen_id})()


KEYS = {b"ns:a": b"d1", b"ns:b": b"d2"}


def a_site(hub, keys=KEYS, clock=None, walk_share=0.25, local=None):
    from redisrepl.bucket_check import BucketCheck
    from redisrepl.namespace import Namespace
    from redisrepl.reconcile import ReconcileStats

    live = Live()
    check = BucketCheck(
        live,
        local or Side(False, keys),
        hub,
        Namespace(b"ns:"),
        {"local": Generation(), "remote": Generation()},
        clock or task.Clock(),
        60.0,
        ReconcileStats(),
        walk_share=walk_share,
    )
    return check, live


def run(coroutine):
    from twisted.internet.defer import Deferred

    results = []
    Deferred.fromCoroutine(coroutine).addBoth(results.append)
    assert results, "the check did not finish"
    if hasattr(results[0], "raiseException"):
        results[0].raiseException()
    return results[0]


def test_the_first_check_walks_the_hub_for_everyone_and_the_next_site_reads_it():
    hub = Side(True, KEYS)
    a, live_a = a_site(hub)
    b, _ = a_site(hub)
    assert run(b()) is CONFIRMED  # b walks: it has no recorder from before any walk
    assert run(a()) is CONFIRMED and a.stats.walks == 1  # nor has a
    for _ in range(3):
        assert run(b()) is CONFIRMED and b.stats.walks == 1  # a's walk began after b's last check
        # a's last walk began when a's recorder started: a walks again, for both
        assert run(a()) is CONFIRMED
    assert a.stats.walks == 4 and b.stats.confirmed == 4
    assert len(live_a.watchers._sets) == 1  # one recorder kept between checks


def test_a_site_never_compares_the_same_walk_twice():
    hub = Side(True, KEYS)
    a, _ = a_site(hub)
    for _ in range(3):
        assert run(a()) is CONFIRMED
    assert a.stats.walks == 3  # alone, it walks every time


def test_a_silent_difference_is_found_and_a_touched_key_is_left_out():
    hub = Side(True, KEYS)
    a, live = a_site(hub)
    b, _ = a_site(hub)
    hub.keys[b"ns:a"] = b"changed"
    assert "1 of 16384 buckets differing" in run(a())
    assert a.stats.differed == 1
    live.watchers.touched(b"ns:a")  # an event says ns:a changed
    run(b())  # b walks the hub: after a's recorder started
    assert run(a()) is CONFIRMED and a.stats.excluded == 1
    hub.keys[b"ns:b"] = b"changed"
    run(b())
    assert "2 of 16384 buckets differing" in run(a())  # ns:a is no longer left out


def test_a_check_waits_while_another_site_walks_and_keeps_its_older_recorder():
    hub = Side(True, KEYS)
    a, live = a_site(hub)
    run(a())
    hub.meta[b"__redisrepl__:{ns:}:walk:lease"] = b"someone"
    assert run(a()) is WAIT and a.stats.waited == 1
    assert len(live.watchers._sets) == 1


def test_too_many_buckets_left_out_cannot_vouch():
    from redisrepl.bucket_check import MAX_EXCLUDED

    hub = Side(True, KEYS)
    a, live = a_site(hub)
    live.evicted = [b"ns:e%d" % i for i in range(3 * MAX_EXCLUDED)]
    assert "buckets had keys changed or evicted" in run(a())
    assert a.stats.inconclusive == 1 and a.stats.confirmed == 0


def test_refusals_for_good_turn_the_check_off_and_others_only_skip_it():
    from redisrepl.errors import RefusedError

    hub = Side(True, KEYS, refuse=("SETEX", RefusedError("Webdis refused", "http_403")))
    a, live = a_site(hub)
    assert run(a()) == "the hub refused the shared walk" and a.off
    assert live.watchers._sets == []
    hub = Side(True, KEYS, refuse=("RENAME", RefusedError("OOM command not allowed", "redis_error")))
    b, live = a_site(hub)
    assert "refused a command of the shared walk" in run(b()) and not b.off
    assert b.stats.inconclusive == 1
    assert len(live.watchers._sets) == 1


def test_a_failing_check_leaves_no_watcher_behind():
    from redisrepl.errors import LinkError

    hub = Side(True, KEYS)
    a, live = a_site(hub)
    run(a())
    hub.refuse = ("GET", LinkError("the hub did not answer", "timeout"))
    for _ in range(3):
        with pytest.raises(LinkError):
            run(a())
    assert len(live.watchers._sets) == 1


def test_two_watchers_holding_the_same_keys_are_told_apart():
    watchers = Watchers()
    first, second = watchers.watch(set()), watchers.watch(set(), limit=10)
    watchers.unwatch(second)  # equal to first (both empty), but not first
    watchers.touched(b"k")
    assert first == {b"k"} and second == set()


def test_keys_of_types_not_replicated_are_left_out_of_the_tables():
    from redisrepl.merge import UNSUPPORTED

    hub = Side(True, {**KEYS, b"ns:module": UNSUPPORTED})  # the merge leaves it alone
    a, _ = a_site(hub)
    assert run(a()) is CONFIRMED


def test_a_shared_walk_is_paced_and_renews_its_lease_by_time():
    from twisted.internet.defer import Deferred

    from redisrepl.shared_walk import RENEW_EVERY

    clock = task.Clock()
    hub = Side(True, KEYS, steps=16)
    hub.clock, hub.step_seconds = clock, 10.0
    a, _ = a_site(hub, clock=clock, walk_share=0.5)
    checked = Deferred.fromCoroutine(a())
    while not checked.called:
        clock.advance(1)
    assert checked.result is CONFIRMED
    assert a._reconcile_stats.hub_seconds == 16 * 10.0
    # each step waited until the walk had taken twice the hub's time so
    # far: only the last steps in flight (one per range, four) are not
    # doubled (unpaced, the walk takes 4 x 10 s)
    assert clock.seconds() >= 2 * (16 - 4) * 10.0 + 10.0
    # steps about 20 s apart: the 60 s lease renewed by time, not only
    # every RENEW_EVERY steps
    renewals = [c for c in hub.commands if c[0] == "PEXPIRE"]
    assert len(renewals) > 16 // RENEW_EVERY


def test_a_checks_fold_of_the_local_redis_is_paced_too():
    from twisted.internet.defer import Deferred

    clock = task.Clock()
    local = Side(False, KEYS, steps=8)
    local.clock, local.step_seconds = clock, 10.0
    a, _ = a_site(Side(True, KEYS), clock=clock, walk_share=0.5, local=local)
    checked = Deferred.fromCoroutine(a())
    while not checked.called:
        clock.advance(1)
    assert checked.result is CONFIRMED
    # one range: every step but the last waits as long as it took (80 s unpaced)
    assert clock.seconds() >= 2 * (8 - 1) * 10.0 + 10.0


@pytest.mark.parametrize("side", ["local", "remote"])
def test_a_side_that_loses_data_stops_a_paced_walk_at_its_next_step(side):
    from twisted.internet.defer import Deferred

    clock = task.Clock()
    local, hub = Side(False, KEYS, steps=32), Side(True, KEYS, steps=32)
    walked = local if side == "local" else hub
    walked.clock, walked.step_seconds = clock, 1.0
    a, _ = a_site(hub, clock=clock, local=local)
    checked = Deferred.fromCoroutine(a())
    while walked.scans < 3 and not checked.called:
        clock.advance(1)
    a._epochs[side].current = type("Gen", (), {"id": b"g2"})()  # a new generation answered
    began = clock.seconds()
    while not checked.called:
        clock.advance(1)
    assert "generation changed during the check" in checked.result
    # at its next step, not after the rest of the walk (30 steps at a quarter of the time)
    assert clock.seconds() - began < 30


def test_a_walk_renews_its_lease_and_reads_are_bounded_by_their_size():
    from redisrepl.buckets import TABLE_BYTES
    from redisrepl.shared_walk import INFO_LIMIT, RENEW_EVERY

    hub = Side(True, KEYS, steps=64)
    a, _ = a_site(hub)
    b, _ = a_site(hub)
    assert run(a()) is CONFIRMED and run(b()) is CONFIRMED  # first checks: each walks
    renewals = [c for c in hub.commands if c[0] == "PEXPIRE"]
    assert renewals == [("PEXPIRE", INFO_LIMIT)] * (2 * 64 // RENEW_EVERY)
    assert run(a()) is CONFIRMED and a.stats.walks == 1  # b's walk, read
    gets = {limit for name, limit in hub.commands if name == "GET"}
    assert gets == {INFO_LIMIT, TABLE_BYTES + INFO_LIMIT}  # descriptions, then a table
