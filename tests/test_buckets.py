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
        self.checks = 0

        async def run(reason):
            self.runs.append(reason)
            return Outcome()

        outer = self

        class Check:
            off = False

            async def __call__(self):
                outer.checks += 1
                return outer.answers.pop(0)

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


def test_waiting_for_another_sites_walk_is_bounded():
    s = Schedule([WAIT] * (WAITS + 2))
    s.tick(10 * (WAITS - 1) + 1)
    assert s.checks == WAITS - 1 and s.runs == []
    s.tick(10)
    assert s.checks == WAITS and s.runs == ["periodic: no shared walk of the hub to compare with"]
    s.tick(10)
    assert s.checks == WAITS + 1 and len(s.runs) == 1


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

    async def run(reason):
        runs.append(reason)
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
