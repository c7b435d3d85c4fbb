"""The watchdog: every ``--heartbeat`` seconds, one small check of each side.

Each check is the ``check`` script (redisrepl/lua/check.lua), so it tells
that side's generation like every reply does: a Redis that was wiped,
restarted or rolled back is noticed within a heartbeat whether or not
anything else is going on, and the reconcile refills it at once
(redisrepl.epochs). With ``--rc`` the check of the hub also writes this
daemon's heartbeat key: its keyspace event must come back on the event
stream within max(1 s, 10 round trips), or the stream is taken for dead
(Webdis keeps a stream open and silent when its Redis restarts) and
reopened. Without ``--rc`` the check is what tells ``/healthz`` whether the
hub answers.

Per site, the hub's cost is one request per heartbeat (one script call of
a few microseconds), and with ``--rc`` one keyspace event per heartbeat on
the event stream of every site sharing the namespace.
"""

from twisted.application.internet import TimerService
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from redisrepl.errors import ReplicationError
from redisrepl.sides import LOCAL, REMOTE

log = Logger()


class Watchdog(TimerService):
    def __init__(self, interval, clock, stores, reconciler, allow_key=b"", remote_source=None):
        super().__init__(interval, self._tick)
        self.clock = clock
        self._stores = stores
        self._reconciler = reconciler  # redisrepl.reconcile.Reconciler
        self._allow_key = allow_key  # the local key that lets a mass deletion through
        self._remote = remote_source
        self._busy = False
        #: side -> why its last check failed, None once it answers
        self.error = {LOCAL: "not checked yet", REMOTE: "not checked yet"}

    def _tick(self):
        if self._busy:
            return None  # a check is still waiting for its answer
        self._busy = True
        d = Deferred.fromCoroutine(self._check())
        d.addBoth(self._done)
        return d

    def _done(self, result):
        self._busy = False
        return None

    async def _check(self):
        if self._remote is not None and self._remote.up:
            self._remote.check_heartbeat()
        await self._check_side(LOCAL, flag_key=self._allow_key)
        await self._check_side(REMOTE)

    async def _check_side(self, side, flag_key=b""):
        store = self._stores[side]
        heartbeat, lifetime = b"", 0
        if side == REMOTE and self._remote is not None and self._remote.up and self._remote.needs_heartbeat():
            heartbeat, lifetime = self._remote.heartbeat_key, self._remote.heartbeat_lifetime_ms
        sent = self.clock.seconds()
        if heartbeat:
            self._remote.beat_sending(sent)
        try:
            reply = await store.check(heartbeat, lifetime, flag_key)
        except ReplicationError as e:
            if self.error[side] is None:
                log.warn("check of the {side} side failed: {error}", side=side, error=e)
            self.error[side] = str(e)
            return
        if self.error[side] is not None and self._reconciler.dirty:
            # back: the reconcile owed (a run failed meanwhile) need not wait for its backoff
            self._reconciler.request(f"the {side} side answers again", delay=0)
        self.error[side] = None
        if heartbeat:
            self._remote.beat_sent(self.clock.seconds() - sent)
        if reply.flagged and self._reconciler.guard_tripped:
            self._reconciler.request("a mass deletion was allowed")
