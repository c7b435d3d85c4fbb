"""WebdisClient with a stub Agent: replies, HTTP errors, stale connections,
bodies without a length (no reactor, no network)."""

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionDone, ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase
from twisted.web.client import ResponseDone, ResponseNeverReceived
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers

from redisrepl.errors import LinkError, RefusedError
from redisrepl.webdis_client import WebdisClient


class StubResponse:
    def __init__(self, code, body, complete=True):
        self.code = code
        self.phrase = b"OK"
        self.headers = Headers()
        self.length = len(body) if complete else None
        self._body = body
        self._end = ResponseDone() if complete else PotentialDataLoss()

    def deliverBody(self, protocol):
        transport = type("Transport", (), {"stopped": False})()
        transport.stopProducing = lambda: setattr(transport, "stopped", True)
        protocol.makeConnection(transport)
        protocol.dataReceived(self._body)
        if not transport.stopped:
            protocol.connectionLost(Failure(self._end))


class StubAgent:
    """Answers each request with the next of ``answers`` (a response or an exception)."""

    def __init__(self, *answers):
        self.answers = list(answers)
        self.requests = []

    def request(self, method, uri, headers=None, bodyProducer=None):
        body = []
        bodyProducer.startProducing(type("Consumer", (), {"write": lambda self, data: body.append(data)})())
        self.requests.append((method, uri, b"".join(body)))
        answer = self.answers.pop(0)
        return fail(answer) if isinstance(answer, Exception) else succeed(answer)


class WebdisClientTests(TestCase):
    def run_command(self, agent, *args):
        client = WebdisClient(agent, "https://hub.example.org/redis", Clock(), db=3)
        return Deferred.fromCoroutine(client.command(*args))

    def test_one_post_with_the_escaped_command_and_a_raw_reply(self):
        agent = StubAgent(StubResponse(200, b"$3\r\na\x00b\r\n"))
        self.assertEqual(self.successResultOf(self.run_command(agent, b"GET", b"k/1")), b"a\x00b")
        self.assertEqual(agent.requests, [(b"POST", b"https://hub.example.org/redis/", b"3/GET/k%2F1.raw")])

    def test_a_body_without_a_length_is_taken_when_it_is_whole(self):
        agent = StubAgent(StubResponse(200, b"+PONG\r\n", complete=False))
        self.assertEqual(self.successResultOf(self.run_command(agent, b"PING")), b"PONG")

    def test_a_cut_body_is_a_link_error(self):
        agent = StubAgent(StubResponse(200, b"$5\r\nab", complete=False))
        error = self.failureResultOf(self.run_command(agent, b"GET", b"k"), LinkError).value
        self.assertEqual(error.kind, "bad_reply")

    def test_403_is_a_refusal_and_503_a_link_error(self):
        refused = self.failureResultOf(
            self.run_command(StubAgent(StubResponse(403, b"forbidden")), b"FLUSHALL"), RefusedError
        ).value
        self.assertIn("HTTP 403", str(refused))
        down = self.failureResultOf(self.run_command(StubAgent(StubResponse(503, b"")), b"PING"), LinkError).value
        self.assertEqual(down.kind, "http_503")

    def test_a_proxys_error_page_is_told_by_its_title_with_a_hint(self):
        page = (
            b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
            b"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx/1.22.1</center>\r\n"
            b"</body>\r\n</html>\r\n"
        )
        down = self.failureResultOf(self.run_command(StubAgent(StubResponse(502, page)), b"PING"), LinkError).value
        self.assertEqual(
            str(down),
            "the proxy at https://hub.example.org/redis/ cannot reach Webdis (HTTP 502: is Webdis running?) "
            "502 Bad Gateway",
        )
        self.assertEqual(down.kind, "http_502")

    def test_a_stale_pooled_connection_is_tried_again_once(self):
        stale = ResponseNeverReceived([Failure(ConnectionDone())])
        agent = StubAgent(stale, StubResponse(200, b":1\r\n"))
        self.assertEqual(self.successResultOf(self.run_command(agent, b"EXISTS", b"k")), 1)
        agent = StubAgent(stale, stale)
        self.failureResultOf(self.run_command(agent, b"EXISTS", b"k"), LinkError)
        self.assertEqual(len(agent.requests), 2)

    def test_a_request_never_sent_is_tried_again_and_dns_failure_is_a_link_error(self):
        from twisted.internet.error import DNSLookupError
        from twisted.web.client import RequestNotSent

        agent = StubAgent(RequestNotSent(), StubResponse(200, b"+OK\r\n"))
        self.assertEqual(self.successResultOf(self.run_command(agent, b"PING")), b"OK")
        error = self.failureResultOf(
            self.run_command(StubAgent(DNSLookupError("hub.example.org")), b"PING"), LinkError
        ).value
        self.assertEqual(error.kind, "dns")

    def test_an_international_host_name_is_sent_in_idna(self):
        agent = StubAgent(StubResponse(200, b"+PONG\r\n"))
        client = WebdisClient(agent, "https://bücher.example/redis", Clock())
        self.successResultOf(Deferred.fromCoroutine(client.command(b"PING")))
        self.assertEqual(agent.requests[0][1], b"https://xn--bcher-kva.example/redis/")

    def test_a_reply_larger_than_the_limit_is_refused_before_it_is_held(self):
        client = WebdisClient(
            StubAgent(StubResponse(200, b"$20\r\n" + b"x" * 20 + b"\r\n")),
            "https://hub.example.org/redis",
            Clock(),
            max_reply=10,
        )
        failure = self.failureResultOf(Deferred.fromCoroutine(client.command(b"GET", b"k")), RefusedError)
        self.assertEqual(failure.value.kind, "reply_too_large")
        self.assertIn("more than 10", str(failure.value))
        # without a length, it is cut as it passes the limit
        client = WebdisClient(
            StubAgent(StubResponse(200, b"$20\r\n" + b"x" * 20 + b"\r\n", complete=False)),
            "https://hub.example.org/redis",
            Clock(),
            max_reply=10,
        )
        failure = self.failureResultOf(Deferred.fromCoroutine(client.command(b"GET", b"k")), RefusedError)
        self.assertEqual(failure.value.kind, "reply_too_large")

    def test_a_request_too_large_for_the_proxy_is_a_refusal_of_that_request(self):
        agent = StubAgent(StubResponse(413, b"<html>413 Request Entity Too Large</html>"))
        failure = self.failureResultOf(self.run_command(agent, b"SET", b"k", b"v"), RefusedError)
        self.assertEqual(failure.value.kind, "http_413")
        self.assertIn("client_max_body_size", str(failure.value))


class HeldAgent:
    """Holds every request until told: how many are open at once."""

    def __init__(self):
        self.held = []

    def request(self, method, uri, headers=None, bodyProducer=None):
        d = Deferred()
        self.held.append(d)
        return d


class WarmTests(TestCase):
    def test_warming_opens_that_many_requests_at_once_and_counts_the_answers(self):
        agent = HeldAgent()
        client = WebdisClient(agent, "https://hub.example.org/redis", Clock())
        d = Deferred.fromCoroutine(client.warm(4))
        self.assertEqual(len(agent.held), 4)  # all at once: four connections
        self.assertNoResult(d)
        for i, held in enumerate(agent.held):
            if i == 3:
                held.errback(ConnectionRefusedError())
            else:
                held.callback(StubResponse(200, b"+PONG\r\n"))
        self.assertEqual(self.successResultOf(d), 3)


class SilentBody(StubResponse):
    """Headers come, then the body never does."""

    def __init__(self):
        super().__init__(200, b"")
        self.protocol = None

    def deliverBody(self, protocol):
        self.protocol = protocol
        transport = type("Transport", (), {})()
        transport.stopProducing = lambda: None
        protocol.makeConnection(transport)


class TimeoutTests(TestCase):
    """One timer for the whole request: it cancels whichever step is under way."""

    def client(self, agent):
        self.clock = Clock()
        return WebdisClient(agent, "https://hub.example.org/redis", self.clock, timeout=30)

    def test_a_hub_that_never_answers_is_a_timeout_after_the_request_timeout(self):
        waiting = Deferred()
        agent = StubAgent()
        agent.request = lambda *a, **k: waiting
        d = Deferred.fromCoroutine(self.client(agent).command(b"PING"))
        self.clock.advance(29.9)
        self.assertNoResult(d)
        self.clock.advance(0.1)
        error = self.failureResultOf(d, LinkError).value
        self.assertEqual(error.kind, "timeout")
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_a_body_that_stops_coming_times_out_within_the_same_deadline(self):
        agent = StubAgent(SilentBody())
        self.clock = Clock()
        client = WebdisClient(agent, "https://hub.example.org/redis", self.clock, timeout=30)
        d = Deferred.fromCoroutine(client.command(b"PING"))
        self.clock.advance(30)
        self.assertEqual(self.failureResultOf(d, LinkError).value.kind, "timeout")

    def test_an_answer_in_time_leaves_no_timer_behind(self):
        agent = StubAgent(StubResponse(200, b"+PONG\r\n"))
        d = Deferred.fromCoroutine(self.client(agent).command(b"PING"))
        self.assertEqual(self.successResultOf(d), b"PONG")
        self.assertEqual(self.clock.getDelayedCalls(), [])
