"""Commands to the remote Redis, as HTTPS requests to Webdis behind the proxy.

Every command goes as ``POST <haddr>/`` with the body ``[db/]CMD/arg/...raw``
(escaped by redisrepl.webdis), over the hub's pool of persistent connections
(redisrepl.hub_http), one request per connection at a time (Webdis may
answer pipelined requests out of order). Replies come back in the Redis
protocol, byte-exact.

The event stream, a long poll, uses treq (redisrepl.remote_source), with
``read_body`` below for its bounded reads.
"""

import re

from OpenSSL import SSL
from twisted.internet import error as neterror
from twisted.internet.defer import CancelledError, Deferred, DeferredList, TimeoutError
from twisted.internet.protocol import Protocol
from twisted.web import client
from twisted.web.client import ResponseDone, ResponseFailed
from twisted.web.http import PotentialDataLoss

from redisrepl import resp, webdis
from redisrepl.deadlines import Deadlines
from redisrepl.errors import LinkError, NoScriptError, RefusedError
from redisrepl.hub_http import BadReply, ReplyTooLarge, StaleConnection
from redisrepl.tls import HubCertificateError

#: Seconds a whole request (connect, send, reply) may take.
REQUEST_TIMEOUT = 30.0
#: The largest reply body taken from the hub. What redisrepl asks for stays
#: below (a read stops adding keys past 8 MB and reads no value of more than
#: 8 MB whole; bigger keys go in pieces of 4 MB): a hub that sends more is
#: refused before it is all held.
MAX_REPLY_BYTES = 24 * 1024 * 1024
#: Redis errors that mean "not now" rather than "never".
TRANSIENT_REDIS_ERRORS = (b"LOADING", b"BUSY", b"TRYAGAIN", b"MASTERDOWN", b"CLUSTERDOWN")


def describe_failure(exc, url=""):
    """A one-line, human explanation of why a request never got a reply."""
    reasons = getattr(exc, "reasons", None)
    if reasons:
        return "; ".join(describe_failure(r.value, url) for r in reasons)
    name = type(exc).__name__
    if isinstance(exc, SSL.Error):
        if exc.args and isinstance(exc.args[0], list):
            detail = ", ".join(e[2] for e in exc.args[0] if len(e) > 2)
        else:
            detail = str(exc)
        return f"TLS failed talking to {url}: {detail}{_tls_hint(detail)}"
    if isinstance(exc, HubCertificateError):
        return f"TLS failed talking to {url}: {exc}"
    if isinstance(exc, neterror.ConnectionRefusedError):
        return f"connection to {url} refused (is the proxy up?)"
    if isinstance(exc, neterror.DNSLookupError):
        return f"cannot resolve the host of {url}"
    if isinstance(exc, (neterror.TimeoutError, TimeoutError, CancelledError)):
        return f"no reply from {url} within {REQUEST_TIMEOUT:.0f}s"
    if isinstance(exc, neterror.ConnectionLost) or isinstance(exc, neterror.ConnectionDone):
        return f"connection to {url} lost before a reply"
    if isinstance(exc, BadReply):
        return f"the proxy at {url} answered with something that is not HTTP/1.1: {exc}"
    return f"{name} talking to {url}: {exc}"


def _tls_hint(detail):
    """What an OpenSSL error string means for the person running redisrepl."""
    if "protocol version" in detail or "unsupported protocol" in detail or "no protocols available" in detail:
        return (
            " (the proxy offers no TLS version redisrepl accepts: it requires TLS 1.2 "
            "or newer; enable TLS 1.2/1.3 on the proxy)"
        )
    if "wrong version number" in detail or "packet length too long" in detail or "http request" in detail:
        return " (the other end does not speak TLS: is --haddr an https:// address of the proxy?)"
    if "certificate verify failed" in detail:
        return " (the proxy's certificate is not signed by --ca)"
    if "alert" in detail:
        return " (the proxy refused the TLS handshake: check --cert/--key)"
    return ""


def failure_kind(exc):
    """A short label for why a request never got a reply (for metrics)."""
    reasons = getattr(exc, "reasons", None)
    if reasons:
        return failure_kind(reasons[0].value)
    if isinstance(exc, (SSL.Error, HubCertificateError)):
        return "tls"
    if isinstance(exc, neterror.ConnectionRefusedError):
        return "connection_refused"
    if isinstance(exc, neterror.DNSLookupError):
        return "dns"
    if isinstance(exc, (neterror.TimeoutError, TimeoutError, CancelledError)):
        return "timeout"
    if isinstance(exc, (neterror.ConnectionLost, neterror.ConnectionDone)):
        return "connection_lost"
    if isinstance(exc, BadReply):
        return "bad_reply"
    return "error"


# What a request can fail with before any answer: all of it is link trouble.
_NO_REPLY = (
    ResponseFailed,
    neterror.ConnectError,
    neterror.DNSLookupError,
    neterror.ConnectionLost,
    neterror.ConnectionDone,
    TimeoutError,
    CancelledError,
    SSL.Error,
    HubCertificateError,
)


def link_error(exc, url):
    return LinkError(describe_failure(exc, url), kind=failure_kind(exc))


_TITLE = re.compile(rb"<title>(.*?)</title>", re.I | re.S)


def _body_head(body, limit=200):
    """The start of an answer's body, on one line; of an HTML page (a
    proxy's error page), its title only."""
    title = _TITLE.search(body[:4096]) if body.lstrip()[:1] == b"<" else None
    if title is not None:
        body = title.group(1)
    text = body[:limit].decode("utf-8", "replace")
    return " ".join(text.split())


def classify_http(status, body, url):
    """The error for a non-200 answer: 403 is a refusal of this command, 413
    of this request's size, the rest are link trouble."""
    head = _body_head(body)
    kind = f"http_{status}"
    if status == 403:
        return RefusedError(f"Webdis at {url} refused the command (HTTP 403: a Webdis ACL?) {head}".rstrip(), kind)
    if status == 413:
        return RefusedError(
            f"the request was too large for {url} (HTTP 413: nginx's client_max_body_size "
            f"or Webdis' http_max_request_size)",
            kind,
        )
    if status == 400 and b"certificate" in body.lower():
        return LinkError(f"the proxy at {url} refused the client certificate (HTTP 400: {head})", kind)
    if status == 503:
        return LinkError(f"Webdis at {url} cannot reach its Redis (HTTP 503) {head}".rstrip(), kind)
    if status in (502, 504):
        return LinkError(
            f"the proxy at {url} cannot reach Webdis (HTTP {status}: is Webdis running?) {head}".rstrip(), kind
        )
    return LinkError(f"HTTP {status} from {url}: {head}", kind)


class QuietConnectionPool(client.HTTPConnectionPool):
    """A connection pool that does not log every connection it opens."""

    class _factory(client._HTTP11ClientFactory):
        noisy = False


class _BoundedBody(Protocol):
    """Collects a response body up to ``limit`` bytes; past it, stops the
    transfer and fails with ReplyTooLarge."""

    def __init__(self, limit, url):
        self.done = Deferred()
        self._limit = limit
        self._url = url
        self._parts = []
        self._size = 0

    def dataReceived(self, data):
        if self.done.called:
            return
        self._size += len(data)
        if self._size > self._limit:
            self.done.errback(
                ReplyTooLarge(f"{self._url} sent a reply of more than {self._limit} bytes", "reply_too_large")
            )
            self.transport.stopProducing()
            return
        self._parts.append(data)

    def connectionLost(self, reason):
        if self.done.called:
            return
        if reason.check(ResponseDone, PotentialDataLoss):
            # (PotentialDataLoss: a body without a length, ended by closing
            # the connection (HTTP/1.0): whole as far as HTTP can tell; the
            # Redis protocol parser checks it is whole)
            body = b"".join(self._parts)
            self._parts = []
            self.done.callback(body)
        else:
            self.done.errback(reason)


def read_body(response, limit, url):
    """The body of ``response``, refused (ReplyTooLarge) if longer than ``limit``."""
    if isinstance(response.length, int) and response.length > limit:
        response.deliverBody(Protocol())  # (discarded: the connection goes)
        raise ReplyTooLarge(
            f"{url} announced a reply of {response.length} bytes (more than {limit})", "reply_too_large"
        )
    body = _BoundedBody(limit, url)
    response.deliverBody(body)
    return body.done


#: The largest reply a warming PING may have.
WARM_REPLY_BYTES = 64


class WebdisClient:
    """Runs Redis commands on the remote side through Webdis, over ``http``
    (a redisrepl.hub_http.HubHTTP: its ``request``, ``url`` and ``path``)."""

    def __init__(self, http, clock, db=None, timeout=REQUEST_TIMEOUT, max_reply=MAX_REPLY_BYTES):
        self._http = http
        self._url = http.url
        self._path = http.path
        self._clock = clock
        self._db = db
        #: the requests under way, each cancelled after ``timeout`` seconds
        self._under_way = Deadlines(clock, timeout, Deferred.cancel)
        self._max_reply = max_reply

    @property
    def url(self):
        return self._url

    async def command(self, *args, limit=None):
        """Run one command; return its reply (bytes, int, None or list); a
        reply over ``limit`` bytes (default: the client's) is refused.

        Raises LinkError when the hub cannot be reached or answers with an
        error page, RefusedError when Webdis or Redis refuse the command.
        """
        body = webdis.command_bytes(args, db=self._db)
        # A pooled keep-alive connection the proxy has just closed fails
        # before any reply, most likely before the proxy read the request
        # (and every command redisrepl sends may run twice): one immediate
        # second try, on a new connection (the other idle ones may have been
        # closed with it).
        try:
            reply = await self._request(b"POST", self._path, body, limit)
        except StaleConnection:
            try:
                reply = await self._request(b"POST", self._path, body, limit, fresh=True)
            except _NO_REPLY as e:
                raise link_error(e, self._url) from None
        except _NO_REPLY as e:
            raise link_error(e, self._url) from None
        return self._reply(args, reply)

    def _reply(self, args, reply):
        """The reply of a command, or the error it tells."""
        status, content = reply
        if status != 200:
            raise classify_http(status, content, self._url)
        try:
            value = resp.parse_one(content)
        except resp.ProtocolError as e:
            raise LinkError(
                f"Webdis at {self._url} answered {args[0]!r} with "
                f"something that is not the Redis protocol ({e}): {_body_head(content)}",
                "bad_reply",
            ) from None
        if isinstance(value, resp.ErrorReply):
            if value.message.startswith(TRANSIENT_REDIS_ERRORS):
                raise LinkError(f"remote Redis: {value}", "redis_busy")
            if value.message.startswith(b"NOSCRIPT"):
                raise NoScriptError(f"remote Redis: {value}", "noscript")
            raise RefusedError(f"remote Redis refused {args[0]!r}: {value}", "redis_error")
        return value

    def close(self) -> Deferred:
        """At shutdown: close the pool (fires once its idle connections are
        closed). Requests still under way keep their timeouts; with none,
        the shared timer goes."""
        if not self._under_way:
            self._under_way.stop()
        return self._http.close()

    async def warm(self, connections: int) -> int:
        """Open ``connections`` pooled connections to the hub now (as many
        PINGs at once), so the first writes, and a trickle across a WAN, do
        not wait for TLS handshakes (two round trips each). Returns how many
        answered; failures are left to the checks that report them."""
        # a PING's reply is a few bytes: a hub answering more takes nothing
        # from the buffers the real requests share
        pings = [Deferred.fromCoroutine(self.command(b"PING", limit=WARM_REPLY_BYTES)) for _ in range(connections)]
        results = await DeferredList(pings, consumeErrors=True)
        return sum(1 for ok, _ in results if ok)

    async def put(self, args, body):
        """Run ``args`` with ``body`` as their last argument, sent as a PUT
        body: byte for byte, without escaping. The arguments go in the URL:
        they must be plain (a proxy may decode an escaped '/' or '+')."""
        target = self._path + webdis.command_bytes(args, db=self._db)
        try:
            reply = await self._request(b"PUT", target, body)
        except _NO_REPLY as e:
            raise link_error(e, self._url) from None
        return self._reply(args, reply)

    async def _request(self, method, target, body, limit=None, fresh=False):
        # one timeout for the whole request (connection, request, reply): it
        # cancels the request, which closes its connection (or stops the
        # connecting: ConnectingCancelledError)
        step = self._http.request(method, target, body, limit or self._max_reply, fresh)
        self._under_way.start(step)
        try:
            return await step
        except (CancelledError, neterror.ConnectingCancelledError):
            if self._under_way.end(step):
                raise  # cancelled by its caller
            raise TimeoutError(self._under_way.seconds, f"a request to {self._url}") from None
        finally:
            self._under_way.end(step)
