"""The reconcile's walk asks the hub ahead: the next SCAN step as soon as its
cursor is known, and the existence of up to LOOKAHEAD steps of local keys
at once; what was asked and is no longer wanted is cancelled."""

from contextlib import aclosing

from twisted.internet.defer import CancelledError, Deferred

from redisrepl import scan
from redisrepl.namespace import Namespace

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
    hub.answer(0, [b"17", b"ns:a", b"d1", b"-1", b""])
    # the step with cursor 17 is under way while the first is handed out
    assert [args[0] for _, _, args, _ in hub.asked] == [b"0", b"17"]
    assert steps == [[(b"ns:a", b"d1", None)]]
    hub.answer(1, [b"0", b"ns:b", b"d2", b"1700000000000", b"42"])
    assert steps[1] == [(b"ns:b", b"d2@1700000000000", 42)]
    assert len(hub.asked) == 2 and done.called  # cursor 0: the walk is over, nothing more asked


def test_a_step_asked_ahead_and_not_wanted_is_cancelled():
    hub, steps = LaterStore(), []
    done = collect(scan.scan_steps(hub, NAMES), steps, stop_after=1)
    hub.answer(0, [b"17", b"ns:a", b"d1", b"-1", b""])
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
    hub.answer(1, [scan.start_cursor(0.375), b"ns:b1", b"d", b"-1", b""])
    hub.answer(3, [b"0", b"ns:d1", b"d", b"-1", b""])  # range 3 is done at once
    hub.answer(2, [scan.start_cursor(0.625), b"ns:c1", b"d", b"-1", b""])
    assert steps == []
    # range 0's first step runs past its end into range 1: ns:b1 again
    hub.answer(0, [b"%d" % quarter, b"ns:a1", b"d", b"-1", b"", b"ns:b1", b"d", b"-1", b""])
    assert [[key for key, _, _ in step] for step in steps] == [[b"ns:a1"], [b"ns:b1"], [b"ns:c1"], [b"ns:d1"]]
    # ranges 1 and 2 asked their next steps; 0 and 3 are done
    assert [args[0] for _, _, args, _ in hub.asked[4:]] == [scan.start_cursor(0.375), scan.start_cursor(0.625)]
    # range 2's next step ends past its end, listing a key of range 3's first step
    hub.answer(5, [past_three_quarters, b"ns:c2", b"d", b"-1", b"", b"ns:d1", b"d", b"-1", b""])
    hub.answer(4, [b"0", b"ns:b2", b"d", b"-1", b""])
    assert [[key for key, _, _ in step] for step in steps[4:]] == [[b"ns:c2"], [b"ns:b2"]]
    assert steps[-1].done == 1.0 and steps[0].done == 0.25 and done.called


def test_a_range_that_fails_first_cancels_the_others_and_fails_the_walk():
    hub, steps, failures = LaterStore(), [], []
    done = collect(scan.scan_steps(hub, NAMES, parts=4), steps)
    done.addErrback(failures.append)
    hub.answer(0, [b"2", b"ns:a", b"d", b"-1", b""])
    hub.asked[1][3].errback(RuntimeError("the hub went away"))
    assert failures and failures[0].check(RuntimeError) and steps == []
    assert all(d.called for _, _, _, d in hub.asked)  # the other ranges' first steps: cancelled
