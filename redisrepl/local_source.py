"""Local source: the local Redis' keyspace notifications, through txredisapi.

A SubscriberFactory keeps one connection up (txredisapi's ClientService does
the reconnecting, with backoff). On every connect, before subscribing, it
turns on the notification flags redisrepl needs (a restarted Redis has lost
them) and then ``PSUBSCRIBE __keyspace@<db>__:<namespace>*``. Each message
becomes ``router.changed("local", key, event)``.
"""

import txredisapi
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from redisrepl import notify, webdis
from redisrepl.connections import ConnectionService, retry_delay
from redisrepl.errors import RefusedError
from redisrepl.redis_protocol import SubscriberProtocol
from redisrepl.sides import LOCAL

log = Logger()


class _KeyspaceProtocol(SubscriberProtocol):
    def messageReceived(self, pattern, channel, message):
        self.factory.source.message(channel, message)

    def messagesReceived(self, pattern, events):
        self.factory.source.messages(events)


class _KeyspaceFactory(txredisapi.SubscriberFactory):
    protocol = _KeyspaceProtocol
    retryDelay = retry_delay

    def __init__(self, source, password=None, username=None):
        super().__init__(isLazy=True)
        self.source = source
        self.charset = None
        self.convertNumbers = False
        self.password = password
        self.username = username

    def addConnection(self, conn):
        super().addConnection(conn)
        if conn in self.pool:
            self.source.connected(conn)

    def delConnection(self, conn):
        super().delConnection(conn)
        self.source.disconnected()


class LocalSource(ConnectionService):
    """Feeds the router with the local Redis' keyspace events."""

    def __init__(self, endpoint, router, db, namespace, description, password=None, username=None, on_fatal=None):
        super().__init__(_KeyspaceFactory(self, password, username), endpoint, description)
        self._router = router
        self._db = db
        self._pattern = webdis.keyspace_pattern(db, namespace)
        self._on_fatal = on_fatal
        self._ever_connected = False
        self.up = False
        self.reconnects = 0

    def connected(self, protocol):
        Deferred.fromCoroutine(self._subscribe(protocol)).addErrback(
            lambda f: log.failure("local subscription failed", f)
        )

    def disconnected(self):
        if self.up and self.running:
            log.warn("lost the local Redis at {where}; reconnecting", where=self.description)
        self.up = False

    async def _subscribe(self, protocol):
        try:
            added = await notify.ensure(_protocol_command(protocol), f"local Redis {self.description}")
        except notify.NotifyUnknown as e:
            log.warn("{error}", error=str(e))
        except notify.NotifyConfigError as e:
            if not self._ever_connected and self._on_fatal is not None:
                log.critical("{error}", error=str(e))
                self._on_fatal(str(e))
                return
            log.error("{error}", error=str(e))
        else:
            if added:
                log.info("turned on keyspace notification flags '{added}' on the local Redis", added=added)
        if not self._ever_connected:
            await notify.warn_if_evicting(_protocol_command(protocol), f"the local Redis {self.description}")
        protocol.fast_pattern = self._pattern
        await protocol.psubscribe([self._pattern])
        if self._ever_connected:
            self.reconnects += 1
        self._ever_connected = True
        self.up = True
        log.info(
            "listening to local Redis {where}: {pattern}",
            where=self.description,
            pattern=self._pattern.decode("utf-8", "replace"),
        )
        self._router.subscribed(LOCAL)

    def message(self, channel, event):
        self.messages(((channel, event),))

    def messages(self, events):
        """(channel, event) pairs of one read, in order: each key's change
        to the router."""
        self._router.changes(LOCAL, _keys(events, self._db))


def _keys(events, db):
    """(key, event) of each keyspace event of ``db`` among (channel, event)."""
    keyspace_key = webdis.keyspace_key
    for channel, event in events:
        key = keyspace_key(channel, db)
        if key is not None:
            yield key, event


def _protocol_command(protocol):
    """``command(*args)`` on one connection, with Redis errors as RefusedError."""

    async def command(*args):
        try:
            return await protocol.execute_command(*args)
        except txredisapi.ResponseError as e:
            raise RefusedError(str(e.args[0] if e.args else e)) from None

    return command
