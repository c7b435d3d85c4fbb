"""The hub's HTTP/1.1 client: a pool of persistent (HTTPS) connections to the
proxy, one request at a time on each, for the requests redisrepl sends (a
POST or a PUT whose body is in memory, a reply it reads whole).

Why not twisted.web's Agent: for these requests its generality is most of
their cost. Measured on the sandbox (one request after another, a warm
connection, the same TLS): 320-480 µs of CPU per request through Agent and
its pool, 110-130 µs through this client. At a steady trickle every change
is one request, so that difference is most of what a change costs. The
event stream (a long poll, redisrepl.remote_source) still goes through treq.

What a reply may be: a status line and headers (at most MAX_HEAD_BYTES), a
body with a Content-Length, chunked, or ended by closing the connection;
interim (1xx) replies are skipped. A reply that breaks these rules fails its
request (ResponseFailed) and the connection is closed. A connection is used
again only when the reply said it could be (HTTP/1.1 without
``Connection: close``, or HTTP/1.0 with ``keep-alive``) and its body ended
where it said.

Errors are those of twisted.web's client, so that callers tell them the same
way: ResponseNeverReceived when the connection ended before any byte of a
reply (StaleConnection, a subclass, when it had served replies before: a
pooled connection the proxy had just closed, which the caller may try
again), ResponseFailed when it ended in the middle of one, the endpoint's
own errors when no connection could be made.
"""

import re
from typing import Any, NamedTuple

from hyperlink import EncodedURL
from twisted.internet import endpoints
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol
from twisted.python.failure import Failure
from twisted.web.client import ResponseFailed, ResponseNeverReceived

from redisrepl.deadlines import Deadlines
from redisrepl.errors import RefusedError

log = Logger()

#: The most bytes of a reply's status line and headers.
MAX_HEAD_BYTES = 64 * 1024
#: The longest line of a chunked body's framing (a size and its extensions).
MAX_CHUNK_LINE = 1024
#: The most bytes of replies held at once, all requests together: past it,
#: the transfers of the replies still coming are paused until others end.
MAX_BUFFERED_BYTES = 48 * 1024 * 1024

_HEX_DIGITS = b"0123456789abcdefABCDEF"
_STATUS = re.compile(rb"HTTP/1\.([01]) (\d{3})(?: |$)")


class ReplyTooLarge(RefusedError):
    """The hub answered with more than a request's limit."""


class BadReply(Exception):
    """A reply that is not HTTP/1.x as this client reads it."""


class StaleConnection(ResponseNeverReceived):
    """A connection that had served replies before ended before any byte of
    this one: the proxy closed it while it was idle, most likely before it
    read the request. (A new connection that ends so is ResponseNeverReceived:
    the request may have been run.)"""


class Reply(NamedTuple):
    status: int
    body: bytes


class Budget:
    """Bytes of replies held at once, by every request of a pool: a reply
    that finds the budget spent pauses its transfer (TCP then holds the
    hub back) until replies that are whole leave. One reply always keeps
    reading (the one that took bytes last while no other was), so that a
    reply ends and gives its bytes back: replies never all wait on each
    other."""

    def __init__(self, limit: float = MAX_BUFFERED_BYTES):
        self.limit = limit
        self.used = 0
        self._paused: list[Any] = []  # oldest first
        self._reading: set[Any] = set()  # holding bytes, not paused

    def take(self, holder, size: int) -> None:
        self.used += size
        if holder in self._paused:
            return  # bytes that were already on their way
        self._reading.add(holder)
        if self.used > self.limit and len(self._reading) > 1:
            self._reading.discard(holder)
            self._paused.append(holder)
            holder.transport.pauseProducing()

    def give_back(self, holder, size: int) -> None:
        self.used -= size
        self._reading.discard(holder)
        if holder in self._paused:
            self._paused.remove(holder)  # ended (or was aborted) while paused
        while self._paused and (self.used <= self.limit or not self._reading):
            resumed = self._paused.pop(0)
            self._reading.add(resumed)
            resumed.transport.resumeProducing()


class _Head(NamedTuple):
    status: int
    keep_alive: bool
    length: int | None  # None: chunked or until the connection closes
    chunked: bool


def parse_head(head: bytes) -> _Head:
    """The status line and headers of a reply (without the blank line)."""
    lines = head.split(b"\r\n")
    match = _STATUS.match(lines[0])
    if match is None:
        raise BadReply(f"not an HTTP/1.x status line: {lines[0][:80]!r}")
    minor, status = match.group(1), int(match.group(2))
    length = None
    coded = chunked = False
    tokens: set[bytes] = set()
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep or not name or name != name.strip():
            raise BadReply(f"not a header line: {line[:80]!r}")
        name = name.lower()
        value = value.strip()
        if name == b"content-length":
            if not value.isdigit() or (length is not None and int(value) != length):
                raise BadReply(f"a bad Content-Length: {value[:40]!r}")
            length = int(value)
        elif name == b"transfer-encoding":
            # the last coding decides: chunked, or the body runs to the close
            coded = True
            chunked = value.lower().split(b",")[-1].strip() == b"chunked"
        elif name == b"connection":
            tokens.update(t.strip().lower() for t in value.split(b","))
    if coded:
        length = None  # a coding overrides a length
    if status in (204, 304):
        length, chunked = 0, False
    if minor == b"1":
        keep_alive = b"close" not in tokens
    else:
        keep_alive = b"keep-alive" in tokens and b"close" not in tokens
    if length is None and not chunked:
        keep_alive = False  # the body ends with the connection
    return _Head(status, keep_alive, length, chunked)


class HubConnection(Protocol):
    """One connection to the proxy: sends a request, reads its reply."""

    transport: Any  # the TLS (or TCP) transport, an ITransport with abortConnection

    def __init__(self, pool: "HubHTTP"):
        self._pool = pool
        self._pending: Deferred | None = None
        self._limit = 0
        self._buf = b""
        self._head: _Head | None = None
        self._parts: list[bytes] = []
        self._size = 0  # body bytes taken so far (and counted in the pool's budget)
        self._chunk_left = -1  # chunked: bytes left of the chunk; -1: a size line next; -2: trailers
        self._answered = False  # a byte of the current reply came
        self._served = 0  # replies read whole on this connection
        self.lost: Deferred = Deferred()

    def send(self, data: bytes, limit: int) -> Deferred:
        d: Deferred = Deferred(self._cancel)
        self._pending, self._limit = d, limit
        self._answered = False
        self.transport.write(data)
        return d

    def _cancel(self, d: Deferred) -> None:
        # the reply is no longer wanted: the connection cannot be used again
        self._pending = None
        self.transport.abortConnection()

    def dataReceived(self, data: bytes) -> None:
        if self._pending is None:
            # bytes nobody asked for: the connection cannot be trusted
            self.transport.abortConnection()
            return
        self._answered = True
        try:
            self._read(data)
        except BadReply as e:
            self._fail(ResponseFailed([Failure(e)]))
        except ReplyTooLarge as e:
            self._fail(e)

    def _read(self, data: bytes) -> None:
        if self._head is None:
            self._buf += data
            while self._head is None:
                end = self._buf.find(b"\r\n\r\n")
                if end < 0:
                    if len(self._buf) > MAX_HEAD_BYTES:
                        raise BadReply(f"a reply's headers longer than {MAX_HEAD_BYTES} bytes")
                    return
                if end > MAX_HEAD_BYTES:
                    raise BadReply(f"a reply's headers longer than {MAX_HEAD_BYTES} bytes")
                head = parse_head(self._buf[:end])
                self._buf = self._buf[end + 4 :]
                if 100 <= head.status < 200:
                    continue  # an interim reply: the real one follows
                if head.length is not None and head.length > self._limit:
                    raise ReplyTooLarge(
                        f"{self._pool.url} announced a reply of {head.length} bytes (more than {self._limit})",
                        "reply_too_large",
                    )
                self._head = head
            data, self._buf = self._buf, b""
        if self._head.chunked:
            self._chunks(data)
            return
        length = self._head.length
        if length is None:
            if data:
                self._take(data)
            return
        rest = length - self._size
        if data and rest:
            self._take(data[:rest])
        if self._size == length:
            self._complete(reusable=len(data) <= rest)  # bytes past the body: not to be trusted

    def _take(self, data: bytes) -> None:
        if self._size + len(data) > self._limit:
            raise ReplyTooLarge(f"{self._pool.url} sent a reply of more than {self._limit} bytes", "reply_too_large")
        self._size += len(data)
        self._parts.append(data)
        self._pool.budget.take(self, len(data))

    def _chunks(self, data: bytes) -> None:
        buf = self._buf + data
        pos = 0
        while pos < len(buf):
            if self._chunk_left > 0:
                piece = buf[pos : pos + self._chunk_left]
                self._take(piece)
                pos += len(piece)
                self._chunk_left -= len(piece)
                if self._chunk_left == 0:
                    self._chunk_left = -3  # the CRLF after the data
                continue
            end = buf.find(b"\r\n", pos)
            if end < 0:
                if len(buf) - pos > MAX_CHUNK_LINE:
                    raise BadReply("a chunked body's framing line is too long")
                break
            line, pos = buf[pos:end], end + 2
            if self._chunk_left == -3:
                if line:
                    raise BadReply("a chunk not followed by CRLF")
                self._chunk_left = -1
            elif self._chunk_left == -1:
                size = line.split(b";", 1)[0].strip()
                if not size or len(size) > 16 or size.strip(_HEX_DIGITS):
                    raise BadReply(f"a bad chunk size: {size[:20]!r}")
                self._chunk_left = int(size, 16)
                if self._chunk_left == 0:
                    self._chunk_left = -2
            elif line:  # -2: a trailer line, skipped
                if len(line) > MAX_HEAD_BYTES:
                    raise BadReply("a chunked body's trailer is too long")
            else:
                self._buf = b""
                self._complete(reusable=pos == len(buf))
                return
        self._buf = buf[pos:]

    def _complete(self, reusable: bool) -> None:
        assert self._head is not None
        d, body, status = self._pending, b"".join(self._parts), self._head.status
        keep = reusable and self._head.keep_alive
        self._reset()
        self._served += 1
        self._pool.done_with(self, keep)
        if d is not None:
            d.callback(Reply(status, body))

    def _reset(self) -> None:
        self._pending = None
        self._head = None
        self._buf = b""
        self._parts = []
        self._chunk_left = -1
        if self._size:
            size, self._size = self._size, 0
            self._pool.budget.give_back(self, size)

    def _fail(self, error: Exception, abort: bool = True) -> None:
        d = self._pending
        self._reset()
        if abort:
            self.transport.abortConnection()
        if d is not None:
            d.errback(error)

    def connectionLost(self, reason: Failure | None = None) -> None:
        reason = reason or Failure(ConnectionDone())
        self._pool.gone(self)
        if self._pending is not None:
            head = self._head
            if head is not None and head.length is None and not head.chunked and reason.check(ConnectionDone):
                self._complete(reusable=False)  # a body that ends with the connection, closed cleanly
            elif self._answered:
                self._fail(ResponseFailed([reason]), abort=False)
            elif self._served:
                self._fail(StaleConnection([reason]), abort=False)
            else:
                self._fail(ResponseNeverReceived([reason]), abort=False)
        self._reset()
        self.lost.callback(None)


class _Connections(Factory):
    """Builds the pool's connections, without a log line for each (as
    twisted's own factories write at info level when started and stopped)."""

    noisy = False

    def __init__(self, pool: "HubHTTP"):
        self._pool = pool

    def buildProtocol(self, addr) -> HubConnection:
        conn = HubConnection(self._pool)
        conn.factory = self
        return conn


class _WholeWritesTLS(TLSMemoryBIOFactory):
    """TLS that encrypts and sends each write at once. (Twisted's default
    holds small writes until the next reactor turn to send them together;
    a request here is always one write, so that only cost a timer and a
    turn of the reactor per request.)"""

    protocol = TLSMemoryBIOProtocol
    noisy = False


class _TLSEndpoint:
    """``endpoints.wrapClientTLS``, with _WholeWritesTLS."""

    def __init__(self, creator, endpoint):
        self._creator = creator
        self._endpoint = endpoint

    def connect(self, factory) -> Deferred:
        d = self._endpoint.connect(_WholeWritesTLS(self._creator, True, factory))
        return d.addCallback(lambda tls: tls.wrappedProtocol)


class HubHTTP:
    """The pool: a request takes an idle connection or opens one; a
    connection whose reply ended cleanly is kept for the next (at most
    ``max_idle`` of them, each closed after ``idle_timeout`` seconds
    unused). ``endpoint`` replaces the one made from ``haddr`` (tests)."""

    def __init__(self, reactor, haddr: str, policy, max_idle: int = 8, idle_timeout: float = 50, endpoint=None):
        self._reactor = reactor
        self.url = haddr.rstrip("/") + "/"
        uri = EncodedURL.from_text(self.url).to_uri()  # an international host name in IDNA
        host, port = uri.host, uri.port or 443  # (the options allow http and https only)
        self.path = ("/" + "/".join(uri.path)).encode("ascii")
        default = {"https": 443, "http": 80}.get(uri.scheme)
        netloc = host if port == default else f"{host}:{port}"
        self._host_header = b"Host: " + netloc.encode("ascii") + b"\r\n"
        if endpoint is None:
            endpoint = endpoints.HostnameEndpoint(reactor, host, port)
            if uri.scheme == "https":
                endpoint = _TLSEndpoint(policy.creatorForNetloc(host.encode("ascii"), port), endpoint)
        self._endpoint = endpoint
        self.max_idle = max_idle
        #: the idle connections, each closed after ``idle_timeout`` seconds unused
        self._idle_since = Deadlines(reactor, idle_timeout, self._expire)
        self.budget = Budget()
        self._factory = _Connections(self)
        self._idle: list[HubConnection] = []
        self._closing = False

    @property
    def idle_timeout(self) -> float:
        return self._idle_since.seconds

    def request(self, method: bytes, target: bytes, body: bytes, limit: int, fresh: bool = False) -> Deferred:
        """Send ``method target`` with ``body``; a Deferred of its Reply.
        Cancelling it closes the connection it was on. ``fresh``: on a new
        connection, not an idle one."""
        data = (
            method
            + b" "
            + target
            + b" HTTP/1.1\r\n"
            + self._host_header
            + b"Content-Type: application/octet-stream\r\nContent-Length: "
            + str(len(body)).encode("ascii")
            + b"\r\n\r\n"
            + body
        )
        if self._idle and not fresh:
            conn = self._idle.pop()  # the most recently used: the least likely to be closed by the proxy
            self._idle_since.end(conn)
            return conn.send(data, limit)
        d = self._endpoint.connect(self._factory)
        d.addCallback(HubConnection.send, data, limit)
        return d

    def done_with(self, conn: HubConnection, keep: bool) -> None:
        """A reply ended: keep the connection for the next request, or close it."""
        if keep and not self._closing and len(self._idle) < self.max_idle:
            self._idle_since.start(conn)
            self._idle.append(conn)
        else:
            conn.transport.loseConnection()

    def _expire(self, conn: HubConnection) -> None:
        if conn in self._idle:
            self._idle.remove(conn)
        conn.transport.loseConnection()

    def gone(self, conn: HubConnection) -> None:
        if conn in self._idle:
            self._idle.remove(conn)
            self._idle_since.end(conn)

    def close(self) -> Deferred:
        """Close the idle connections (the others close when their reply
        ends); fires once they are closed."""
        self._closing = True
        idle, self._idle = self._idle, []
        self._idle_since.stop()
        for conn in idle:
            conn.transport.loseConnection()
        return DeferredList([conn.lost for conn in idle])
