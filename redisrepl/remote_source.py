"""Remote source (``--rc``): Webdis' chunked ``PSUBSCRIBE`` stream, kept alive.

One long-lived ``POST <haddr>/`` whose body is ``PSUBSCRIBE/<pattern>.raw``
(in a body, not the URL, so that no proxy decodes ``%2F`` or ``%2B`` in the
namespace on the way); the response is the Redis protocol, parsed
incrementally whatever the chunk boundaries. Each keyspace message becomes
``router.changed("remote", key, event)``. A message is small: one of more
than ``MAX_EVENT_BYTES`` ends the stream as malformed, so that a hub cannot
make the daemon hold what it likes.

When the stream ends or fails, the loop reconnects after a capped,
jittered backoff (quick at first, so a component that comes back is used
within a second). A heartbeat guards against a stream that stays open but
silent (Webdis keeps it open when it loses its Redis): the watchdog
(redisrepl.watchdog) writes this daemon's heartbeat key on the remote side
at every check, and the key's event must come back on the stream within
max(1 s, 10 round trips); if it does not, the stream is closed and opened
again, and the notification flags are set again (a restarted Redis has lost
them).
"""

import os

from twisted.application.service import Service
from twisted.internet import task
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.protocol import Protocol
from twisted.logger import Logger

from redisrepl import notify, resp, webdis
from redisrepl.backoff import reconnect_backoff
from redisrepl.errors import ReplicationError, StreamError
from redisrepl.outages import Outage
from redisrepl.sides import REMOTE, short
from redisrepl.webdis_client import REQUEST_TIMEOUT, ReplyTooLarge, classify_http, describe_failure, read_body

log = Logger()

#: The most bytes one message of the event stream may take (a keyspace
#: event of a key of up to about this length).
MAX_EVENT_BYTES = 64 * 1024
#: A stream must stay up this long before its reconnect backoff starts
#: again from the shortest delay (one that breaks at once backs off).
HEALTHY_AFTER = 30.0


class StreamProtocol(Protocol):
    """Receives the body of the PSUBSCRIBE response.

    ``on_event(channel, event)`` is called for each pmessage; ``finished``
    fires (with the reason) when the body ends, for whatever reason.
    A message that is not a pmessage or subscription confirmation ends the
    stream with a StreamError.
    """

    def __init__(self, on_event, on_subscribed):
        self._parser = resp.RespParser(max_bulk=MAX_EVENT_BYTES, max_reply=MAX_EVENT_BYTES)
        self._on_event = on_event
        self._on_subscribed = on_subscribed
        self.finished = Deferred()
        self.error = None

    def dataReceived(self, data):
        if self.error is not None:
            return
        try:
            messages, error = self._parser.feed(data), None
        except resp.ProtocolError as e:
            # events complete before the bad bytes still count
            messages, error = e.replies, e
        try:
            for message in messages:
                self._handle(message)
        except StreamError as e:
            error = e
        if error is not None:
            self.error = StreamError(f"malformed event stream: {error}")
            self.transport.stopProducing()

    def _handle(self, message):
        if isinstance(message, list) and len(message) == 4:
            # the usual case, checked without a generator: a pmessage
            kind, pattern, channel, event = message
            if (
                isinstance(kind, bytes)
                and isinstance(pattern, bytes)
                and isinstance(channel, bytes)
                and isinstance(event, bytes)
                and kind.lower() == b"pmessage"
            ):
                self._on_event(channel, event)
                return
        if not (isinstance(message, list) and message and all(isinstance(m, bytes) for m in message)):
            raise StreamError(f"unexpected message {message!r:.100}")
        kind = message[0].lower()
        if kind == b"pmessage" and len(message) == 4:
            self._on_event(message[2], message[3])
        elif kind == b"psubscribe" and len(message) == 3:
            self._on_subscribed()
        else:
            raise StreamError(f"unexpected message {message!r:.100}")

    def connectionLost(self, reason):
        self.finished.callback(self.error or reason.value)


class RemoteSource(Service):
    """Feeds the router with the remote Redis' keyspace events."""

    #: The heartbeat's event must come back within max(this, 10 round trips)
    #: of the answer to its write.
    HEARTBEAT_BOUND = 1.0

    def __init__(
        self,
        stream_http,
        client,
        router,
        db,
        namespace,
        reserved_prefix,
        clock,
        heartbeat_interval=1.0,
        heartbeat_bound=None,
        backoff=None,
        instance=None,
    ):
        self._http = stream_http
        self._client = client
        self._router = router
        self._db = db
        self._clock = clock
        pattern = webdis.keyspace_pattern(db, namespace)
        self._subscribe = webdis.command_path([b"PSUBSCRIBE", pattern]).encode("ascii")
        self._url = client.url
        self._pattern = pattern
        self.heartbeat_key = reserved_prefix + b"heartbeat:" + (instance or os.urandom(6).hex().encode())
        self.heartbeat_interval = heartbeat_interval
        self.heartbeat_bound = heartbeat_bound or self.HEARTBEAT_BOUND
        #: the heartbeat key outlives a few missed checks, then expires
        self.heartbeat_lifetime_ms = int(max(10.0, 4 * heartbeat_interval) * 1000)
        self._backoff = backoff or reconnect_backoff()
        self._outage = Outage(clock, log, "remote event stream")
        self._loop = None
        self._waiting = None  # the Deferred the loop is blocked on
        self._stream = None
        self._heartbeat_sent = None  # time of the oldest heartbeat not seen yet
        self._heartbeat_answered = None  # when its write was answered (it had happened by then)
        self._rtt = None  # smoothed round trip of the heartbeat's request
        self.up = self._ever_up = False
        self._up_since = None
        self.reconnects = 0
        self.last_heartbeat_rtt = None
        self.last_heartbeat_seen = None  # clock time the last heartbeat came back

    # -- service -------------------------------------------------------------

    def startService(self):
        super().startService()
        self._loop = Deferred.fromCoroutine(self._run())
        self._loop.addErrback(lambda f: log.failure("remote stream loop died", f))

    def stopService(self):
        super().stopService()
        self._close_stream()
        if self._waiting is not None:
            self._waiting.cancel()
        return self._loop

    # -- the reconnect loop --------------------------------------------------

    async def _run(self):
        attempt = 0
        while self.running:
            try:
                reason = await self._session()
            except CancelledError:
                if not self.running:
                    return
                reason = f"no answer from {self._client.url} within {REQUEST_TIMEOUT:.0f}s"
            except ReplicationError as e:
                reason = str(e)
            except notify.NotifyConfigError as e:
                reason = str(e)
            except Exception as e:
                reason = describe_failure(e, self._client.url)
            self._heartbeat_sent = self._heartbeat_answered = None
            was_up, self.up = self.up, False
            if not self.running:
                return
            if was_up:
                if self._clock.seconds() - self._up_since >= HEALTHY_AFTER:
                    self._backoff.reset()
                else:
                    # it came up and broke at once (garbage, a hub that drops
                    # it): no quick retries, back off
                    self._backoff.failures = max(self._backoff.failures, self._backoff.quick)
            delay = self._backoff.next_delay()
            attempt += 1
            self._outage.failed(reason, retry_in=delay)
            try:
                await self._wait(task.deferLater(self._clock, delay, lambda: None))
            except CancelledError:
                return

    def _wait(self, d):
        self._waiting = d

        def clear(result):
            self._waiting = None
            return result

        return d.addBoth(clear)

    async def _session(self):
        try:
            added = await self._wait(
                Deferred.fromCoroutine(notify.ensure(self._client.command, f"remote Redis behind {self._client.url}"))
            )
            if added:
                log.info("turned on keyspace notification flags '{added}' on the remote Redis", added=added)
        except notify.NotifyUnknown as e:
            log.warn("{error}", error=e, side=REMOTE)
        except notify.NotifyConfigError as e:
            log.error("{error}", error=e, side=REMOTE)
        d = self._http.post(
            self._url, data=self._subscribe, unbuffered=True, headers={b"Content-Type": [b"application/octet-stream"]}
        )
        d.addTimeout(REQUEST_TIMEOUT, self._clock)
        response = await self._wait(d)
        if response.code != 200:
            try:
                d = read_body(response, MAX_EVENT_BYTES, self._url)
                d.addTimeout(REQUEST_TIMEOUT, self._clock)
                body = await self._wait(d)
            except ReplyTooLarge:
                body = b""
            raise classify_http(response.code, body, self._url)
        self._stream = StreamProtocol(self._event, self._subscribed)
        response.deliverBody(self._stream)
        # a stream that never confirms its subscription is as dead as a silent one
        unconfirmed = self._clock.callLater(REQUEST_TIMEOUT, self._unconfirmed)
        try:
            reason = await self._wait(self._stream.finished)
        finally:
            if unconfirmed.active():
                unconfirmed.cancel()
        self._stream = None
        if isinstance(reason, StreamError):
            return str(reason)
        return f"stream ended ({describe_failure(reason, self._client.url)})"

    def _unconfirmed(self):
        if not self.up:
            log.warn("remote event stream: no subscription confirmation within {t:.0f}s", t=REQUEST_TIMEOUT)
            self._close_stream()

    def _close_stream(self):
        if self._stream is not None and self._stream.transport is not None:
            self._stream.transport.stopProducing()

    # -- events --------------------------------------------------------------

    def _subscribed(self):
        if self.up:
            return
        if self._ever_up:
            self.reconnects += 1
        self._ever_up = self.up = True
        self._outage.recovered()
        self._up_since = self._clock.seconds()
        self._heartbeat_sent = self._heartbeat_answered = None
        log.info(
            "listening to remote Redis events at {url} ({pattern})",
            url=self._url,
            pattern=self._pattern.decode("utf-8", "replace"),
        )
        self._router.subscribed(REMOTE)

    def _event(self, channel, event):
        key = webdis.keyspace_key(channel, self._db)
        if key is None:
            return
        now = self._clock.seconds()
        # any event proves the stream alive (another site's heartbeat too)
        self.last_heartbeat_seen = now
        if key == self.heartbeat_key:
            if self._heartbeat_sent is not None:
                self.last_heartbeat_rtt = now - self._heartbeat_sent
                self._heartbeat_sent = self._heartbeat_answered = None
            return
        self._router.changed(REMOTE, key, event)

    # -- heartbeat -----------------------------------------------------------

    def needs_heartbeat(self) -> bool:
        """Must the watchdog write this daemon's heartbeat key? Only when the
        stream has carried no event for a heartbeat interval (or one written
        has not come back yet): on a hub shared by many sites, the events of
        any of them (their heartbeats included) prove the stream alive, so
        the hub sees about one heartbeat per interval, not one per site, and
        the events of heartbeats grow with the sites, not their square."""
        if self._heartbeat_sent is not None or self.last_heartbeat_seen is None:
            return True
        return self._clock.seconds() - self.last_heartbeat_seen >= self.heartbeat_interval

    def beat_sending(self, when):
        """The watchdog writes the heartbeat key now (``when``): its event may
        come back before the answer to the write does. The oldest heartbeat
        written and answered stays the one waited for; one whose write was
        never answered (it failed) is replaced."""
        if self._heartbeat_sent is None or self._heartbeat_answered is None:
            self._heartbeat_sent, self._heartbeat_answered = when, None

    def beat_sent(self, rtt):
        """The write of the heartbeat key was answered after ``rtt`` s: it
        has happened, and its event is due from now on (a write that waited
        behind a hub busy with a walk is not a silent stream)."""
        self._rtt = rtt if self._rtt is None else 0.8 * self._rtt + 0.2 * rtt
        if self._heartbeat_sent is not None and self._heartbeat_answered is None:
            self._heartbeat_answered = self._clock.seconds()

    def check_heartbeat(self):
        """Reopen the stream if the oldest heartbeat not seen is overdue."""
        if self._heartbeat_sent is None or self._heartbeat_answered is None:
            return
        age = self._clock.seconds() - self._heartbeat_answered
        bound = max(self.heartbeat_bound, 10 * (self._rtt or 0.0))
        if age >= bound:
            log.warn(
                "remote event stream silent: heartbeat {key} not seen for {age:.1f}s; reopening it",
                key=short(self.heartbeat_key),
                age=age,
            )
            self._heartbeat_sent = self._heartbeat_answered = None
            self._close_stream()
