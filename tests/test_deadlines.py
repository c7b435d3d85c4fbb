"""Timeouts of many operations on one timer (redisrepl.deadlines), on a
task.Clock."""

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher

from redisrepl.deadlines import Deadlines
from redisrepl.errors import LinkError
from redisrepl.stores import LocalStore


def deadlines(seconds=10.0):
    clock, expired = Clock(), []
    return clock, expired, Deadlines(clock, seconds, expired.append)


def test_an_item_expires_at_its_deadline_and_not_before():
    clock, expired, d = deadlines()
    d.start("a")
    clock.advance(9.9)
    assert expired == []
    clock.advance(0.1)
    assert expired == ["a"]
    assert not d.end("a")  # it had expired
    assert clock.getDelayedCalls() == []


def test_an_item_that_ends_in_time_never_expires():
    clock, expired, d = deadlines()
    d.start("a")
    clock.advance(5)
    assert d.end("a")
    clock.advance(100)
    assert expired == []
    assert clock.getDelayedCalls() == []


def test_items_ending_in_time_share_one_timer():
    clock, expired, d = deadlines()
    for i in range(100):
        d.start(i)
        clock.advance(0.01)
        assert d.end(i)
    assert len(clock.getDelayedCalls()) == 1
    assert expired == []


def test_each_item_keeps_its_own_deadline_after_older_ones_end():
    clock, expired, d = deadlines()
    d.start("old")
    clock.advance(4)
    d.start("new")
    d.end("old")
    clock.advance(6)  # the old one's deadline: the new one has 4 s left
    assert expired == []
    clock.advance(3.9)
    assert expired == []
    clock.advance(0.1)
    assert expired == ["new"]


def test_items_due_together_expire_oldest_first_and_the_rest_wait():
    clock, expired, d = deadlines()
    d.start("a")
    d.start("b")
    clock.advance(1)
    d.start("c")
    clock.advance(9)
    assert expired == ["a", "b"]
    assert len(d) == 1
    clock.advance(1)
    assert expired == ["a", "b", "c"]
    assert len(d) == 0


def test_an_item_started_by_an_expiry_gets_a_timer():
    clock = Clock()
    expired = []

    def expire(item):
        expired.append(item)
        if item == "a":
            d.start("retry")

    d = Deadlines(clock, 10, expire)
    d.start("a")
    clock.advance(10)
    clock.advance(10)
    assert expired == ["a", "retry"]


def test_stop_forgets_everything():
    clock, expired, d = deadlines()
    d.start("a")
    d.stop()
    assert clock.getDelayedCalls() == []
    assert not d.end("a")
    d.start("b")  # usable again
    clock.advance(10)
    assert expired == ["b"]


class _Conn:
    connected = True

    def __init__(self):
        self.waiting = []

    def execute_command(self, *args):
        d = Deferred()
        self.waiting.append(d)
        return d


class _Factory:
    size = 1

    def __init__(self):
        self.pool = [_Conn()]


def test_a_local_command_without_an_answer_fails_after_the_timeout():
    clock, factory = Clock(), _Factory()
    store = LocalStore(factory, clock, None, timeout=30)
    first = Deferred.fromCoroutine(store.command(b"PING"))
    factory.pool[0].waiting[0].callback(b"PONG")
    assert first.result == b"PONG"
    clock.advance(10)
    second = Deferred.fromCoroutine(store.command(b"PING"))
    clock.advance(29.9)
    assert not second.called
    clock.advance(0.1)
    error = []
    second.addErrback(error.append)
    assert error[0].check(LinkError)
    assert "did not answer within 30 s" in str(error[0].value)
    # the reply that comes after all is ignored
    factory.pool[0].waiting[1].callback(b"PONG")


def test_an_item_started_again_takes_its_new_place():
    clock, expired, d = deadlines()
    d.start("a")
    d.start("b")
    clock.advance(5)
    d.start("a")  # again: due at 15 now, after b
    clock.advance(5)
    assert expired == ["b"]
    clock.advance(5)
    assert expired == ["b", "a"]


def test_an_expiry_that_fails_does_not_keep_the_others_from_expiring():
    clock, expired = Clock(), []

    def expire(item):
        if item == "bad":
            raise RuntimeError("a canceller that fails")
        expired.append(item)

    logged = []
    globalLogPublisher.addObserver(logged.append)
    try:
        d = Deadlines(clock, 10, expire)
        for item in ("a", "bad", "b"):
            d.start(item)
        clock.advance(10)
    finally:
        globalLogPublisher.removeObserver(logged.append)
    assert expired == ["a", "b"]
    assert [e["log_failure"].type for e in logged if "log_failure" in e] == [RuntimeError]
