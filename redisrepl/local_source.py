"""Local source: the local Redis' keyspace notifications, through txredisapi.

A SubscriberFactory keeps one connection up (txredisapi's ClientService does
the reconnecting, with backoff). On every connect, before subscribing, it
turns on the notification flags redisrepl needs (a restarted Redis has lost
them) and then ``PSUBSCRIBE __keyspace@<db>__:<namespace>*``. Each message
becomes ``router.changed("local", key, event)``.
"""

import txredisapi
from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from redisrepl import notify, resp, webdis
from redisrepl.backoff import reconnect_backoff
from redisrepl.errors import RefusedError
from redisrepl.sides import LOCAL

log = Logger()


class _FastReplies:
    """For txredisapi protocols: redisrepl's RESP parser underneath, so that a
    burst of events or a large reply is parsed in one pass rather than with a
    call per line (which was most of the cost of an event)."""

    def connectionMade(self):
        self._parser = resp.RespParser()
        return super().connectionMade()

    def dataReceived(self, data):
        try:
            replies, error = self._parser.feed(data), None
        except resp.ProtocolError as e:
            replies, error = e.replies, e
        for reply in replies:
            if isinstance(reply, resp.ErrorReply):
                reply = txredisapi.ResponseError(str(reply))
            self.replyReceived(reply)
        if error is not None:
            log.error("the local Redis sent something that is not the Redis protocol ({error}); "
                      "reconnecting", error=error)
            self.transport.loseConnection()


class _CommandProtocol(_FastReplies, txredisapi.RedisProtocol):
    def _build_command(self, *args, **kwargs):
        # the same bytes as txredisapi's, built in one join (a batch write
        # carries thousands of arguments)
        parts = [b"*%d\r\n" % len(args)]
        for arg in args:
            if not isinstance(arg, bytes):
                arg = self._encode_value(arg)
            parts.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
        return b"".join(parts)


class _KeyspaceProtocol(_FastReplies, txredisapi.SubscriberProtocol):
    def messageReceived(self, pattern, channel, message):
        self.factory.source.message(channel, message)


def _retry_delay(factory, attempt):
    """txredisapi's reconnect delay (ClientService's retry policy): quick
    first retries, so that a Redis that comes back is used within a second."""
    policy = reconnect_backoff()
    policy.failures = max(0, attempt - 1)
    return policy.next_delay()


class _KeyspaceFactory(txredisapi.SubscriberFactory):
    protocol = _KeyspaceProtocol
    retryDelay = _retry_delay

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


def command_factory(db, password=None, username=None):
    """A txredisapi factory for the local Redis' commands: bytes in, bytes out."""
    factory = txredisapi.RedisFactory(
        None, db, 1, isLazy=True, charset=None, password=password,
        convertNumbers=False, username=username, replyTimeout=None)
    factory.protocol = _CommandProtocol
    factory.retryDelay = _retry_delay.__get__(factory)
    return factory


class ConnectionService(Service):
    """Owns a txredisapi factory's connection: connect on start, close on stop."""

    def __init__(self, factory, endpoint, description):
        self.factory = factory
        self._endpoint = endpoint
        self._description = description

    def startService(self):
        super().startService()
        self.factory.startConnecting(self._endpoint)

    def stopService(self):
        super().stopService()
        return self.factory.disconnect()


class LocalSource(ConnectionService):
    """Feeds the router with the local Redis' keyspace events."""

    def __init__(self, endpoint, router, db, namespace, description,
                 password=None, username=None, on_fatal=None):
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
            lambda f: log.failure("local subscription failed", f))

    def disconnected(self):
        if self.up and self.running:
            log.warn("lost the local Redis at {where}; reconnecting", where=self._description)
        self.up = False

    async def _subscribe(self, protocol):
        try:
            added = await notify.ensure(_protocol_command(protocol), f"local Redis {self._description}")
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
            await notify.warn_if_evicting(_protocol_command(protocol), f"the local Redis {self._description}")
        await protocol.psubscribe([self._pattern])
        if self._ever_connected:
            self.reconnects += 1
        self._ever_connected = True
        self.up = True
        log.info("listening to local Redis {where}: {pattern}", where=self._description,
                 pattern=self._pattern.decode("utf-8", "replace"))
        self._router.subscribed(LOCAL)

    def message(self, channel, event):
        key = webdis.keyspace_key(channel, self._db)
        if key is not None:
            self._router.changed(LOCAL, key, event)


def _protocol_command(protocol):
    """``command(*args)`` on one connection, with Redis errors as RefusedError."""

    async def command(*args):
        try:
            return await protocol.execute_command(*args)
        except txredisapi.ResponseError as e:
            raise RefusedError(str(e.args[0] if e.args else e)) from None
    return command
