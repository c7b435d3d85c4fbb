"""The router and its expected-event tables, on in-memory sides and a fake clock."""

import attrs
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from redisrepl.big_keys import KeyChanged
from redisrepl.errors import LinkError, RefusedError
from redisrepl.expected import ExpectedEvents
from redisrepl.router import LOCAL, REMOTE, Router, Side
from redisrepl.state import ABSENT, HASH, LIST, SET, STRING, BigState, KeyState
from redisrepl.testing import RecordedRequests
from tests.fakes import FakeStore, FakeSynced


def s(value, expire_at=None):
    return KeyState(STRING, value, expire_at)


class _Sides:
    """A router between two in-memory sides, on a task.Clock."""

    def event(self, side, key, name=None):
        """``side`` announces ``key`` (by event ``name``), and the reactor turn ends."""
        self.router.changed(side, key, name)
        self.clock.advance(0)

    def make_router(self, **kwargs):
        self.clock = Clock()
        self.clock.advance(1000)
        self.local = FakeStore(self.clock, LOCAL)
        self.remote = FakeStore(self.clock, REMOTE)
        self.local_expected = ExpectedEvents(self.clock, lifetime=30)
        self.remote_expected = ExpectedEvents(self.clock, lifetime=30)
        self.router = Router(
            self.clock,
            Side(LOCAL, self.local, self.local_expected),
            Side(REMOTE, self.remote, self.remote_expected),
            b"ns:",
            concurrency=2,
            batch_size=3,
            **kwargs,
        )


class RouterTests(_Sides, TestCase):
    def setUp(self):
        self.make_router()
        self.local.router = self.router
        self.remote.router = self.router

    def test_local_change_reaches_remote_once_without_loop(self):
        self.local.user_set(b"ns:a", s(b"1"))
        self.assertEqual(self.remote.data[b"ns:a"], s(b"1"))
        self.assertEqual(len(self.remote.writes), 1)
        self.assertEqual(self.local.writes, [])
        self.assertEqual(self.router.stats.echoes[REMOTE], 1)
        self.assertEqual(self.router.backlog, 0)

    def test_remote_change_reaches_local(self):
        self.remote.user_set(b"ns:h", KeyState(HASH, ((b"f", b"v"),)))
        self.assertEqual(self.local.data[b"ns:h"], KeyState(HASH, ((b"f", b"v"),)))
        self.assertEqual(self.remote.writes, [])

    def test_deletion_crosses(self):
        self.local.user_set(b"ns:a", s(b"1"))
        self.local.user_set(b"ns:a", ABSENT)
        self.assertNotIn(b"ns:a", self.remote.data)
        self.assertEqual([w[1] for w in self.remote.writes], [s(b"1"), ABSENT])

    def test_genuine_write_after_ours_is_not_swallowed(self):
        self.local.user_set(b"ns:a", s(b"1"))
        # someone writes the remote key while our expectation is still fresh
        self.remote.user_set(b"ns:a", s(b"2"))
        self.assertEqual(self.local.data[b"ns:a"], s(b"2"))

    def test_old_content_written_again_is_genuine(self):
        self.local.user_set(b"ns:a", s(b"1"))  # expect remote=1
        self.remote.data[b"ns:a"] = s(b"2")  # genuine remote change
        self.router.changed(REMOTE, b"ns:a")  # ...announced: clears the expectation
        self.clock.advance(0)
        self.assertEqual(self.local.data[b"ns:a"], s(b"2"))
        self.remote.user_set(b"ns:a", s(b"1"))  # back to the old content
        self.assertEqual(self.local.data[b"ns:a"], s(b"1"))

    def test_lost_echo_expires(self):
        self.local.router = self.remote.router = None  # no echoes at all
        self.local.user_set(b"ns:a", s(b"1"), announce=False)
        self.router.changed(LOCAL, b"ns:a")
        self.clock.advance(0)
        self.assertEqual(len(self.remote_expected), 1)
        self.clock.advance(31)
        self.assertEqual(len(self.remote_expected), 0)

    def test_expiry_change_is_not_an_echo(self):
        self.local.user_set(b"ns:a", s(b"1"))
        self.remote.user_set(b"ns:a", s(b"1", expire_at=self.clock.seconds() + 100))
        self.assertEqual(self.local.data[b"ns:a"].expire_at, self.clock.seconds() + 100)

    def test_changes_coalesce_while_in_flight(self):
        self.remote.hold = True
        self.local.user_set(b"ns:a", s(b"0"))
        for i in range(1, 50):
            self.local.user_set(b"ns:a", s(b"%d" % i))
        self.assertEqual(len(self.remote.held), 1)
        self.remote.release()
        self.remote.release()
        self.assertEqual(self.remote.data[b"ns:a"], s(b"49"))
        self.assertEqual(len(self.remote.writes), 2)
        # 48 local changes merged, plus the echo of the first write
        self.assertEqual(self.router.stats.coalesced, 49)

    def test_first_change_goes_at_once_then_batches(self):
        self.remote.hold = True
        self.local.user_set(b"ns:first", s(b"x"))
        # sent alone, without waiting for company
        self.assertEqual(self.remote.batches, [[b"ns:first"]])
        for i in range(10):
            self.local.user_set(b"ns:%d" % i, s(b"x"))
        # the second request slot took what was there; the rest waits
        self.assertEqual(len(self.remote.held), 2)
        while self.remote.held:
            self.remote.release()
        self.assertEqual(len(self.remote.data), 11)
        self.assertEqual(self.router.backlog, 0)
        self.assertTrue(all(len(b) <= 3 for b in self.remote.batches))
        self.assertEqual(sum(len(b) for b in self.remote.batches), 11)
        self.assertLessEqual(len(self.remote.batches), 1 + 1 + 4)

    def test_events_of_one_reactor_turn_share_a_batch(self):
        self.local.router = None
        for i in range(3):
            self.local.user_set(b"ns:%d" % i, s(b"x"), announce=False)
            self.router.changed(LOCAL, b"ns:%d" % i)
        self.assertEqual(self.remote.batches, [])  # nothing before the turn ends
        self.clock.advance(0)  # ...and no time added
        self.assertEqual(self.remote.batches, [[b"ns:0", b"ns:1", b"ns:2"]])

    def test_events_of_one_read_share_a_batch_sent_at_once(self):
        self.local.router = None
        for i in range(3):
            self.local.user_set(b"ns:%d" % i, s(b"x"), announce=False)
        self.router.changes(LOCAL, [(b"ns:%d" % i, b"set") for i in range(3)])
        # sent when the read's events are all in, without a turn of the reactor
        self.assertEqual(self.remote.batches, [[b"ns:0", b"ns:1", b"ns:2"]])
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.router.changes(LOCAL, [(b"other:a", b"set")])  # not the namespace's: nothing to send
        self.assertEqual(len(self.remote.batches), 1)

    def test_a_key_is_never_in_two_batches(self):
        self.remote.hold = True
        self.local.user_set(b"ns:a", s(b"1"))
        self.local.user_set(b"ns:a", s(b"2"))  # queued behind the one in flight
        self.local.user_set(b"ns:b", s(b"1"))
        self.assertEqual(self.remote.batches, [[b"ns:a"], [b"ns:b"]])
        self.remote.release()
        self.assertEqual(self.remote.batches[-1], [b"ns:a"])
        while self.remote.held:
            self.remote.release()
        self.assertEqual(self.remote.data[b"ns:a"], s(b"2"))

    def test_link_error_pauses_and_loses_nothing(self):
        self.remote.error = LinkError("proxy down")
        self.local.user_set(b"ns:a", s(b"1"))
        self.local.user_set(b"ns:b", s(b"2"))
        self.assertEqual(self.remote.data, {})
        self.assertEqual(self.router.backlog, 2)
        self.local.user_set(b"ns:a", s(b"3"))  # newer state while down
        self.clock.advance(60)
        self.assertEqual(self.remote.data, {})
        self.remote.error = None
        self.clock.advance(60)
        self.assertEqual(self.remote.data, {b"ns:a": s(b"3"), b"ns:b": s(b"2")})
        self.assertEqual(self.router.backlog, 0)

    def test_failed_write_is_not_taken_as_written(self):
        self.remote.error = LinkError("proxy down")
        self.local.user_set(b"ns:a", s(b"1"))
        self.remote.error = None
        self.clock.advance(10)
        self.assertEqual(self.remote.data.get(b"ns:a"), s(b"1"))

    def test_backoff_is_quick_then_grows_and_is_capped(self):
        self.remote.error = LinkError("down")
        self.local.user_set(b"ns:a", s(b"1"))
        delays = []
        for _ in range(60):
            call = self.router.paused
            delays.append(call.getTime() - self.clock.seconds())
            self.clock.advance(delays[-1])
        # a side that comes back after a short outage is used within a second
        self.assertLessEqual(max(delays[:40]), 0.2)
        self.assertGreater(sum(delays[:40]), 5.0)
        # a long outage is not hammered
        self.assertGreater(delays[45], delays[0] * 4)
        self.assertLessEqual(max(delays), 5.0)
        self.remote.error = None
        self.clock.advance(5)
        self.assertEqual(self.remote.data[b"ns:a"], s(b"1"))

    def test_refused_key_is_parked_others_go_on(self):
        self.remote.errors_for[b"ns:bad"] = RefusedError("403")
        self.local.user_set(b"ns:bad", s(b"1"))
        self.local.user_set(b"ns:good", s(b"2"))
        self.assertEqual(self.remote.data, {b"ns:good": s(b"2")})
        self.assertEqual(self.router.backlog, 1)
        del self.remote.errors_for[b"ns:bad"]
        self.clock.advance(2)
        self.assertEqual(self.remote.data[b"ns:bad"], s(b"1"))
        self.assertEqual(self.router.backlog, 0)

    def test_refused_batch_is_split_to_find_the_bad_key(self):
        self.remote.hold = True
        self.local.user_set(b"ns:busy", s(b"x"))
        self.local.user_set(b"ns:busy2", s(b"x"))
        for name in (b"ns:g1", b"ns:bad", b"ns:g2"):
            self.local.user_set(name, s(b"v"))
        self.remote.hold = False
        self.remote.errors_for[b"ns:bad"] = RefusedError("refused")
        self.remote.release()
        self.assertEqual(self.remote.data[b"ns:g1"], s(b"v"))
        self.assertEqual(self.remote.data[b"ns:g2"], s(b"v"))
        self.assertNotIn(b"ns:bad", self.remote.data)
        self.assertTrue(self.router.is_parked(b"ns:bad"))
        self.assertEqual(self.router.backlog, 1)

    def test_namespace_and_reserved_keys_are_ignored(self):
        self.local.user_set(b"other:a", s(b"1"))
        self.local.user_set(b"ns:__redisrepl__:heartbeat:x", s(b"1"))
        self.assertEqual(self.remote.data, {})
        self.assertEqual(self.router.stats.ignored, 2)

    def test_both_sides_dirty_remote_wins(self):
        self.local.router = self.remote.router = None
        self.local.data[b"ns:a"] = s(b"L")
        self.remote.data[b"ns:a"] = s(b"R")
        self.remote.hold = self.local.hold = True
        self.router.changed(LOCAL, b"ns:x")  # occupy nothing relevant
        self.clock.advance(0)
        self.remote.hold = self.local.hold = False
        self.remote.release()
        self.router.changed(LOCAL, b"ns:a")
        self.clock.advance(0)
        self.router.changed(REMOTE, b"ns:a")
        self.clock.advance(0)
        # the first job took only the local change; let both finish
        self.assertEqual(self.local.data[b"ns:a"], self.remote.data[b"ns:a"])

    def test_simultaneous_changes_converge(self):
        # both sides change before either change is copied
        self.remote.hold = True
        self.local.user_set(b"ns:busy", s(b"x"))  # keeps one job in flight
        self.router.concurrency = 1
        self.local.user_set(b"ns:a", s(b"L"))
        self.remote.data[b"ns:a"] = s(b"R")
        self.router.changed(REMOTE, b"ns:a")
        self.clock.advance(0)
        self.remote.hold = False
        self.remote.release()
        self.assertEqual(self.local.data[b"ns:a"], s(b"R"))
        self.assertEqual(self.remote.data[b"ns:a"], s(b"R"))

    def test_stop_waits_for_in_flight_then_gives_up(self):
        self.remote.hold = True
        self.local.user_set(b"ns:a", s(b"1"))
        d = self.router.stop(timeout=5)
        self.assertNoResult(d)
        self.local.user_set(b"ns:b", s(b"1"))
        self.assertEqual(len(self.remote.held), 1)
        self.clock.advance(5)
        self.successResultOf(d)

    def test_state_already_written_is_not_written_again(self):
        self.remote.hold = True
        self.local.user_set(b"ns:a", s(b"final"))
        # it changes and changes back while the first copy is in flight
        self.local.user_set(b"ns:a", s(b"other"))
        self.local.user_set(b"ns:a", s(b"final"))
        self.remote.release()
        self.assertEqual([w[1] for w in self.remote.writes], [s(b"final")])
        self.assertEqual(self.router.stats.unchanged, 1)
        self.assertEqual(self.router.backlog, 0)

    def test_state_known_gone_from_the_target_is_written_again(self):
        self.local.user_set(b"ns:a", s(b"v"))
        self.remote.user_set(b"ns:a", s(b"changed there"))  # seen: the table forgets
        self.assertEqual(self.local.data[b"ns:a"], s(b"changed there"))
        self.local.user_set(b"ns:a", s(b"v"))
        self.assertEqual(self.remote.data[b"ns:a"], s(b"v"))

    def test_type_not_replicated_is_counted_and_left_alone(self):
        for _ in range(3):
            self.local.user_set(b"ns:mod", KeyState("ReJSON-RL"))
        self.assertEqual(self.remote.writes, [])
        self.assertEqual(self.router.stats.unsupported, 3)
        self.assertEqual(self.router._reports.warned, {b"ns:mod"})  # reported once
        self.flushLoggedErrors()

    def test_forced_copy_is_not_taken_for_an_echo(self):
        # copied remote -> local: the local table expects that state
        self.remote.user_set(b"ns:a", s(b"1"))
        self.assertEqual(self.local.data[b"ns:a"], s(b"1"))
        # the remote loses it without an event; the reconcile forces a copy
        del self.remote.data[b"ns:a"]
        self.router.force(LOCAL, b"ns:a")
        self.clock.advance(0)
        self.assertEqual(self.remote.data[b"ns:a"], s(b"1"))

    def test_echo_of_a_write_whose_reply_was_lost_does_not_revert_a_newer_change(self):
        self.remote.lose_reply = LinkError("reply lost")
        self.local.user_set(b"ns:a", s(b"1"))  # lands remotely, echo queued, router paused
        self.remote.lose_reply = None
        self.local.user_set(b"ns:a", s(b"2"))  # a newer local change meanwhile
        self.clock.advance(10)
        self.assertEqual(self.local.data[b"ns:a"], s(b"2"))
        self.assertEqual(self.remote.data[b"ns:a"], s(b"2"))

    def test_local_winner(self):
        self.router.first = LOCAL
        self.local.router = self.remote.router = None
        self.local.data[b"ns:a"] = s(b"L")
        self.remote.data[b"ns:a"] = s(b"R")
        self.router.changed(REMOTE, b"ns:a")
        self.router.changed(LOCAL, b"ns:a")
        self.clock.advance(0)
        self.assertEqual(self.remote.data[b"ns:a"], s(b"L"))
        self.assertEqual(self.local.data[b"ns:a"], s(b"L"))


class FakeBigCopier:
    """Copies a big key as one write, announcing the events a real chunked
    copy makes on the target (rename_to, then persist)."""

    def __init__(self):
        self.copies = []
        self.digests = []  # (side, key) of each digest computed
        self.hold = None  # a Deferred every copy waits for
        self.error = None  # raised by the next copy
        self.changed_once = False  # the next copy finds the key changed

    def copy(self, source, target, key, header, origin=None):
        from twisted.internet.defer import Deferred

        from redisrepl.big_keys import BigCopy

        async def run():
            if self.hold is not None:
                await self.hold
            if self.error is not None:
                error, self.error = self.error, None
                raise error
            if self.changed_once:
                self.changed_once = False
                raise KeyChanged(b"string")
            self.copies.append((source.name, target.name, key))
            target.expected.expect_events(key, [b"rename_to", b"persist"])
            target.expected.expect(key, header)
            # what the source held when the header was read (a fake header
            # carries the digest of the whole state)
            target.store.data[key] = header
            return BigCopy(header, 3)

        return Deferred.fromCoroutine(run())

    def digest(self, side, key, kind):
        from twisted.internet.defer import succeed

        self.digests.append((side.name, key))
        return succeed(side.store.data[key].digest)


class BigKeyRouterTests(_Sides, TestCase):
    def setUp(self):
        self.big = FakeBigCopier()
        self.synced = FakeSynced()
        self.make_router(big=self.big, synced=self.synced)

    def announce(self, side, key, event):
        self.router.changed(side, key, event)
        self.clock.advance(0)

    def test_big_key_goes_to_the_copier_and_its_echo_is_dropped(self):
        header = BigState(HASH, 50_000, None, b"hdigest")
        self.local.data[b"ns:big"] = header
        self.local.data[b"ns:small"] = s(b"1")
        self.router.changed(LOCAL, b"ns:small", b"set")
        self.announce(LOCAL, b"ns:big", b"hset")
        self.assertEqual(self.big.copies, [(LOCAL, REMOTE, b"ns:big")])
        self.assertEqual(self.remote.data[b"ns:small"], s(b"1"))  # small keys still batch
        self.assertEqual(self.remote.writes, [(b"ns:small", s(b"1"))])
        # the digest computed during the copy is what gets recorded
        self.assertIn([(b"ns:big", BigState(HASH, 50_000, None, b"hdigest"), 0)], self.synced.records)
        self.assertEqual(self.router.stats.big_copies, 1)
        self.assertEqual(self.router.stats.requests[REMOTE], 1 + 3)  # the batch, the copy's 3
        # its events on the remote are echoes: nothing comes back
        self.announce(REMOTE, b"ns:big", b"rename_to")
        self.announce(REMOTE, b"ns:big", b"persist")
        self.assertEqual(self.router.backlog, 0)
        self.assertEqual(self.big.copies, [(LOCAL, REMOTE, b"ns:big")])
        self.assertEqual(self.router.stats.echoes[REMOTE], 2)
        # a genuine change on the remote afterwards crosses back
        self.remote.data[b"ns:big"] = BigState(HASH, 50_001, None, b"hdigest2")
        self.announce(REMOTE, b"ns:big", b"hset")
        self.assertEqual(self.big.copies[-1], (REMOTE, LOCAL, b"ns:big"))
        self.assertEqual(self.local.data[b"ns:big"].digest, b"hdigest2")

    def test_changes_on_both_sides_during_a_big_copy(self):
        """A remote event during a local->remote copy (a late echo, or a write
        the copy then replaced) must not copy the remote's older state back
        over the local change made meanwhile."""
        from twisted.internet.defer import Deferred

        self.local.data[b"ns:big"] = BigState(HASH, 50_000, None, b"v1")
        self.big.hold = Deferred()
        self.announce(LOCAL, b"ns:big", b"hset")
        self.announce(REMOTE, b"ns:big", b"hset")  # during the copy
        self.local.data[b"ns:big"] = BigState(HASH, 50_001, None, b"v2")
        self.announce(LOCAL, b"ns:big", b"hset")  # a newer local change
        hold, self.big.hold = self.big.hold, None
        hold.callback(None)  # v1 lands on the remote
        self.clock.advance(0)
        # the remote's state (v1, what redisrepl wrote) is recognised by its
        # content and not copied back; v2 goes over
        self.assertIn((REMOTE, b"ns:big"), self.big.digests)
        self.assertEqual(self.big.copies, [(LOCAL, REMOTE, b"ns:big")] * 2)
        self.assertEqual(self.local.data[b"ns:big"].digest, b"v2")
        self.assertEqual(self.remote.data[b"ns:big"].digest, b"v2")

    def test_stale_entry_of_the_source_does_not_swallow_a_big_change(self):
        self.local.user_set = None
        self.local_expected.expect(b"ns:k", s(b"small"))  # written here earlier
        self.local.data[b"ns:k"] = BigState(SET, 20_000, None, b"mbig")
        self.announce(LOCAL, b"ns:k", b"sadd")
        self.assertEqual(self.big.copies, [(LOCAL, REMOTE, b"ns:k")])
        self.assertFalse(self.local_expected.has(b"ns:k"))  # dropped, not kept

    def test_expiring_big_key_is_deleted_not_copied(self):
        self.remote.data[b"ns:big"] = s(b"old")
        self.local.data[b"ns:big"] = BigState(LIST, 20_000, self.clock.seconds() + 0.5, b"l")
        self.announce(LOCAL, b"ns:big", b"rpush")
        self.assertEqual(self.big.copies, [])
        self.assertNotIn(b"ns:big", self.remote.data)

    def test_big_key_that_changed_meanwhile_is_read_again(self):
        self.local.data[b"ns:big"] = BigState(SET, 20_000, None, b"m")
        self.big.changed_once = True
        self.announce(LOCAL, b"ns:big", b"sadd")
        self.clock.advance(0)
        self.assertEqual(self.big.copies, [(LOCAL, REMOTE, b"ns:big")])
        self.assertEqual(self.router.backlog, 0)

    def test_failed_big_copy_is_retried_and_blames_the_right_side(self):
        self.local.data[b"ns:big"] = BigState(LIST, 20_000, None, b"l")
        error = LinkError("the local Redis did not answer", "connection")
        error.side = LOCAL
        self.big.error = error
        self.announce(LOCAL, b"ns:big", b"rpush")
        self.assertEqual(self.router.link_error, {LOCAL: "the local Redis did not answer", REMOTE: None})
        self.assertEqual(self.router.backlog, 1)
        self.clock.advance(10)  # the link backoff passes
        self.assertEqual(self.big.copies, [(LOCAL, REMOTE, b"ns:big")])
        self.assertEqual(self.router.backlog, 0)

    def test_a_long_big_copy_does_not_hold_up_small_keys(self):
        from twisted.internet.defer import Deferred

        self.big.hold = Deferred()
        self.local.data[b"ns:big"] = BigState(HASH, 1_000_000, None, b"h")
        self.announce(LOCAL, b"ns:big", b"hset")
        self.announce(LOCAL, b"ns:big", b"hset")  # again, while it is copied
        for i in range(5):  # more than the batch slots
            self.local.data[b"ns:s%d" % i] = s(b"%d" % i)
            self.announce(LOCAL, b"ns:s%d" % i, b"set")
        self.assertEqual(len(self.remote.writes), 5)  # the small keys went on
        self.assertEqual(self.big.copies, [])
        self.assertTrue(self.router.pending(b"ns:big"))
        self.big.hold.callback(None)  # the copy ends...
        self.big.hold = None
        self.clock.advance(0)
        # ...and the change that came during it is copied after it, once
        self.assertEqual(self.big.copies, [(LOCAL, REMOTE, b"ns:big")] * 2)
        self.assertFalse(self.router.pending(b"ns:big"))


class WinnerLocalTests(_Sides, TestCase):
    def setUp(self):
        self.make_router(first=LOCAL)
        self.local.router = self.router
        self.remote.router = self.router

    def test_a_stale_event_never_overwrites_a_newer_change(self):
        """The local key still holds what was copied; an event for it comes
        again while the remote changed: the remote's change wins, even when
        the local side is copied first."""
        self.local.user_set(b"ns:a", s(b"A"))  # copied: the remote holds A
        self.assertEqual(self.remote.data[b"ns:a"], s(b"A"))
        self.remote.data[b"ns:a"] = s(b"C")  # a genuine remote change...
        self.router.changed(REMOTE, b"ns:a")
        self.router.changed(LOCAL, b"ns:a")  # ...and a stale local event
        self.clock.advance(0)
        self.assertEqual(self.remote.data[b"ns:a"], s(b"C"))
        self.assertEqual(self.local.data[b"ns:a"], s(b"C"))


class LossTests(_Sides, TestCase):
    """What a side that lost or rolled back data answers is not a change."""

    def setUp(self):
        from redisrepl.epochs import Generation, SideEpoch

        self.Generation = Generation
        self.requests = RecordedRequests()
        self.synced = FakeSynced()
        self.make_router(reconcile=self.requests, synced=self.synced)
        for store in (self.local, self.remote):
            store.epoch = SideEpoch(store.name)
            store.generation = Generation(b"g1", 100, 50)
            store.epoch.observe(store.generation)
            store.epoch.confirmed = b"g1"

    def test_a_state_read_from_a_new_generation_is_left_to_the_reconcile(self):
        self.remote.generation = self.Generation(b"g2", 300, 300)  # the hub was wiped
        self.router.changed(REMOTE, b"ns:a", b"set")  # a late echo of ours
        self.clock.advance(0)
        self.assertEqual(self.local.writes, [])  # not copied as a deletion
        self.assertEqual(self.router.stats.deferred, 1)
        self.assertEqual(self.requests, ["the remote side lost or rolled back data"])

    def test_a_key_written_on_the_hub_since_its_loss_crosses(self):
        self.remote.generation = self.Generation(b"g2", 300, 300)
        self.remote.data[b"ns:a"] = s(b"new")
        self.remote.tags[b"ns:a"] = 310  # written since the loss
        self.event(REMOTE, b"ns:a", b"set")
        self.assertEqual(self.local.data[b"ns:a"], s(b"new"))
        # and recorded as of the hub's record of it
        self.assertEqual(self.synced.records, [[(b"ns:a", s(b"new"), 310)]])

    def test_a_state_the_hub_restored_is_recorded_as_old_as_the_restore(self):
        # the hub restarted from a snapshot of stamp 150 (its base while the
        # window is open); a key it holds without a record of a write since
        # is only as new as that, however late it is read
        self.remote.generation = self.Generation(b"g1", 400, 50, 150)
        self.remote.data[b"ns:a"] = s(b"restored")
        self.event(REMOTE, b"ns:a", b"set")
        self.assertEqual(self.synced.records, [[(b"ns:a", s(b"restored"), 150)]])

    def test_a_local_side_that_lost_data_copies_nothing_stale(self):
        self.remote.data[b"ns:a"] = s(b"newer")
        self.local.data[b"ns:a"] = s(b"changed")
        self.router.changed(LOCAL, b"ns:a", b"set")  # before the local restart...
        self.router.subscribed(LOCAL)  # ...which ends the subscription
        self.local.generation = self.Generation(b"l2", 0, 0)  # and comes back from a snapshot
        self.local.data[b"ns:a"] = s(b"restored")
        self.clock.advance(0)
        self.assertEqual(self.remote.data[b"ns:a"], s(b"newer"))  # not reverted
        self.assertEqual(self.router.stats.deferred, 1)
        self.assertIn("the local side lost or rolled back data", self.requests)
        # a key written since the restart (an event since the subscription) crosses
        self.local.data[b"ns:b"] = s(b"written since")
        self.event(LOCAL, b"ns:b", b"set")
        self.assertEqual(self.remote.data[b"ns:b"], s(b"written since"))
        # as does a deletion made since
        self.remote.data[b"ns:c"] = s(b"deleted here since")
        self.event(LOCAL, b"ns:c", b"del")
        self.assertNotIn(b"ns:c", self.remote.data)
        # but not an absence after another event: it may be the loss itself
        self.remote.data[b"ns:d"] = s(b"kept")
        self.event(LOCAL, b"ns:d", b"set")
        self.assertEqual(self.remote.data[b"ns:d"], s(b"kept"))
        # once the reconcile confirmed the new generation, all is as usual:
        # an absence after a 'set' waits for the event that deletes
        self.local.epoch.confirmed = b"l2"
        self.event(LOCAL, b"ns:d", b"set")
        self.assertEqual(self.remote.data[b"ns:d"], s(b"kept"))
        self.event(LOCAL, b"ns:d", b"del")
        self.assertNotIn(b"ns:d", self.remote.data)

    def test_a_reconcile_copy_is_dropped_if_its_source_changed_generation(self):
        self.remote.data[b"ns:a"] = ABSENT
        self.router.force(REMOTE, b"ns:a", guard=b"g1")
        self.remote.generation = self.Generation(b"g2", 300, 300)
        self.local.data[b"ns:a"] = s(b"keep")
        self.clock.advance(0)
        self.assertEqual(self.local.data[b"ns:a"], s(b"keep"))
        self.assertEqual(self.router.stats.voided, 1)
        self.assertTrue(self.requests)

    def test_a_refill_carries_its_origin_and_a_refused_one_is_reconciled(self):
        self.local.data[b"ns:a"] = s(b"mine")
        self.local.data[b"ns:b"] = s(b"mine too")
        self.remote.refuse.add(b"ns:b")
        self.router.force(LOCAL, b"ns:a", guard=b"g1", origin=120)
        self.router.force(LOCAL, b"ns:b", guard=b"g1", origin=90)
        self.clock.advance(0)
        self.assertEqual(self.remote.origins, [{b"ns:a": 120, b"ns:b": 90}])
        self.assertEqual(self.remote.data, {b"ns:a": s(b"mine")})
        self.assertEqual(self.router.stats.refills_refused, 1)
        self.assertIn("copies refused by the target", self.requests)
        # a refill is recorded at the stamp its state is known since
        self.assertEqual(self.synced.records, [[(b"ns:a", s(b"mine"), 120)]])

    def test_a_key_another_site_refilled_is_left_to_the_reconcile(self):
        self.remote.generation = self.Generation(b"g1", 300, 50)
        self.remote.data[b"ns:a"] = s(b"theirs")
        self.remote.tags[b"ns:a"] = 40  # a refill, known since 40
        self.event(REMOTE, b"ns:a", b"set")
        self.assertEqual(self.local.writes, [])
        self.assertEqual(self.requests, ["a key refilled by another site"])

    def test_an_eviction_is_not_a_deletion(self):
        self.local.data[b"ns:a"] = s(b"1")
        self.event(LOCAL, b"ns:a", b"set")
        self.assertEqual(self.remote.data[b"ns:a"], s(b"1"))
        # the key is changed, then evicted before its copy reads it
        self.local.data[b"ns:a"] = s(b"2")
        self.router.changed(LOCAL, b"ns:a", b"set")
        del self.local.data[b"ns:a"]
        self.event(LOCAL, b"ns:a", b"evicted")
        self.assertEqual(self.remote.data[b"ns:a"], s(b"1"))  # kept there
        self.assertEqual(self.router.stats.evicted[LOCAL], 1)
        self.assertEqual(self.synced.evictions, [(LOCAL, [b"ns:a"])])
        self.assertTrue(self.router.was_evicted(LOCAL, b"ns:a"))
        # a later genuine deletion crosses
        self.event(LOCAL, b"ns:a", b"del")
        self.assertNotIn(b"ns:a", self.remote.data)
        self.assertFalse(self.router.was_evicted(LOCAL, b"ns:a"))


class ReconcileSeamTests(_Sides, TestCase):
    def setUp(self):
        self.make_router()
        self.local.router = self.router
        self.remote.router = self.router

    def test_a_live_change_supersedes_a_reconcile_copy_from_the_other_side(self):
        self.local.data[b"ns:a"] = s(b"old")
        self.remote.data[b"ns:a"] = s(b"older")
        self.router.force(REMOTE, b"ns:a")  # decided on views read a moment ago
        self.local.user_set(b"ns:a", s(b"new"))  # then a genuine local change
        self.assertEqual(self.remote.data[b"ns:a"], s(b"new"))
        self.assertEqual(self.local.data[b"ns:a"], s(b"new"))

    def test_a_reconcile_copy_is_not_made_over_a_change_made_since(self):
        self.local.router = self.remote.router = None
        self.remote.data[b"ns:a"] = s(b"hub")
        self.router.force(REMOTE, b"ns:a", expect=None)  # the run saw it absent here
        self.local.data[b"ns:a"] = s(b"written meanwhile")  # its event not taken yet
        self.clock.advance(0)
        self.assertEqual(self.local.data[b"ns:a"], s(b"written meanwhile"))
        self.router.force(REMOTE, b"ns:a", expect=s(b"written meanwhile").digest)
        self.clock.advance(0)
        self.assertEqual(self.local.data[b"ns:a"], s(b"hub"))

    def test_a_watcher_sees_what_is_copied_and_what_is_waiting(self):
        self.remote.hold = True
        self.local.user_set(b"ns:busy", s(b"1"))  # in flight
        watcher = self.router.watch()
        self.assertIn(b"ns:busy", watcher)
        self.remote.release()
        self.clock.advance(0)
        self.remote.hold = False
        self.local.data[b"ns:copied"] = s(b"2")
        self.router.force(LOCAL, b"ns:copied")  # no event: copied all the same
        self.clock.advance(0)
        self.assertEqual(self.remote.data[b"ns:copied"], s(b"2"))
        self.assertIn(b"ns:copied", watcher)
        self.router.unwatch(watcher)


class RefusalTests(_Sides, TestCase):
    def setUp(self):
        self.make_router()
        self.local.router = self.router

    def test_a_key_too_large_for_the_proxy_is_parked_alone_and_named(self):
        from twisted.logger import capturedLogs, formatEvent

        self.remote.errors_for[b"ns:huge"] = RefusedError("HTTP 413 from the proxy", "http_413")
        with capturedLogs() as events:
            self.local.user_set(b"ns:huge", s(b"x" * 5000))
            self.local.user_set(b"ns:small", s(b"1"))
            self.clock.advance(0)
        self.assertEqual(self.remote.data, {b"ns:small": s(b"1")})
        self.assertTrue(self.router.is_parked(b"ns:huge"))
        self.assertEqual(self.router.parked, 1)
        text = "\n".join(formatEvent(e) for e in events)
        self.assertIn("ns:huge: HTTP 413 from the proxy; ns:huge takes 5024 bytes", text)


class FullReadTests(_Sides, TestCase):
    def setUp(self):
        self.make_router()
        self.local.router = self.router

    def test_keys_a_full_read_left_are_read_again_and_keep_the_reconcile_s_request(self):
        from redisrepl.state import NOT_READ

        for key in (b"ns:a", b"ns:b", b"ns:c"):
            self.local.data[key] = s(key)
        reads = []
        real_read = self.local.read

        def full_after_one(keys):
            reads.append(list(keys))
            d = real_read(keys)
            if len(reads) == 1:  # the first read's reply is full after its first key
                d.addCallback(lambda reply: attrs.evolve(reply, states=reply.states[:1] + [NOT_READ] * (len(keys) - 1)))
            return d

        self.local.read = full_after_one
        self.router.changed(LOCAL, b"ns:a")
        self.router.force(LOCAL, b"ns:b", origin=7)
        self.router.changed(LOCAL, b"ns:c")
        self.clock.advance(0)
        self.assertEqual(len(reads), 2)
        self.assertEqual(reads[0][0], b"ns:a")
        self.assertEqual(sorted(self.remote.data), [b"ns:a", b"ns:b", b"ns:c"])
        self.assertIn({b"ns:b": 7}, self.remote.origins)  # still a refill when read again


class EventEchoTests(_Sides, TestCase):
    """Echoes told by their events (redisrepl.echoes): dropped without a
    read; anything not announced is read and compared as before. The events
    named here are the ones Redis sends for the write script's commands."""

    def setUp(self):
        self.make_router()
        self.local.router = self.router  # local changes announce themselves;
        self.remote.router = None  # the hub's events are delivered by the test

    def copied(self, key, state):
        self.local.user_set(key, state)
        self.assertEqual(self.remote.data[key], state)
        self.assertEqual(self.remote.reads, 0)

    def test_the_echo_of_a_string_costs_no_read(self):
        self.copied(b"ns:a", s(b"1"))
        self.event(REMOTE, b"ns:a", b"set")
        self.assertEqual(self.remote.reads, 0)
        self.assertEqual(self.router.stats.echoes[REMOTE], 1)
        self.assertEqual(self.router.backlog, 0)

    def test_events_in_any_order_are_all_echoes(self):
        self.copied(b"ns:h", KeyState(HASH, ((b"f", b"v"), (b"g", b"w")), self.clock.seconds() + 3600))
        for name in (b"expire", b"hset", b"del", b"set"):  # Webdis may reverse them
            self.event(REMOTE, b"ns:h", name)
        self.assertEqual(self.remote.reads, 0)
        self.assertEqual(self.router.stats.echoes[REMOTE], 4)

    def test_the_same_event_from_another_writer_after_ours_is_read_and_copied(self):
        self.copied(b"ns:a", s(b"1"))
        self.event(REMOTE, b"ns:a", b"set")  # ours
        self.remote.data[b"ns:a"] = s(b"2")  # then somebody's SET
        self.event(REMOTE, b"ns:a", b"set")
        self.assertEqual(self.remote.reads, 1)
        self.assertEqual(self.local.data[b"ns:a"], s(b"2"))

    def test_an_event_the_write_does_not_cause_is_read(self):
        self.copied(b"ns:a", s(b"1"))
        self.remote.data[b"ns:a"] = s(b"1", expire_at=self.clock.seconds() + 500)
        self.event(REMOTE, b"ns:a", b"expire")  # not announced: somebody's EXPIRE
        self.assertEqual(self.remote.reads, 1)
        self.assertEqual(self.local.data[b"ns:a"].expire_at, self.clock.seconds() + 500)

    def test_a_lost_write_reply_withdraws_the_events_and_the_echo_is_told_by_its_content(self):
        self.remote.lose_reply = LinkError("connection lost", "connection")
        self.local.user_set(b"ns:a", s(b"1"))  # landed, reply lost
        self.remote.lose_reply = None
        self.event(REMOTE, b"ns:a", b"set")  # not dropped: maybe ours, maybe not
        self.assertEqual(self.router.stats.echoes[REMOTE], 0)
        self.clock.advance(1)  # the router resumes after its pause
        self.assertGreaterEqual(self.remote.reads, 1)  # ...and reads it
        self.assertEqual(self.local.data[b"ns:a"], s(b"1"))
        self.assertEqual(self.remote.data[b"ns:a"], s(b"1"))

    def test_a_refill_that_was_made_tells_its_echo_by_its_events(self):
        self.local.data[b"ns:a"] = s(b"1")
        self.router.force(LOCAL, b"ns:a", origin=7)  # may be refused by the hub
        self.clock.advance(0)
        self.assertEqual(self.remote.data[b"ns:a"], s(b"1"))
        self.event(REMOTE, b"ns:a", b"set")
        self.assertEqual(self.remote.reads, 0)
        self.assertEqual(self.router.stats.echoes[REMOTE], 1)

    def test_a_copy_made_over_what_the_reconcile_saw_tells_its_echo_by_its_events(self):
        self.local.data[b"ns:a"] = s(b"1")
        self.router.force(LOCAL, b"ns:a", expect=None)
        self.clock.advance(0)
        self.event(REMOTE, b"ns:a", b"set")
        self.assertEqual(self.remote.reads, 0)
        self.assertEqual(self.router.stats.echoes[REMOTE], 1)

    def test_events_before_the_reply_of_a_copy_that_may_be_refused_wait_for_it(self):
        self.local.data[b"ns:a"] = s(b"1")
        self.remote.hold = True
        self.router.force(LOCAL, b"ns:a", expect=None)
        self.clock.advance(0)
        self.event(REMOTE, b"ns:a", b"set")  # before the reply: echo or somebody's?
        self.assertEqual((self.remote.reads, self.router.stats.echoes[REMOTE]), (0, 0))
        self.remote.release()  # made: it was the echo
        self.clock.advance(0)
        self.assertEqual((self.remote.reads, self.router.stats.echoes[REMOTE]), (0, 1))
        self.assertEqual(self.router.backlog, 0)

    def test_a_refused_copy_does_not_swallow_the_event_that_refused_it(self):
        self.local.data[b"ns:a"] = s(b"1")
        self.remote.data[b"ns:a"] = s(b"2")  # somebody's SET, after the reconcile saw none...
        self.remote.hold = True
        self.router.force(LOCAL, b"ns:a", expect=None)
        self.clock.advance(0)
        self.event(REMOTE, b"ns:a", b"set")  # ...whose event comes while the copy is in flight
        self.remote.release()  # refused: the key no longer held what the reconcile saw
        self.clock.advance(0)
        self.assertEqual(self.router.stats.echoes[REMOTE], 0)
        self.assertEqual(self.remote.reads, 1)  # taken as genuine: read, and copied back
        self.assertEqual(self.local.data[b"ns:a"], s(b"2"))
        self.assertEqual(self.remote.data[b"ns:a"], s(b"2"))

    def test_events_held_for_a_copy_whose_reply_is_lost_are_genuine(self):
        self.local.data[b"ns:a"] = s(b"1")
        self.remote.hold = True
        self.router.force(LOCAL, b"ns:a", expect=None)
        self.clock.advance(0)
        self.event(REMOTE, b"ns:a", b"set")
        held, self.remote.held = self.remote.held, []
        self.remote.hold = False
        held[0].errback(LinkError("connection lost", "connection"))
        self.clock.advance(1)  # the router resumes after its pause
        self.assertEqual(self.router.stats.echoes[REMOTE], 0)
        self.assertGreaterEqual(self.remote.reads, 1)  # maybe ours, maybe not: read

    def test_a_state_expiring_soon_announces_no_events(self):
        self.copied(b"ns:a", s(b"1", expire_at=self.clock.seconds() + 10))
        self.event(REMOTE, b"ns:a", b"set")
        self.assertEqual(self.remote.reads, 1)

    def test_events_lost_with_the_stream_are_expected_no_more(self):
        self.copied(b"ns:a", s(b"1"))
        self.router.subscribed(REMOTE)  # the stream broke and came back
        self.event(REMOTE, b"ns:a", b"set")
        self.assertEqual(self.remote.reads, 1)

    def test_a_deletion_announces_set_then_del(self):
        self.copied(b"ns:a", s(b"1"))
        self.event(REMOTE, b"ns:a", b"set")
        self.local.user_set(b"ns:a", ABSENT)
        self.assertNotIn(b"ns:a", self.remote.data)
        self.event(REMOTE, b"ns:a", b"del")
        self.event(REMOTE, b"ns:a", b"set")
        self.assertEqual(self.remote.reads, 0)


class UnexplainedAbsenceTests(_Sides, TestCase):
    """A key read absent locally while its latest event wrote it: the event
    that took it away is still on its way (an eviction under maxmemory, an
    expiry), and decides; no deletion is copied meanwhile."""

    def setUp(self):
        self.make_router()

    def test_an_absence_after_a_set_is_not_copied_until_its_event_comes(self):
        self.remote.data[b"ns:a"] = s(b"1")
        # the local Redis wrote it (event 'set'), then evicted it before the
        # read: the read finds nothing, the 'evicted' event not taken yet
        self.event(LOCAL, b"ns:a", b"set")
        self.assertEqual(self.remote.writes, [])
        self.assertEqual(self.remote.data[b"ns:a"], s(b"1"))
        self.event(LOCAL, b"ns:a", b"evicted")
        self.assertEqual(self.remote.writes, [])

    def test_a_deletion_is_copied_once_its_event_comes(self):
        self.remote.data[b"ns:a"] = s(b"1")
        self.event(LOCAL, b"ns:a", b"set")
        self.event(LOCAL, b"ns:a", b"del")
        self.assertNotIn(b"ns:a", self.remote.data)

    def test_an_expiry_is_copied(self):
        self.remote.data[b"ns:a"] = s(b"1")
        self.event(LOCAL, b"ns:a", b"expired")
        self.assertNotIn(b"ns:a", self.remote.data)

    def test_a_reconcile_copy_of_an_absence_is_made(self):
        self.remote.data[b"ns:a"] = s(b"1")
        self.event(LOCAL, b"ns:a", b"set")
        self.router.force(LOCAL, b"ns:a")
        self.clock.advance(0)
        self.assertNotIn(b"ns:a", self.remote.data)
