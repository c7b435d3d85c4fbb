"""The records made after copies share requests (redisrepl.synced), on a
task.Clock with an in-memory store: they wait at most FLUSH_AFTER, and
anything else that touches the table sends them first, in order."""

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from redisrepl import scripts
from redisrepl.namespace import Namespace
from redisrepl.state import STRING, KeyState
from redisrepl.synced import FLUSH_AFTER, FLUSH_ITEMS, SyncedTable


class Recorder:
    """A local store that remembers the requests it got, in order."""

    def __init__(self):
        self.sent = []

    async def run_script(self, script, keys, args):
        self.sent.append(("script", script, args))

    async def command(self, *args):
        self.sent.append(("command", *args))
        return [None] * (len(args) - 2)


def table():
    clock, store = Clock(), Recorder()
    return clock, store, SyncedTable(store, Namespace(b"ns:"), clock)


def item(i):
    return (b"ns:%d" % i, KeyState(STRING, b"v%d" % i), 7)


def test_records_within_the_delay_share_one_request():
    clock, store, synced = table()
    for i in range(5):
        synced.record([item(i)], b"gen1")
        clock.advance(FLUSH_AFTER / 10)
    assert store.sent == []
    clock.advance(FLUSH_AFTER)
    [(kind, script, args)] = store.sent
    assert (kind, script) == ("script", scripts.RECORD)
    assert args[0] == b"gen1" and args[1::2] == [b"ns:%d" % i for i in range(5)]


def test_a_read_of_the_table_sends_the_records_waiting_first():
    clock, store, synced = table()
    synced.record([item(1)], b"gen1")
    synced.record([item(2)], b"gen2")  # another generation: its own request, after
    d = Deferred.fromCoroutine(synced.get([b"ns:1"]))
    assert [s[0] for s in store.sent] == ["script", "script", "command"]
    assert [s[2][0] for s in store.sent[:2]] == [b"gen1", b"gen2"]
    assert d.called
    clock.advance(FLUSH_AFTER)  # nothing left to send
    assert len(store.sent) == 3


def test_many_records_go_at_once():
    clock, store, synced = table()
    synced.record([item(i) for i in range(FLUSH_ITEMS)], b"g")
    assert len(store.sent) == 1 and clock.getDelayedCalls() == []


def test_without_a_clock_every_record_goes_at_once():
    store = Recorder()
    synced = SyncedTable(store, Namespace(b"ns:"))
    synced.record([item(1)], None)
    assert len(store.sent) == 1


def test_the_latest_record_of_each_key_is_remembered_before_it_is_sent(monkeypatch):
    """What a snapshot of the local Redis may lack (records trail copies):
    this process remembers the stamp of its latest record of each key, at
    once, for a bounded number of keys."""
    from redisrepl import synced as module

    clock, store, synced = table()
    synced.record([item(1)], b"gen1")  # stamp 7, not sent yet
    assert store.sent == []
    assert synced.recorded_after(b"ns:1", 6) and not synced.recorded_after(b"ns:1", 7)
    assert not synced.recorded_after(b"ns:2", 0)  # never recorded here
    Deferred.fromCoroutine(synced.store([(b"ns:1", b"d", 9), (b"ns:2", b"d", 3)], b"gen1"))
    assert synced.recorded_after(b"ns:1", 8) and synced.recorded_after(b"ns:2", 2)
    Deferred.fromCoroutine(synced.store([(b"ns:1", b"d", 0)], b"gen1"))  # a stamp unknown
    assert synced.recorded_after(b"ns:1", 8)  # takes nothing away
    Deferred.fromCoroutine(synced.forget([b"ns:2", b"d#3"]))  # a record dropped: no evidence left
    assert not synced.recorded_after(b"ns:2", 0)
    monkeypatch.setattr(module, "RECENT_KEYS", 2)
    synced.record([item(3)], b"gen1")
    synced.record([item(4)], b"gen1")
    assert not synced.recorded_after(b"ns:1", 0)  # the oldest forgotten: no evidence
    assert synced.recorded_after(b"ns:3", 0) and synced.recorded_after(b"ns:4", 0)


def test_a_record_refused_is_no_evidence_one_unanswered_still_is():
    from redisrepl.errors import LinkError, RefusedError

    clock, store, synced = table()
    error = None

    async def failing(script, keys, args):
        raise error

    store.run_script = failing
    error = LinkError("the local Redis is not connected", "not_connected")  # (it restarts)
    synced.record([item(1)], b"gen1")
    clock.advance(FLUSH_AFTER)
    assert synced.recorded_after(b"ns:1", 0)
    error = RefusedError("local Redis refused b'EVALSHA': OOM", "redis_error")
    synced.record([item(2)], b"gen1")
    assert synced.recorded_after(b"ns:2", 0)
    clock.advance(FLUSH_AFTER)
    assert not synced.recorded_after(b"ns:2", 0)
