"""Heartbeats: written only when the stream has been quiet for an interval,
so that N sites on one hub cost about N heartbeat events per interval, not N²."""

from twisted.internet.task import Clock

from redisrepl.remote_source import RemoteSource


class Client:
    url = "https://hub.example.org/redis/"


class Router:
    def __init__(self):
        self.changes = []

    def changed(self, side, key, event=None):
        self.changes.append((key, event))


def source(clock):
    return RemoteSource(
        None, Client(), Router(), 0, b"ns:", b"ns:__redisrepl__:", clock, heartbeat_interval=1.0, instance=b"me"
    )


def watched():
    """(clock, a source at time 100, the list its stream's closings go to)."""
    clock = Clock()
    clock.advance(100)
    remote = source(clock)
    closed = []
    remote._close_stream = lambda: closed.append(True)
    return clock, remote, closed


def event(remote, key, name=b"set"):
    remote._event(b"__keyspace@0__:" + key, name)


def test_a_quiet_stream_needs_a_heartbeat_and_a_busy_one_does_not():
    clock = Clock()
    clock.advance(100)
    remote = source(clock)
    assert remote.needs_heartbeat()  # nothing seen yet
    event(remote, b"ns:__redisrepl__:heartbeat:another-site")
    assert not remote.needs_heartbeat()  # another site's heartbeat proves it alive
    clock.advance(0.5)
    event(remote, b"ns:data")
    clock.advance(0.9)
    assert not remote.needs_heartbeat()
    clock.advance(0.1)
    assert remote.needs_heartbeat()  # an interval without any event


def test_a_heartbeat_written_and_not_back_is_written_again_and_reopens_the_stream_when_late():
    clock, remote, closed = watched()
    event(remote, b"ns:data")
    clock.advance(1.0)
    remote.beat_sending(clock.seconds())
    remote.beat_sent(0.01)
    event(remote, b"ns:other")  # others' events do not answer ours
    assert remote.needs_heartbeat()
    clock.advance(1.0)
    remote.check_heartbeat()
    assert closed == [True]


def test_our_own_heartbeat_answers_and_goes_to_no_router():
    clock = Clock()
    clock.advance(100)
    remote = source(clock)
    remote.beat_sending(clock.seconds())
    remote.beat_sent(0.01)
    clock.advance(0.02)
    event(remote, remote.heartbeat_key)
    assert not remote.needs_heartbeat()
    assert abs(remote.last_heartbeat_rtt - 0.02) < 1e-9
    assert remote._router.changes == []


def test_a_heartbeat_is_due_from_the_answer_to_its_write_not_from_its_sending():
    """A write that waited behind a busy hub (a walk's steps) is not a
    silent stream: its event is due once the write is known done."""
    clock, remote, closed = watched()
    for _ in range(5):  # fast beats: the bound is its floor, 1 s
        remote.beat_sending(clock.seconds())
        clock.advance(0.01)
        remote.beat_sent(0.01)
        event(remote, remote.heartbeat_key)
        clock.advance(1.0)
    remote.beat_sending(clock.seconds())
    clock.advance(2.0)
    remote.check_heartbeat()  # not answered yet: nothing is due
    remote.beat_sent(2.0)  # the bound is now 10 smoothed round trips: about 4.1 s
    clock.advance(3.0)
    remote.check_heartbeat()
    assert closed == []  # 5 s after it was sent, 3 s after its answer
    clock.advance(1.5)
    remote.check_heartbeat()
    assert closed == [True]


def test_a_heartbeat_whose_write_failed_is_replaced_by_the_next_one():
    clock, remote, closed = watched()
    remote.beat_sending(clock.seconds())  # this write fails: never answered
    clock.advance(30.0)
    remote.beat_sending(clock.seconds())
    clock.advance(0.02)
    remote.beat_sent(0.02)
    clock.advance(0.01)
    event(remote, remote.heartbeat_key)
    assert abs(remote.last_heartbeat_rtt - 0.03) < 1e-9
    assert closed == []


class Store:
    """A side's check that fails while ``down``."""

    def __init__(self):
        self.down = False
        self.heartbeats = 0

    async def check(self, heartbeat_key=b"", lifetime_ms=0, flag_key=b""):
        from redisrepl.errors import LinkError

        if self.down:
            raise LinkError("the hub did not answer", "timeout")
        self.heartbeats += bool(heartbeat_key)
        return type("Reply", (), {"flagged": False})()


def test_the_watchdog_marks_a_heartbeat_before_writing_it_and_answers_it_after():
    from redisrepl.watchdog import Watchdog

    clock, remote, closed = watched()
    remote.up = True
    hub = Store()
    reconciler = type("Reconciler", (), {"dirty": False, "guard_tripped": {}})()
    dog = Watchdog(1.0, clock, {"local": Store(), "remote": hub}, reconciler, remote_source=remote)
    hub.down = True
    for _ in range(3):
        dog._tick()
        clock.advance(1.0)
    assert closed == [] and dog.error["remote"]  # unanswered writes make nothing due
    hub.down = False
    dog._tick()
    assert hub.heartbeats == 1
    clock.advance(1.05)
    dog._tick()  # its event did not come within 1 s of its answer
    assert closed == [True]


def test_a_heartbeat_whose_event_beats_the_answer_is_not_waited_for():
    clock, remote, closed = watched()
    sent = clock.seconds()
    remote.beat_sending(sent)
    clock.advance(0.01)
    event(remote, remote.heartbeat_key)  # the event comes first
    clock.advance(0.01)
    remote.beat_sent(0.02)
    clock.advance(5.0)
    remote.check_heartbeat()
    assert closed == []
