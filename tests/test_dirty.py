"""The queue of dirty keys (redisrepl.dirty) on a task.Clock: how far behind
each direction is, through coalescing, batches, failures and parking."""

import random

import pytest
from twisted.internet.task import Clock

from redisrepl.dirty import DirtyQueue, Queued
from redisrepl.sides import LOCAL, REMOTE


def queue():
    clock = Clock()
    clock.advance(100)
    return clock, DirtyQueue(clock, lambda: None)


def test_nothing_waiting_has_no_age():
    _, q = queue()
    assert q.oldest(LOCAL) is None and q.oldest(REMOTE) is None


def test_the_oldest_change_keeps_its_age_through_coalescing_and_its_batch():
    clock, q = queue()
    q.add(LOCAL, b"a")
    clock.advance(1)
    assert q.add(LOCAL, b"a") is Queued.COALESCED
    q.add(LOCAL, b"b")
    assert q.oldest(LOCAL) == 100 and q.oldest(REMOTE) is None
    source, keys = q.pick(REMOTE, 10)
    assert (source, keys) == (LOCAL, [b"a", b"b"])
    assert q.oldest(LOCAL) == 100  # in flight: not copied yet
    q.succeeded(keys)
    q.done(keys)
    assert q.oldest(LOCAL) is None


def test_a_change_during_the_copy_is_younger_and_stays():
    clock, q = queue()
    q.add(REMOTE, b"a")
    _, keys = q.pick(REMOTE, 10)
    clock.advance(5)
    q.add(REMOTE, b"a")  # changed again while its copy is under way
    q.done(keys)
    assert q.oldest(REMOTE) == 105


def test_a_failed_batch_and_a_parked_key_keep_their_age():
    clock, q = queue()
    q.add(LOCAL, b"a")
    q.add(LOCAL, b"b")
    _, keys = q.pick(REMOTE, 10)
    clock.advance(30)
    q.requeue(keys, LOCAL)  # the hub was down
    q.done(keys)
    assert q.oldest(LOCAL) == 100
    _, keys = q.pick(REMOTE, 1)
    q.park(keys[0], LOCAL)  # refused
    q.done(keys)
    assert q.oldest(LOCAL) == 100
    q.stop()


def test_changes_waiting_are_counted_per_side_until_copied():
    clock, q = queue()
    q.add(LOCAL, b"a")
    q.add(LOCAL, b"b")
    q.add(REMOTE, b"b")
    assert (q.waiting(LOCAL), q.waiting(REMOTE)) == (2, 1)
    source, keys = q.pick(LOCAL, 10)
    assert (source, keys, q.waiting(LOCAL), q.waiting(REMOTE)) == (LOCAL, [b"a", b"b"], 2, 1)  # in flight
    q.add(LOCAL, b"a")  # changed again during its copy
    assert q.waiting(LOCAL) == 3
    q.succeeded(keys)
    q.done(keys)
    assert (q.waiting(LOCAL), q.waiting(REMOTE)) == (1, 1)


def test_a_cleared_side_stops_counting():
    clock, q = queue()
    q.add(LOCAL, b"a")
    clock.advance(1)
    q.add(REMOTE, b"a")
    q.clear(b"a", LOCAL)
    assert q.oldest(LOCAL) is None and q.oldest(REMOTE) == 101


def test_a_full_queue_does_not_count_what_it_did_not_keep():
    clock = Clock()
    q = DirtyQueue(clock, lambda: None, max_backlog=1)
    q.add(LOCAL, b"a")
    q.pick(REMOTE, 1)
    q.done([b"a"])
    q.add(LOCAL, b"b")
    assert q.add(LOCAL, b"c") is Queued.FULL
    _, keys = q.pick(REMOTE, 10)
    q.done(keys)
    assert q.oldest(LOCAL) is None


@pytest.mark.parametrize("seed", range(20))
def test_the_backlog_counts_each_key_once_whatever_happens(seed):
    """The backlog is kept as it changes (a reconcile asks for it once a key):
    after any sequence of changes, picks, failures, parks and completions it
    is the number of distinct keys queued, parked or in flight."""
    rnd = random.Random(seed)
    clock = Clock()
    q = DirtyQueue(clock, lambda: None)
    keys = [b"k%d" % i for i in range(12)]
    batches = []
    for _ in range(400):
        op = rnd.random()
        if op < 0.4:
            q.add(rnd.choice((LOCAL, REMOTE)), rnd.choice(keys))
        elif op < 0.6:
            picked = q.pick(rnd.choice((LOCAL, REMOTE)), rnd.randint(1, 4))
            if picked is not None:
                batches.append(picked)
        elif op < 0.75 and batches:
            source, picked = batches.pop(rnd.randrange(len(batches)))
            fate = rnd.random()
            if fate < 0.3:
                q.requeue(picked, source)
            elif fate < 0.45:
                q.park(picked[0], source)
            else:
                q.succeeded(picked)
            q.done(picked)
        elif op < 0.85:
            q.clear(rnd.choice(keys), rnd.choice((LOCAL, REMOTE)))
        else:
            clock.advance(rnd.choice((0.5, 2.0)))  # parked keys come back
        assert q.backlog == len(set(q.snapshot())), (seed, op)
        assert q.ready() == any(key not in q.in_flight for key in q._dirty), (seed, op)
    q.stop()
