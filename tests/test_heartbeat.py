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
    remote.beat_sent(clock.seconds(), 0.01)
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
    remote.beat_sent(clock.seconds(), 0.01)
    clock.advance(0.02)
    event(remote, remote.heartbeat_key)
    assert not remote.needs_heartbeat()
    assert abs(remote.last_heartbeat_rtt - 0.02) < 1e-9
    assert remote._router.changes == []


def test_a_heartbeat_is_due_from_the_answer_to_its_write_not_from_its_sending():
    """A write that waited behind a busy hub (a walk's steps) is not a
    silent stream: its event is due once the write is known done."""
    clock, remote, closed = watched()
    sent = clock.seconds()
    remote.beat_sending(sent)
    clock.advance(0.9)
    remote.check_heartbeat()  # not answered yet: nothing is due
    remote.beat_sent(sent, 0.9)
    clock.advance(0.5)
    remote.check_heartbeat()
    event(remote, remote.heartbeat_key)
    clock.advance(1.0)
    remote.check_heartbeat()
    assert closed == []
    assert abs(remote.last_heartbeat_rtt - 1.4) < 1e-9


def test_a_heartbeat_whose_event_beats_the_answer_is_not_waited_for():
    clock, remote, closed = watched()
    sent = clock.seconds()
    remote.beat_sending(sent)
    clock.advance(0.01)
    event(remote, remote.heartbeat_key)  # the event comes first
    clock.advance(0.01)
    remote.beat_sent(sent, 0.02)
    clock.advance(5.0)
    remote.check_heartbeat()
    assert closed == []
