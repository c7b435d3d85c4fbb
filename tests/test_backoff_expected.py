"""Backoff delays, and the expected-event tables that tell echoes from genuine writes."""

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock

from redisrepl.backoff import Backoff
from redisrepl.expected import ExpectedEvents
from redisrepl.state import ABSENT, HASH, STRING, KeyState

# -- Backoff ---------------------------------------------------------------------------


def test_without_jitter_delays_grow_by_the_factor_up_to_the_cap():
    backoff = Backoff(initial=0.5, maximum=30.0, factor=2.0, jitter=0)
    delays = [backoff.next_delay() for _ in range(9)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    assert backoff.failures == 9


def test_the_cap_holds_after_very_many_failures():
    backoff = Backoff(initial=1.0, maximum=60.0, factor=3.0, jitter=0)
    backoff.failures = 10_000
    assert backoff.next_delay() == 60.0


@settings(max_examples=200, deadline=None, database=None)
@given(
    seed=st.integers(0, 2**32),
    initial=st.floats(0.01, 5),
    factor=st.floats(1, 4),
    maximum=st.floats(5, 120),
    jitter=st.floats(0, 1),
)
def test_jitter_scales_each_base_delay_into_its_band(seed, initial, factor, maximum, jitter):
    backoff = Backoff(initial, maximum, factor, jitter, random=random.Random(seed))
    twin = random.Random(seed)  # the same draws, to know each one
    for n in range(12):
        base = min(maximum, initial * factor**n)
        delay = backoff.next_delay()
        assert (1 - jitter) * base - 1e-9 <= delay <= base
        assert delay == pytest.approx(base * (1 - jitter * twin.random()))


def test_jitter_spreads_the_delays():
    delays = {Backoff(jitter=0.25, random=random.Random(seed)).next_delay() for seed in range(20)}
    assert len(delays) == 20
    assert all(0.375 <= d <= 0.5 for d in delays)


def test_reset_starts_over():
    backoff = Backoff(initial=0.5, maximum=30.0, factor=2.0, jitter=0)
    for _ in range(5):
        backoff.next_delay()
    backoff.reset()
    assert backoff.failures == 0
    assert [backoff.next_delay(), backoff.next_delay()] == [0.5, 1.0]


# -- ExpectedEvents -------------------------------------------------------------------

V1 = KeyState(STRING, b"1")
V2 = KeyState(STRING, b"2")


@pytest.fixture
def clock():
    clock = Clock()
    clock.advance(1000)
    return clock


@pytest.fixture
def table(clock):
    return ExpectedEvents(clock, lifetime=30)


def test_nothing_expected_is_no_echo(table):
    assert not table.is_echo(b"k", V1)
    assert not table.is_echo(b"k", ABSENT)


def test_the_written_state_is_an_echo_until_the_lifetime_ends(table, clock):
    table.expect(b"k", V1)
    assert table.is_echo(b"k", V1)
    assert table.is_echo(b"k", V1)  # several events for one write (e.g. SET + EXPIRE)
    clock.advance(29)
    assert table.is_echo(b"k", V1)
    clock.advance(1)
    assert not table.is_echo(b"k", V1)
    assert len(table) == 0


def test_a_different_state_clears_the_expectation(table):
    table.expect(b"k", V1)
    assert not table.is_echo(b"k", V2)
    assert len(table) == 0
    assert not table.is_echo(b"k", V1)  # the old content written again is genuine too


def test_echo_compares_type_and_expiry(table, clock):
    table.expect(b"h", KeyState(HASH, ((b"f", b"v"),), 2000.0))
    assert table.is_echo(b"h", KeyState(HASH, ((b"f", b"v"),), 2000.6))
    assert not table.is_echo(b"h", KeyState(HASH, ((b"f", b"v"),), 2002.0))
    table.expect(b"s", KeyState(STRING, b"fv"))
    assert not table.is_echo(b"s", KeyState(HASH, ((b"f", b"v"),)))


def test_a_mismatch_leaves_other_keys_alone(table):
    table.expect(b"a", V1)
    table.expect(b"b", V1)
    assert not table.is_echo(b"a", V2)
    assert table.is_echo(b"b", V1)
    assert len(table) == 1


def test_expect_again_replaces_the_state_and_restarts_the_lifetime(table, clock):
    table.expect(b"k", V1)
    clock.advance(20)
    table.expect(b"k", V2)
    clock.advance(20)  # 40 s after the first, 20 s after the second
    assert table.is_echo(b"k", V2)
    assert not table.is_echo(b"k", V1)


def test_len_counts_live_entries_only(table, clock):
    table.expect(b"a", V1)
    clock.advance(10)
    table.expect(b"b", V1)
    clock.advance(10)
    table.expect(b"a", V2)  # refreshed: now younger than b
    assert len(table) == 2
    clock.advance(15)  # a: 15 s old, b: 25 s old
    assert len(table) == 2
    clock.advance(10)  # b is past its 30 s, a is not
    assert len(table) == 1
    assert table.is_echo(b"a", V2)
    clock.advance(10)
    assert len(table) == 0


def test_forget(table):
    table.expect(b"k", V1)
    table.forget(b"k")
    table.forget(b"never-expected")
    assert len(table) == 0
    assert not table.is_echo(b"k", V1)


def test_an_entry_past_its_deadline_is_gone_even_after_the_clock_stepped_back():
    # the wall clock may step back (NTP): an entry's own deadline still rules
    clock = Clock()
    clock.advance(1000)
    table = ExpectedEvents(clock, lifetime=30)
    a, b = KeyState("string", b"a"), KeyState("string", b"b")
    table.expect(b"A", a)  # deadline 1030
    clock.rightNow = 900.0  # stepped back
    table.expect(b"B", b)  # deadline 930, behind A's
    clock.rightNow = 940.0  # B is past its deadline, A (the oldest) is not
    assert table.has(b"A")
    table.forget(b"A")
    assert not table.is_echo(b"B", b) and not table.holds(b"B", b) and not table.has(b"B")


def test_events_that_never_came_leave_the_table_when_their_time_is_past():
    clock = Clock()
    table = ExpectedEvents(clock, lifetime=30)
    for i in range(100):
        table.expect_events(b"k%d" % i, [b"set"])
    clock.advance(31)
    table.expect_events(b"new", [b"set"])
    assert list(table._events) == [b"new"]  # (memory: none of the 100 kept past its time)


def test_no_events_expected_is_nothing_to_keep():
    clock = Clock()
    table = ExpectedEvents(clock, lifetime=30)
    table.expect_events(b"k", [])
    clock.advance(31)
    table.expect_events(b"j", [b"set"])  # (an empty queue once broke the purge here)
    assert table.echo_event(b"j", b"set") and not table.echo_event(b"k", b"set")


def test_expected_table_keeps_at_most_its_capacity():
    from twisted.internet.task import Clock

    from redisrepl.expected import ExpectedEvents
    from redisrepl.state import STRING, KeyState

    table = ExpectedEvents(Clock(), capacity=3)
    for i in range(5):
        table.expect(b"k%d" % i, KeyState(STRING, b"v"))
    assert len(table) == 3
    assert not table.holds(b"k0", KeyState(STRING, b"v"))
    assert table.holds(b"k4", KeyState(STRING, b"v"))
    assert not table.holds(b"k4", KeyState(STRING, b"w"))


# -- expected events (big keys) ----------------------------------------------------


def test_expected_events_are_echoes_once_each_in_any_order(table):
    table.expect_events(b"k", [b"rename_to", b"persist"])
    assert not table.echo_event(b"k", b"hset")  # somebody else's: genuine
    assert table.echo_event(b"k", b"persist")  # Webdis may reverse them
    assert table.echo_event(b"k", b"rename_to")
    assert not table.echo_event(b"k", b"rename_to")  # each once
    assert not table.echo_event(b"other", b"rename_to")


def test_events_of_successive_copies_add_up(table):
    table.expect_events(b"k", [b"rename_to", b"persist"])
    table.expect_events(b"k", [b"rename_to", b"expire"])
    got = [table.echo_event(b"k", e) for e in (b"rename_to", b"persist", b"rename_to", b"expire", b"expire")]
    assert got == [True, True, True, True, False]


def test_expected_events_expire(table, clock):
    table.expect_events(b"k", [b"rename_to"])
    clock.advance(31)
    assert not table.echo_event(b"k", b"rename_to")


def test_withdrawn_and_forgotten_events_are_genuine(table):
    table.expect_events(b"k", [b"rename_to", b"persist"])
    table.expect_events(b"k", [b"rename_to", b"expire"])
    table.withdraw_events(b"k", 2)  # the last copy did nothing
    assert not table.echo_event(b"k", b"expire")
    assert table.echo_event(b"k", b"persist")
    table.expect_events(b"j", [b"rename_to"])
    table.forget_events()  # the stream broke: those are lost
    assert not table.echo_event(b"j", b"rename_to")
    assert not table.echo_event(b"k", b"rename_to")


def test_expected_events_stay_bounded(clock):
    table = ExpectedEvents(clock, lifetime=30, capacity=3)
    for i in range(10):
        table.expect_events(b"k%d" % i, [b"rename_to"])
    assert not table.echo_event(b"k0", b"rename_to")  # the oldest went
    assert table.echo_event(b"k9", b"rename_to")
    table.expect_events(b"a", [b"rename_to"])
    clock.advance(31)
    table.expect_events(b"b", [b"rename_to"])  # purges those past their time
    assert list(table._events) == [b"b"]


def test_no_events_expected_where_none_are_heard(clock):
    table = ExpectedEvents(clock, events=False)  # the remote, one-way
    table.expect_events(b"k", [b"rename_to"])
    assert not table.echo_event(b"k", b"rename_to")
    assert not table._events


def test_events_of_a_write_that_may_be_refused_are_held_until_it_is_answered(table):
    table.expect_provisionally(b"k", [b"set", b"expire"])
    assert table.park(b"k", b"set") and table.park(b"k", b"hset")
    assert not table.park(b"other", b"set")  # no write of that key in flight
    # made: what was held is taken again, and its own events are echoes
    held = table.settle(b"k", applied=True)
    assert held == [b"set", b"hset"]
    assert [table.echo_event(b"k", e) for e in held] == [True, False]
    assert not table.park(b"k", b"expire")  # settled: nothing more held
    assert table.echo_event(b"k", b"expire")


def test_events_of_a_refused_write_are_withdrawn_and_the_held_ones_genuine(table):
    table.expect_events(b"k", [b"del"])  # an earlier copy's, still to come
    table.expect_provisionally(b"k", [b"set"])
    assert table.park(b"k", b"set")
    held = table.settle(b"k", applied=False)
    assert [table.echo_event(b"k", e) for e in held] == [False]  # somebody's SET
    assert table.echo_event(b"k", b"del")  # the earlier copy's still expected


def test_at_most_so_many_events_are_held_for_a_key(table):
    from redisrepl.expected import MAX_PARKED

    table.expect_provisionally(b"k", [b"set"])
    assert all(table.park(b"k", b"hset") for _ in range(MAX_PARKED))
    # past it, events go their usual way, and none can be taken for the
    # write's own (it may yet be refused): its events are withdrawn
    assert not table.park(b"k", b"set")
    assert not table.echo_event(b"k", b"set")
    assert len(table.settle(b"k", applied=False)) == MAX_PARKED
    assert not table.echo_event(b"k", b"set")


def test_nothing_is_held_where_no_events_are_heard(clock):
    table = ExpectedEvents(clock, events=False)
    table.expect_provisionally(b"k", [b"set"])
    assert not table.park(b"k", b"set") and table.settle(b"k", applied=True) == []
