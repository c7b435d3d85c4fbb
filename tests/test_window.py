"""The window of batches in flight (redisrepl.window), on a task.Clock; and
the router's use of it: a slot more while a key waits for one, given back
once unused."""

import pytest
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from redisrepl.router import LOCAL
from redisrepl.window import SHRINK_INTERVAL, Window
from tests.test_router import _Sides, s


def window(base=4, cap=8):
    return Window(Clock(), base, cap)


def test_starts_at_base_and_allows_up_to_it():
    w = window()
    assert w.size == 4
    assert w.allows(3) and not w.allows(4)


def test_grows_one_slot_at_a_time_up_to_the_cap():
    w = window(base=2, cap=4)
    assert [w.full(), w.full(), w.full()] == [True, True, False]
    assert w.size == 4 and not w.allows(4)


def grown_then_used(size, peak):
    """A window of 2..16 grown to ``size``, with ``peak`` batches in flight
    late in its first interval; (clock, window), one second before the shrink."""
    clock = Clock()
    w = Window(clock, 2, 16)
    while w.size < size:
        w.full()
    clock.advance(SHRINK_INTERVAL - 1)
    w.sent(peak)
    return clock, w


def test_shrinks_to_one_more_than_the_peak_once_an_interval_passed():
    clock, w = grown_then_used(10, 5)  # at most 5 in flight during the interval
    assert w.allows(9) and w.size == 10  # not yet due
    clock.advance(1)
    assert w.allows(5) and w.size == 6
    clock.advance(SHRINK_INTERVAL)  # a quiet interval: back to base
    assert not w.allows(2) and w.size == 2


def test_a_window_in_use_keeps_its_size():
    clock, w = grown_then_used(6, 6)  # every slot in use
    clock.advance(1)
    w.allows(0)
    assert w.size == 6


def test_base_and_cap_are_checked():
    with pytest.raises(ValueError):
        window(base=5, cap=4)
    with pytest.raises(ValueError):
        window(base=0, cap=4)


class RouterWindowTests(_Sides, TestCase):
    """Batches on a side whose writes are held (in flight until released)."""

    def setUp(self):
        self.make_router()  # a fixed window of 2, replaced by some tests
        self.local.router = self.router
        self.remote.router = self.router

    def adaptive(self, base, cap):
        self.router._work.window = Window(self.clock, base, cap)

    def change(self, key):
        self.local.data[key] = s(b"v")
        self.event(LOCAL, key)

    def held_changes(self, keys):
        """Change ``keys`` one reactor turn each while the remote holds its
        writes; (writes in flight, window size)."""
        self.remote.hold = True
        for key in keys:
            self.change(key)
        return len(self.remote.held), self.router.concurrency

    def release(self):
        self.remote.hold = False
        self.remote.release()
        self.clock.advance(0)

    def test_a_key_waiting_for_a_slot_opens_one_up_to_the_cap(self):
        self.adaptive(2, 4)
        keys = [b"ns:a", b"ns:b", b"ns:c", b"ns:d", b"ns:e"]
        # one batch a turn (batch_size 3 is not reached): a, b in the base
        # window, c and d each opened a slot, e waits at the cap
        self.assertEqual(self.held_changes(keys), (4, 4))
        self.release()
        self.assertEqual(sorted(self.remote.data), keys)

    def test_a_fixed_window_makes_keys_wait_and_batch(self):
        self.assertEqual(self.held_changes([b"ns:a", b"ns:b", b"ns:c", b"ns:d"]), (2, 2))
        self.release()
        self.assertEqual(len(self.remote.data), 4)

    def test_keys_in_flight_dirty_again_do_not_open_slots(self):
        self.adaptive(1, 8)
        # changed again and again while its copy is under way
        self.assertEqual(self.held_changes([b"ns:hot"] * 6), (1, 1))

    def test_the_window_comes_back_to_base_when_unused(self):
        self.adaptive(1, 8)
        self.assertEqual(self.held_changes([b"ns:a", b"ns:b", b"ns:c"]), (3, 3))
        self.release()
        self.clock.advance(2 * SHRINK_INTERVAL)
        self.change(b"ns:d")
        self.assertEqual(self.router.concurrency, 1)
        self.assertEqual(self.remote.data[b"ns:d"], s(b"v"))

    def test_a_window_shrunk_below_what_is_in_flight_sends_nothing_more(self):
        self.adaptive(1, 8)
        self.assertEqual(self.held_changes([b"ns:a", b"ns:b", b"ns:c"]), (3, 3))
        self.clock.advance(SHRINK_INTERVAL)  # nothing sent for an interval: back to 1, 3 still in flight
        self.assertEqual(self.held_changes([b"ns:d"]), (3, 2))  # it grew by one, still below 3
        self.release()
        self.assertEqual(self.remote.data[b"ns:d"], s(b"v"))
