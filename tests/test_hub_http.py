"""The hub's HTTP/1.1 client on in-memory connections: how replies are read
(lengths, chunks, the close, interim replies, broken ones), when a
connection is used again, limits, cancelling, the idle pool; and a real
proxy on loopback that closes connections when it likes."""

import re

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.error import ConnectionDone, ConnectionLost, ConnectionRefusedError
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase
from twisted.web.client import ResponseFailed, ResponseNeverReceived

from redisrepl.hub_http import BadReply, Budget, HubHTTP, Reply, ReplyTooLarge, StaleConnection, parse_head
from redisrepl.webdis_client import WebdisClient

OK = b"HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Length: 5\r\nConnection: keep-alive\r\n\r\n+OK\r\n"


class Endpoint:
    """Connects at once to a StringTransport, or fails with ``refuse``."""

    def __init__(self):
        self.connections = []
        self.refuse = None

    def connect(self, factory):
        if self.refuse is not None:
            return fail(self.refuse)
        protocol = factory.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        self.connections.append(protocol)
        return succeed(protocol)


def lose(conn, reason=None):
    conn.connectionLost(Failure(reason or ConnectionDone()))


class HubHTTPTests(TestCase):
    def setUp(self):
        self.reactor = MemoryReactorClock()
        self.endpoint = Endpoint()
        self.http = HubHTTP(
            self.reactor,
            "https://hub.example.org:8443/redis",
            None,
            max_idle=2,
            idle_timeout=50,
            endpoint=self.endpoint,
        )

    def send(self, body=b"PING.raw", limit=1000):
        return self.http.request(b"POST", self.http.path, body, limit)

    def test_the_request_is_one_write_with_host_type_and_length(self):
        self.send(b"3/GET/k.raw")
        sent = self.endpoint.connections[0].transport.value()
        self.assertEqual(
            sent,
            b"POST /redis/ HTTP/1.1\r\nHost: hub.example.org:8443\r\n"
            b"Content-Type: application/octet-stream\r\nContent-Length: 11\r\n\r\n3/GET/k.raw",
        )

    def test_the_default_port_is_left_out_and_an_international_name_goes_in_idna(self):
        http = HubHTTP(self.reactor, "https://bücher.example/redis/", None, endpoint=self.endpoint)
        http.request(b"POST", http.path, b"PING", 10)
        self.assertIn(b"\r\nHost: xn--bcher-kva.example\r\n", self.endpoint.connections[0].transport.value())

    def test_a_reply_with_a_length_and_the_connection_is_used_again(self):
        d = self.send()
        conn = self.endpoint.connections[0]
        conn.dataReceived(OK)
        self.assertEqual(self.successResultOf(d), Reply(200, b"+OK\r\n"))
        conn.transport.clear()
        d = self.send()
        self.assertEqual(len(self.endpoint.connections), 1)
        for byte in OK:  # in any pieces
            conn.dataReceived(bytes([byte]))
        self.assertEqual(self.successResultOf(d), Reply(200, b"+OK\r\n"))

    def test_a_chunked_reply(self):
        d = self.send()
        conn = self.endpoint.connections[0]
        conn.dataReceived(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"4;ext=1\r\n$3\r\n\r\n5\r\nabc\r\n\r\n0\r\nTrailer: x\r\n\r\n"
        )
        self.assertEqual(self.successResultOf(d), Reply(200, b"$3\r\nabc\r\n"))
        self.assertFalse(conn.transport.disconnecting)
        self.send()
        self.assertEqual(len(self.endpoint.connections), 1)

    def test_a_reply_ended_by_the_close_is_whole_and_the_connection_not_kept(self):
        d = self.send()
        conn = self.endpoint.connections[0]
        conn.dataReceived(b"HTTP/1.0 200 OK\r\n\r\n+PO")
        conn.dataReceived(b"NG\r\n")
        self.assertNoResult(d)
        lose(conn)
        self.assertEqual(self.successResultOf(d), Reply(200, b"+PONG\r\n"))
        self.send()
        self.assertEqual(len(self.endpoint.connections), 2)

    def test_interim_replies_are_skipped(self):
        d = self.send()
        self.endpoint.connections[0].dataReceived(b"HTTP/1.1 100 Continue\r\n\r\n" + OK)
        self.assertEqual(self.successResultOf(d), Reply(200, b"+OK\r\n"))

    def test_connection_close_and_http_1_0_are_not_kept(self):
        for reply in (
            OK.replace(b"keep-alive", b"close"),
            OK.replace(b"HTTP/1.1", b"HTTP/1.0").replace(b"Connection: keep-alive\r\n", b""),
        ):
            d = self.send()
            conn = self.endpoint.connections[-1]
            conn.dataReceived(reply)
            self.successResultOf(d)
            self.assertTrue(conn.transport.disconnecting)
            lose(conn)
        self.assertEqual(self.http._idle, [])

    def test_http_1_0_with_keep_alive_is_kept(self):
        d = self.send()
        conn = self.endpoint.connections[0]
        conn.dataReceived(OK.replace(b"HTTP/1.1", b"HTTP/1.0"))
        self.successResultOf(d)
        self.assertFalse(conn.transport.disconnecting)

    def test_bytes_past_the_body_close_the_connection(self):
        d = self.send()
        conn = self.endpoint.connections[0]
        conn.dataReceived(OK + b"HTTP/1.1 200")
        self.assertEqual(self.successResultOf(d), Reply(200, b"+OK\r\n"))
        self.assertTrue(conn.transport.disconnecting)

    def test_bytes_nobody_asked_for_close_an_idle_connection(self):
        d = self.send()
        conn = self.endpoint.connections[0]
        conn.dataReceived(OK)
        self.successResultOf(d)
        conn.dataReceived(b"surprise")
        self.assertTrue(conn.transport.disconnecting)
        lose(conn)
        self.send()
        self.assertEqual(len(self.endpoint.connections), 2)

    def test_a_reply_over_the_limit_is_refused_announced_or_not(self):
        d = self.send(limit=4)
        self.endpoint.connections[0].dataReceived(OK)
        self.assertIn("announced a reply of 5 bytes", str(self.failureResultOf(d, ReplyTooLarge).value))
        d = self.send(limit=4)
        conn = self.endpoint.connections[1]
        conn.dataReceived(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n+OK\r\n\r\n")
        self.assertEqual(self.failureResultOf(d, ReplyTooLarge).value.kind, "reply_too_large")
        self.assertTrue(conn.transport.disconnecting)

    def test_broken_replies_fail_their_request_and_close(self):
        for reply in (
            b"SSH-2.0-OpenSSH\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0x1a\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabX\r\n",
            b"HTTP/1.1 200 OK\r\n" + b"X-Long: " + b"x" * 70000,
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"1" * 2000,
        ):
            d = self.send()
            conn = self.endpoint.connections[-1]
            conn.dataReceived(reply)
            failure = self.failureResultOf(d, ResponseFailed)
            self.assertIsInstance(failure.value.reasons[0].value, BadReply)
            self.assertTrue(conn.transport.disconnecting)
            lose(conn)

    def test_a_connection_lost_before_any_reply_is_never_received_after_part_of_one_failed(self):
        d = self.send()
        lose(self.endpoint.connections[0], ConnectionLost())
        failure = self.failureResultOf(d, ResponseNeverReceived)
        self.assertTrue(failure.value.reasons[0].check(ConnectionLost))
        d = self.send()
        self.endpoint.connections[1].dataReceived(OK[:30])
        lose(self.endpoint.connections[1], ConnectionLost())
        self.failureResultOf(d, ResponseFailed)

    def test_a_refused_connection_fails_the_request(self):
        self.endpoint.refuse = ConnectionRefusedError()
        self.failureResultOf(self.send(), ConnectionRefusedError)

    def test_cancelling_aborts_the_connection_and_it_is_not_used_again(self):
        d = self.send()
        conn = self.endpoint.connections[0]
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertTrue(conn.transport.disconnected)
        conn.dataReceived(OK)  # too late: nobody waits
        lose(conn)
        self.send()
        self.assertEqual(len(self.endpoint.connections), 2)

    def test_at_most_max_idle_connections_are_kept_and_each_for_the_idle_timeout(self):
        ds = [self.send() for _ in range(3)]
        conns = self.endpoint.connections
        for conn in conns:
            conn.dataReceived(OK)
        for d in ds:
            self.successResultOf(d)
        self.assertEqual([c.transport.disconnecting for c in conns], [False, False, True])
        self.reactor.advance(49)
        self.assertFalse(conns[0].transport.disconnecting)
        self.reactor.advance(1)
        self.assertTrue(conns[0].transport.disconnecting and conns[1].transport.disconnecting)
        for conn in conns:
            lose(conn)
        self.assertEqual(self.reactor.getDelayedCalls(), [])
        self.send()
        self.assertEqual(len(self.endpoint.connections), 4)

    def test_an_idle_connection_the_proxy_closes_leaves_the_pool(self):
        d = self.send()
        conn = self.endpoint.connections[0]
        conn.dataReceived(OK)
        self.successResultOf(d)
        lose(conn)
        self.send()
        self.assertEqual(len(self.endpoint.connections), 2)
        # its idle timeout is forgotten: the timer finds nothing to close
        self.reactor.advance(50)
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_close_closes_the_idle_connections_and_waits_for_them(self):
        d, busy = self.send(), self.send()
        conn = self.endpoint.connections[0]
        conn.dataReceived(OK)
        self.successResultOf(d)
        closed = self.http.close()
        self.assertTrue(conn.transport.disconnecting)
        self.assertNoResult(closed)
        lose(conn)
        self.successResultOf(closed)
        other = self.endpoint.connections[1]
        other.dataReceived(OK)  # a reply that ends after the close: its connection goes too
        self.successResultOf(busy)
        self.assertTrue(other.transport.disconnecting)

    def test_held_reply_bytes_pause_transfers_past_the_budget_but_one_always_reads(self):
        self.http.budget = Budget(limit=10)
        self.http.max_idle = 3
        first, second, third = self.send(), self.send(), self.send()
        a, b, c = self.endpoint.connections
        head = b"HTTP/1.1 200 OK\r\nContent-Length: 20\r\n\r\n"
        a.dataReceived(head + b"x" * 12)
        self.assertEqual(a.transport.producerState, "producing")  # alone: it reads on
        b.dataReceived(head + b"y" * 5)
        c.dataReceived(head + b"z" * 5)
        self.assertEqual((b.transport.producerState, c.transport.producerState), ("paused", "paused"))
        b.dataReceived(b"y")  # (a paused transfer still delivers what was on its way)
        self.assertEqual(b.transport.producerState, "paused")
        a.dataReceived(b"x" * 8)
        self.assertEqual(self.successResultOf(first), Reply(200, b"x" * 20))
        # still over the budget: only the oldest paused one reads on
        self.assertEqual((b.transport.producerState, c.transport.producerState), ("producing", "paused"))
        self.assertEqual(self.http.budget.used, 11)
        b.dataReceived(b"y" * 14)
        self.assertEqual(c.transport.producerState, "producing")
        c.dataReceived(b"z" * 15)
        self.successResultOf(second)
        self.successResultOf(third)
        self.assertEqual(self.http.budget.used, 0)

    def test_replies_that_together_pass_the_budget_never_all_wait(self):
        self.http.budget = Budget(limit=100)
        self.http.max_idle = 3
        ds = [self.send() for _ in range(3)]
        conns = self.endpoint.connections
        head = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n"
        for conn in conns:
            conn.dataReceived(head + b"x" * 60)
        # whatever is paused, something reads; feed whoever reads until all are whole
        for _ in range(10):
            for conn in conns:
                if conn.transport.producerState == "producing" and conn._head is not None:
                    conn.dataReceived(b"x" * 40)
        for d in ds:
            self.assertEqual(self.successResultOf(d), Reply(200, b"x" * 100))
        self.assertEqual(self.http.budget.used, 0)

    def test_a_body_ended_by_a_lost_connection_is_not_whole(self):
        d = self.send()
        conn = self.endpoint.connections[0]
        conn.dataReceived(b"HTTP/1.0 200 OK\r\n\r\n+PO")
        lose(conn, ConnectionLost())
        self.failureResultOf(d, ResponseFailed)

    def test_a_pooled_connection_lost_before_a_reply_is_stale_a_new_one_is_not(self):
        d = self.send()
        first = self.endpoint.connections[0]
        first.dataReceived(OK)
        self.successResultOf(d)
        d = self.send()
        lose(first)
        self.failureResultOf(d, StaleConnection)
        d = self.send()
        lose(self.endpoint.connections[1])
        failure = self.failureResultOf(d, ResponseNeverReceived)
        self.assertNotIsInstance(failure.value, StaleConnection)

    def test_a_fresh_request_opens_a_new_connection_beside_idle_ones(self):
        d = self.send()
        self.endpoint.connections[0].dataReceived(OK)
        self.successResultOf(d)
        self.http.request(b"POST", self.http.path, b"PING", 10, fresh=True)
        self.assertEqual(len(self.endpoint.connections), 2)
        self.assertEqual(len(self.http._idle), 1)


@given(
    body=st.binary(max_size=300),
    sizes=st.lists(st.integers(min_value=1, max_value=40), min_size=1, max_size=10),
    cut=st.integers(min_value=1, max_value=50),
)
def test_any_chunking_in_any_pieces_gives_the_body_back(body, sizes, cut):
    chunks, rest = [], body
    for size in sizes:
        if rest:
            chunks.append(rest[:size])
            rest = rest[size:]
    if rest:
        chunks.append(rest)
    wire = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    wire += b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"
    endpoint = Endpoint()
    http = HubHTTP(MemoryReactorClock(), "http://hub/", None, endpoint=endpoint)
    d = http.request(b"POST", b"/", b"x", 1000)
    for i in range(0, len(wire), cut):
        endpoint.connections[0].dataReceived(wire[i : i + cut])
    result = []
    d.addCallback(result.append)
    assert result == [Reply(200, body)]
    assert not endpoint.connections[0].transport.disconnecting


def test_parse_head_reads_what_decides_the_body():
    head = parse_head(b"HTTP/1.1 404 Not Found\r\ncontent-length:  7 \r\nConnection: Keep-Alive, Upgrade")
    assert (head.status, head.length, head.chunked, head.keep_alive) == (404, 7, False, True)
    # a coding overrides a length; one that is not chunked runs to the close
    head = parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\nTransfer-Encoding: gzip")
    assert (head.length, head.chunked, head.keep_alive) == (None, False, False)
    assert parse_head(b"HTTP/1.1 204 No Content").length == 0


class _ClosingProxy(Protocol):
    """Answers every request with +OK and, after every ``factory.close_every``
    of them, closes the connection without a word (no ``Connection: close``)."""

    def connectionMade(self):
        self.factory.connections += 1
        self.answered = 0
        self.buf = b""

    def dataReceived(self, data):
        self.buf += data
        while b"\r\n\r\n" in self.buf:
            head, _, rest = self.buf.partition(b"\r\n\r\n")
            length = int(re.search(rb"Content-Length: (\d+)", head).group(1))
            if len(rest) < length:
                return
            self.buf = rest[length:]
            self.answered += 1
            self.factory.requests += 1
            self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n+OK\r\n")
            if self.answered % self.factory.close_every == 0:
                self.transport.loseConnection()
                return


class ProxyClosingConnectionsTests(TestCase):
    """A real proxy on loopback that closes connections when it likes (as
    nginx does after ``keepalive_requests``): every command is answered,
    each sent once."""

    async def _commands(self, close_every, n):
        from twisted.internet import reactor

        factory = Factory.forProtocol(_ClosingProxy)
        factory.close_every, factory.connections, factory.requests = close_every, 0, 0
        factory.noisy = False
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        logged = []
        globalLogPublisher.addObserver(logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, logged.append)
        client = WebdisClient(HubHTTP(reactor, f"http://127.0.0.1:{port.getHost().port}/redis", None), reactor)
        self.addCleanup(client.close)
        for i in range(n):
            self.assertEqual(await client.command(b"SET", b"k%d" % i, b"v"), b"OK")
        self.assertEqual(factory.requests, n)
        self.assertEqual(factory.connections, -(-n // close_every))
        # a connection opened or closed is not worth a log line (twisted's
        # factories write two at info level)
        self.assertEqual([formatEvent(e) for e in logged if "actory" in formatEvent(e)], [])

    def test_a_proxy_closing_after_every_reply(self):
        return Deferred.fromCoroutine(self._commands(1, 20))

    def test_a_proxy_closing_after_every_third_reply(self):
        return Deferred.fromCoroutine(self._commands(3, 30))
