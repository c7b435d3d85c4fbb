"""The reconcile's walk asks the hub ahead: the next SCAN step as soon as its
cursor is known, and the existence of up to LOOKAHEAD steps of local keys
at once; what was asked and is no longer wanted is cancelled. A periodic
walk paces the hub's steps (redisrepl.pace)."""

from contextlib import aclosing

import pytest
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.task import Clock

from redisrepl import scan
from redisrepl.errors import ReplicationError
from redisrepl.namespace import Namespace
from redisrepl.pace import Pace

NAMES = Namespace(b"ns:")


class LaterStore:
    """A hub whose every script call waits for the test to answer it."""

    track_writes = True
    big_items = 1000

    def __init__(self):
        self.asked = []  # (script name, keys, args, Deferred of the reply)

    async def run_script(self, script, keys, args):
        d = Deferred()
        self.asked.append((script.name, keys, args, d))
        return await d

    def answer(self, i, reply):
        self.asked[i][3].callback(reply)


def collect(agen, into, stop_after=None):
    async def go():
        async with aclosing(agen) as steps:
            async for item in steps:
                into.append(item)
                if stop_after is not None and len(into) >= stop_after:
                    raise RuntimeError("the walk stops here")

    return Deferred.fromCoroutine(go())


def test_the_next_scan_step_is_asked_for_before_this_one_is_judged():
    hub, steps = LaterStore(), []
    done = collect(scan.scan_steps(hub, NAMES), steps)
    assert [args[0] for _, _, args, _ in hub.asked] == [b"0"]
    hub.answer(0, [b"17", b"0", b"ns:a", b"d1", b"-1", b""])
    # the step with cursor 17 is under way while the first is handed out
    assert [args[0] for _, _, args, _ in hub.asked] == [b"0", b"17"]
    assert steps == [[(b"ns:a", b"d1", None)]]
    hub.answer(1, [b"0", b"0", b"ns:b", b"d2", b"1700000000000", b"42"])
    assert steps[1] == [(b"ns:b", b"d2@1700000000000", 42)]
    assert len(hub.asked) == 2 and done.called  # cursor 0: the walk is over, nothing more asked


def test_a_step_asked_ahead_and_not_wanted_is_cancelled():
    hub, steps = LaterStore(), []
    done = collect(scan.scan_steps(hub, NAMES), steps, stop_after=1)
    hub.answer(0, [b"17", b"0", b"ns:a", b"d1", b"-1", b""])
    failures = []
    done.addErrback(failures.append)
    assert failures and failures[0].check(RuntimeError)
    ahead = hub.asked[1][3]
    assert ahead.called  # cancelled, its failure consumed
    ahead.addErrback(lambda f: f.trap(CancelledError))


def test_the_local_phase_asks_about_several_steps_at_once_and_takes_them_in_order():
    hub, out = LaterStore(), []

    async def local_steps():
        for name in b"abcdef":
            yield [b"ns:" + bytes([name])]

    done = collect(scan.existing_ahead(local_steps(), hub, 3), out)
    assert [keys for _, keys, _, _ in hub.asked] == [[b"ns:a"], [b"ns:b"], [b"ns:c"]]
    hub.answer(1, [b"1", b""])  # answers may come out of order: held until their turn
    assert out == []
    hub.answer(0, [b"0", b""])
    assert out == [([b"ns:a"], [(False, None)]), ([b"ns:b"], [(True, None)])]
    assert len(hub.asked) == 5  # two answered, three in flight again
    for i in range(2, 6):
        hub.answer(i, [b"1", b"%d" % i])
    assert [keys[0] for keys, _ in out] == [b"ns:a", b"ns:b", b"ns:c", b"ns:d", b"ns:e", b"ns:f"]
    assert out[5][1] == [(True, 5)] and done.called


def test_the_local_phase_cancels_what_it_asked_ahead_when_the_walk_stops():
    hub, out = LaterStore(), []

    async def local_steps():
        for name in b"abcd":
            yield [b"ns:" + bytes([name])]

    done = collect(scan.existing_ahead(local_steps(), hub, 3), out, stop_after=1)
    done.addErrback(lambda f: f.trap(RuntimeError))
    hub.answer(0, [b"1", b""])
    assert len(out) == 1 and done.called
    assert all(d.called for _, _, _, d in hub.asked)  # the others were cancelled


def _reversed(v):
    return int(f"{v:064b}"[::-1], 2)


def test_how_far_a_scan_is_follows_redis_reverse_binary_cursor_whatever_the_table_size():
    for bits in range(1, 11):
        mask = (1 << bits) - 1
        cursor, seen = 0, []
        while True:
            # dict.c's step: set the bits above the mask, increment the reversed cursor
            cursor = _reversed((_reversed(cursor | (~mask & (2**64 - 1))) + 1) % 2**64)
            seen.append(scan.scanned(cursor))
            if cursor == 0:
                break
        assert len(seen) == 1 << bits and seen[-1] == 1.0
        assert seen == sorted(seen) and len(set(seen)) == len(seen)
        assert abs(seen[len(seen) // 2 - 1] - 0.5) < 1e-9  # half the slots: half-way


def test_a_range_starts_where_scanned_says_it_is():
    assert scan.start_cursor(0) == b"0"
    for parts in (2, 4, 8):
        for i in range(1, parts):
            assert scan.scanned(scan.start_cursor(i / parts)) == i / parts


def test_the_hub_is_walked_in_ranges_at_once_each_key_yielded_once():
    hub, steps = LaterStore(), []
    done = collect(scan.scan_steps(hub, NAMES, parts=4), steps)
    starts = [args[0] for _, _, args, _ in hub.asked]
    assert starts == [scan.start_cursor(i / 4) for i in range(4)] == [b"0", b"2", b"1", b"3"]
    quarter = int(scan.start_cursor(0.25))  # position 1/4
    past_three_quarters = scan.start_cursor(13 / 16)
    # range 1 (1/4 to 1/2) answers first; nothing is yielded before every first step is in
    hub.answer(1, [scan.start_cursor(0.375), b"0", b"ns:b1", b"d", b"-1", b""])
    hub.answer(3, [b"0", b"0", b"ns:d1", b"d", b"-1", b""])  # range 3 is done at once
    hub.answer(2, [scan.start_cursor(0.625), b"0", b"ns:c1", b"d", b"-1", b""])
    assert steps == []
    # range 0's first step runs past its end into range 1: ns:b1 again
    hub.answer(0, [b"%d" % quarter, b"0", b"ns:a1", b"d", b"-1", b"", b"ns:b1", b"d", b"-1", b""])
    assert [[key for key, _, _ in step] for step in steps] == [[b"ns:a1"], [b"ns:b1"], [b"ns:c1"], [b"ns:d1"]]
    # ranges 1 and 2 asked their next steps; 0 and 3 are done
    assert [args[0] for _, _, args, _ in hub.asked[4:]] == [scan.start_cursor(0.375), scan.start_cursor(0.625)]
    # range 2's next step ends past its end, listing a key of range 3's first step
    hub.answer(5, [past_three_quarters, b"0", b"ns:c2", b"d", b"-1", b"", b"ns:d1", b"d", b"-1", b""])
    hub.answer(4, [b"0", b"0", b"ns:b2", b"d", b"-1", b""])
    assert [[key for key, _, _ in step] for step in steps[4:]] == [[b"ns:c2"], [b"ns:b2"]]
    assert steps[-1].done == 1.0 and steps[0].done == 0.25 and done.called


def test_a_range_that_fails_first_cancels_the_others_and_fails_the_walk():
    hub, steps, failures = LaterStore(), [], []
    done = collect(scan.scan_steps(hub, NAMES, parts=4), steps)
    done.addErrback(failures.append)
    hub.answer(0, [b"2", b"0", b"ns:a", b"d", b"-1", b""])
    hub.asked[1][3].errback(RuntimeError("the hub went away"))
    assert failures and failures[0].check(RuntimeError) and steps == []
    assert all(d.called for _, _, _, d in hub.asked)  # the other ranges' first steps: cancelled


# -- pace --------------------------------------------------------------------------


def test_a_pace_waits_until_the_steps_are_within_their_share():
    clock = Clock()
    pace = Pace(clock, 0.25)
    asked = []
    pace.then(asked.append, "first")
    assert asked == ["first"]  # nothing spent yet: at once
    clock.advance(0.1)
    pace.spent(0.1, sent=0.0)  # 0.1 s of the hub's: 0.4 s of the walk's
    pace.then(asked.append, "second")
    clock.advance(0.29)
    assert asked == ["first"]
    clock.advance(0.01)
    assert asked == ["first", "second"]
    assert pace.used == 0.1 and round(pace.waited, 6) == 0.3


def test_a_step_cannot_claim_more_than_its_round_trip():
    clock = Clock()
    pace = Pace(clock, 0.25)
    clock.advance(0.02)
    pace.spent(3600.0, sent=0.0)  # a hub claiming an hour for a step of 20 ms
    assert pace.used == 0.02
    pace.spent(-5.0, sent=0.0)  # nor less than nothing
    assert pace.used == 0.02


def test_a_share_of_one_only_measures():
    clock = Clock()
    clock.advance(1)
    pace = Pace(clock, 1.0)
    for _ in range(10):
        clock.advance(0.01)
        # four ranges' steps at once: more of the hub's time than the walk's
        pace.spent(0.04, sent=clock.seconds() - 0.05)
        assert pace.delay() == 0
    assert round(pace.used, 6) == 0.4


def test_a_share_outside_zero_to_one_is_refused():
    for share in (0, -0.5, 1.5):
        with pytest.raises(ValueError):
            Pace(Clock(), share)


def test_a_paced_walk_of_the_hub_spaces_its_steps_by_their_time_on_the_hub():
    clock = Clock()
    hub, steps = LaterStore(), []
    pace = Pace(clock, 0.5)
    done = collect(scan.scan_steps(hub, NAMES, pace=pace), steps)
    clock.advance(0.2)
    hub.answer(0, [b"17", b"200000", b"ns:a", b"d1", b"-1", b""])  # ran 0.2 s on the hub
    # 0.2 s at a share of 0.5: the next step goes 0.4 s after the walk began
    assert len(hub.asked) == 1 and steps == [[(b"ns:a", b"d1", None)]]
    clock.advance(0.19)
    assert len(hub.asked) == 1
    clock.advance(0.01)
    assert len(hub.asked) == 2
    clock.advance(0.01)
    hub.answer(1, [b"0", b"1000", b"ns:b", b"d2", b"-1", b""])  # 1 ms on the hub
    assert done.called and round(pace.used, 6) == 0.201


def test_a_paced_step_not_yet_sent_is_cancelled_with_the_walk():
    clock = Clock()
    hub, steps = LaterStore(), []
    done = collect(scan.scan_steps(hub, NAMES, pace=Pace(clock, 0.1)), steps, stop_after=1)
    clock.advance(1)
    hub.answer(0, [b"17", b"1000000", b"ns:a", b"d1", b"-1", b""])
    failures = []
    done.addErrback(failures.append)
    assert failures and failures[0].check(RuntimeError)
    assert clock.getDelayedCalls() == []  # the wait for the next step is gone
    clock.advance(100)
    assert len(hub.asked) == 1  # and it was never sent


@pytest.mark.parametrize(
    "reply",
    [
        [b"0", b"ns:a", b"d1", b"-1", b""],  # the layout before: no time
        [b"0", b"-5", b"ns:a", b"d1", b"-1", b""],
        [b"0", b"9" * 16, b"ns:a", b"d1", b"-1", b""],  # a hub's huge claim
        [b"0", b"", b"ns:a", b"d1", b"-1", b""],
        [b"0", 5, b"ns:a", b"d1", b"-1", b""],
    ],
)
def test_a_step_without_a_plausible_time_is_a_bad_reply(reply):
    hub, steps, failures = LaterStore(), [], []
    done = collect(scan.scan_steps(hub, NAMES, pace=Pace(Clock(), 0.5)), steps)
    done.addErrback(failures.append)
    hub.answer(0, reply)
    assert failures and failures[0].check(ReplicationError) and steps == []


def test_a_pace_follows_a_clock_that_steps_back():
    clock = Clock()
    clock.advance(1000)
    pace = Pace(clock, 0.5)
    clock.advance(1)
    pace.spent(1.0, sent=1000)  # 1 s of the hub's, in the walk's first second
    assert pace.delay() == 1.0
    clock.rightNow -= 3600  # the wall clock steps back an hour
    assert pace.delay() == 1.0  # not an hour more
    clock.advance(1)
    assert pace.delay() == 0.0
