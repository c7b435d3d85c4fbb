"""WebdisClient over a stub of the hub's pool: replies, HTTP errors, stale
connections, limits, timeouts (no reactor, no network)."""

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionDone, ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase
from twisted.web.client import ResponseFailed, ResponseNeverReceived

from redisrepl.errors import LinkError, RefusedError, ReplicationError
from redisrepl.hub_http import BadReply, Reply, ReplyTooLarge, StaleConnection
from redisrepl.webdis_client import MAX_REPLY_BYTES, WebdisClient


class StubHTTP:
    """The hub's pool, answering each request with the next of ``answers``
    (a Reply, an exception, or a Deferred to hold it)."""

    url = "https://hub.example.org/redis/"
    path = b"/redis/"

    def __init__(self, *answers):
        self.answers = list(answers)
        self.requests = []
        self.fresh = []

    closed = False

    def close(self):
        self.closed = True
        return succeed(None)

    def request(self, method, target, body, limit, fresh=False):
        self.requests.append((method, target, body, limit))
        self.fresh.append(fresh)
        answer = self.answers.pop(0)
        if isinstance(answer, Deferred):
            return answer
        return fail(answer) if isinstance(answer, Exception) else succeed(answer)


class WebdisClientTests(TestCase):
    def run_command(self, http, *args):
        client = WebdisClient(http, Clock(), db=3)
        return Deferred.fromCoroutine(client.command(*args))

    def test_one_post_with_the_escaped_command_and_a_raw_reply(self):
        http = StubHTTP(Reply(200, b"$3\r\na\x00b\r\n"))
        self.assertEqual(self.successResultOf(self.run_command(http, b"GET", b"k/1")), b"a\x00b")
        self.assertEqual(http.requests, [(b"POST", b"/redis/", b"3/GET/k%2F1.raw", MAX_REPLY_BYTES)])

    def test_a_put_sends_its_last_argument_as_the_body(self):
        http = StubHTTP(Reply(200, b":5\r\n"))
        client = WebdisClient(http, Clock(), db=3)
        d = Deferred.fromCoroutine(client.put([b"SETRANGE", b"k", b"0"], b"a/b\x00."))
        self.assertEqual(self.successResultOf(d), 5)
        self.assertEqual(http.requests, [(b"PUT", b"/redis/3/SETRANGE/k/0.raw", b"a/b\x00.", MAX_REPLY_BYTES)])

    def test_a_cut_body_is_a_link_error(self):
        http = StubHTTP(Reply(200, b"$5\r\nab"))
        error = self.failureResultOf(self.run_command(http, b"GET", b"k"), LinkError).value
        self.assertEqual(error.kind, "bad_reply")

    def test_403_is_a_refusal_and_503_a_link_error(self):
        refused = self.failureResultOf(
            self.run_command(StubHTTP(Reply(403, b"forbidden")), b"FLUSHALL"), RefusedError
        ).value
        self.assertIn("HTTP 403", str(refused))
        down = self.failureResultOf(self.run_command(StubHTTP(Reply(503, b"")), b"PING"), LinkError).value
        self.assertEqual(down.kind, "http_503")

    def test_a_proxys_error_page_is_told_by_its_title_with_a_hint(self):
        page = (
            b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
            b"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx/1.22.1</center>\r\n"
            b"</body>\r\n</html>\r\n"
        )
        down = self.failureResultOf(self.run_command(StubHTTP(Reply(502, page)), b"PING"), LinkError).value
        self.assertEqual(
            str(down),
            "the proxy at https://hub.example.org/redis/ cannot reach Webdis (HTTP 502: is Webdis running?) "
            "502 Bad Gateway",
        )
        self.assertEqual(down.kind, "http_502")

    def test_a_stale_pooled_connection_is_tried_again_once_on_a_new_connection(self):
        stale = StaleConnection([Failure(ConnectionDone())])
        http = StubHTTP(stale, Reply(200, b":1\r\n"))
        self.assertEqual(self.successResultOf(self.run_command(http, b"EXISTS", b"k")), 1)
        self.assertEqual(http.fresh, [False, True])
        http = StubHTTP(stale, stale)
        self.failureResultOf(self.run_command(http, b"EXISTS", b"k"), LinkError)
        self.assertEqual(len(http.requests), 2)

    def test_a_new_connection_lost_before_a_reply_is_not_tried_again(self):
        # the proxy may have run the command: the batch's retry (with
        # backoff, after the key is read again) decides, not this one
        http = StubHTTP(ResponseNeverReceived([Failure(ConnectionDone())]), Reply(200, b":1\r\n"))
        error = self.failureResultOf(self.run_command(http, b"EXISTS", b"k"), LinkError).value
        self.assertEqual(error.kind, "connection_lost")
        self.assertEqual(len(http.requests), 1)

    def test_a_reply_cut_in_the_middle_is_not_tried_again_and_dns_failure_is_a_link_error(self):
        from twisted.internet.error import DNSLookupError

        http = StubHTTP(ResponseFailed([Failure(ConnectionDone())]), Reply(200, b"+OK\r\n"))
        self.assertEqual(self.failureResultOf(self.run_command(http, b"PING"), LinkError).value.kind, "connection_lost")
        self.assertEqual(len(http.requests), 1)
        error = self.failureResultOf(
            self.run_command(StubHTTP(DNSLookupError("hub.example.org")), b"PING"), LinkError
        ).value
        self.assertEqual(error.kind, "dns")

    def test_a_reply_that_is_not_http_is_a_bad_reply(self):
        http = StubHTTP(ResponseFailed([Failure(BadReply("not an HTTP/1.x status line: b'SSH-2.0'"))]))
        error = self.failureResultOf(self.run_command(http, b"PING"), LinkError).value
        self.assertEqual(error.kind, "bad_reply")
        self.assertEqual(
            str(error),
            "the proxy at https://hub.example.org/redis/ answered with something that is not HTTP/1.1: "
            "not an HTTP/1.x status line: b'SSH-2.0'",
        )

    def test_the_reply_limit_goes_with_the_request_and_a_refusal_is_told(self):
        http = StubHTTP(ReplyTooLarge("too large", "reply_too_large"))
        client = WebdisClient(http, Clock(), max_reply=10)
        failure = self.failureResultOf(Deferred.fromCoroutine(client.command(b"GET", b"k")), RefusedError)
        self.assertEqual(failure.value.kind, "reply_too_large")
        self.assertEqual(http.requests[0][3], 10)
        http = StubHTTP(Reply(200, b"+PONG\r\n"))
        self.successResultOf(Deferred.fromCoroutine(WebdisClient(http, Clock()).command(b"PING", limit=64)))
        self.assertEqual(http.requests[0][3], 64)

    def test_a_request_too_large_for_the_proxy_is_a_refusal_of_that_request(self):
        http = StubHTTP(Reply(413, b"<html>413 Request Entity Too Large</html>"))
        failure = self.failureResultOf(self.run_command(http, b"SET", b"k", b"v"), RefusedError)
        self.assertEqual(failure.value.kind, "http_413")
        self.assertIn("client_max_body_size", str(failure.value))


class WarmTests(TestCase):
    def test_warming_opens_that_many_requests_at_once_and_counts_the_answers(self):
        held = [Deferred() for _ in range(4)]
        http = StubHTTP(*held)
        client = WebdisClient(http, Clock())
        d = Deferred.fromCoroutine(client.warm(4))
        self.assertEqual(len(http.requests), 4)  # all at once: four connections
        self.assertNoResult(d)
        for i, answer in enumerate(held):
            if i == 3:
                answer.errback(ConnectionRefusedError())
            else:
                answer.callback(Reply(200, b"+PONG\r\n"))
        self.assertEqual(self.successResultOf(d), 3)


class TimeoutTests(TestCase):
    """One timer for the whole request: it cancels the request."""

    def client(self, http):
        self.clock = Clock()
        return WebdisClient(http, self.clock, timeout=30)

    def test_a_hub_that_never_answers_is_a_timeout_after_the_request_timeout(self):
        cancelled = []
        waiting = Deferred(cancelled.append)
        d = Deferred.fromCoroutine(self.client(StubHTTP(waiting)).command(b"PING"))
        self.clock.advance(29.9)
        self.assertNoResult(d)
        self.clock.advance(0.1)
        error = self.failureResultOf(d, LinkError).value
        self.assertEqual(error.kind, "timeout")
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(cancelled, [waiting])  # the request itself was cancelled

    def test_a_connection_that_never_opens_is_a_timeout_too(self):
        from twisted.internet.error import ConnectingCancelledError

        connecting = Deferred(lambda d: d.errback(ConnectingCancelledError(None)))
        d = Deferred.fromCoroutine(self.client(StubHTTP(connecting)).command(b"PING"))
        self.clock.advance(30)
        self.assertEqual(self.failureResultOf(d, LinkError).value.kind, "timeout")

    def test_an_answer_in_time_leaves_no_timer_behind(self):
        d = Deferred.fromCoroutine(self.client(StubHTTP(Reply(200, b"+PONG\r\n"))).command(b"PING"))
        self.assertEqual(self.successResultOf(d), b"PONG")
        self.clock.advance(30)  # the shared timer finds nothing due
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_each_request_has_its_whole_timeout_after_an_earlier_one_answered(self):
        waiting = Deferred()
        client = self.client(StubHTTP(Reply(200, b"+PONG\r\n"), waiting))
        self.successResultOf(Deferred.fromCoroutine(client.command(b"PING")))
        self.clock.advance(20)
        d = Deferred.fromCoroutine(client.command(b"PING"))
        self.clock.advance(29.9)  # 49.9 s: past the first request's deadline, not this one's
        self.assertNoResult(d)
        self.clock.advance(0.1)
        self.assertEqual(self.failureResultOf(d, LinkError).value.kind, "timeout")

    def test_close_keeps_the_timeouts_of_requests_under_way_and_leaves_no_timer_otherwise(self):
        http = StubHTTP(Deferred(), Reply(200, b"+PONG\r\n"))
        client = self.client(http)
        stuck = Deferred.fromCoroutine(client.command(b"PING"))
        self.successResultOf(client.close())
        self.assertTrue(http.closed)
        self.clock.advance(30)
        self.assertEqual(self.failureResultOf(stuck, LinkError).value.kind, "timeout")
        self.successResultOf(Deferred.fromCoroutine(client.command(b"PING")))
        self.successResultOf(client.close())
        self.assertEqual(self.clock.getDelayedCalls(), [])


class CrossedReplyTests(TestCase):
    """Webdis can hand a connection the reply meant for a client that went
    away mid-request: every script's reply ends with its call's fresh id,
    and one that is not the call's is a reply lost, never taken as its own."""

    def test_a_script_reply_must_end_with_the_calls_fresh_id(self):
        from redisrepl.scripts import CrossedReply, split_generation

        reply = [b"payload", b"gen", b"5", b"1", b"0", b"abc"]
        self.assertEqual(split_generation(reply, b"abc"), ([b"payload"], (b"gen", 5, 1, 0)))
        with self.assertRaises(CrossedReply):
            split_generation(reply, b"xyz")
        with self.assertRaises(ValueError):
            split_generation(reply[:-2], b"abc")  # (the layout before: no fresh id)

    def test_a_store_takes_anothers_reply_for_a_reply_lost(self):
        from redisrepl import scripts
        from redisrepl.namespace import Namespace
        from redisrepl.stores import RemoteStore

        other = b"*6\r\n$1\r\nx\r\n$3\r\ngen\r\n$1\r\n5\r\n$1\r\n1\r\n$1\r\n0\r\n$16\r\n0123456789abcdef\r\n"
        store = RemoteStore(WebdisClient(StubHTTP(Reply(200, other)), Clock()), Clock(), Namespace(b"ns:"))
        d = Deferred.fromCoroutine(store.run_script(scripts.CHECK, [], [b"", b"0", b""]))
        error = self.failureResultOf(d, LinkError).value
        self.assertEqual(error.kind, "crossed_reply")

    def test_a_noscript_answer_to_what_cannot_get_one_is_anothers_reply(self):
        """An EVAL is never answered NOSCRIPT, nor is the EVALSHA of a
        piece just cached: such an answer is another request's (its first
        EVALSHA), and the call's own reply went elsewhere."""
        from redisrepl import scripts
        from redisrepl.namespace import Namespace
        from redisrepl.stores import RemoteStore

        noscript = Reply(200, b"-NOSCRIPT No matching script. Please use EVAL.\r\n")
        cached = Reply(200, b"+" + scripts.PIECE.sha + b"\r\n")

        def store(*answers):
            return RemoteStore(WebdisClient(StubHTTP(*answers), Clock()), Clock(), Namespace(b"ns:"))

        script = store(noscript, noscript).run_script(scripts.CHECK, [], [b"", b"0", b""])
        piece = store(noscript, cached, noscript).write_piece(b"__redisrepl__-tmp-1", 0, b"x", 1000)
        cache = store(noscript, noscript).write_piece(b"__redisrepl__-tmp-1", 0, b"x", 1000)
        for call in (script, piece, cache):
            d = Deferred.fromCoroutine(call)
            self.assertEqual(self.failureResultOf(d, LinkError).value.kind, "crossed_reply")

    def test_a_read_of_redisrepls_own_key_is_a_script_bounded_by_its_size(self):
        from redisrepl.namespace import Namespace
        from redisrepl.stores import RemoteStore

        http = StubHTTP(Reply(200, b"*1\r\n$1\r\n0\r\n"))
        store = RemoteStore(WebdisClient(http, Clock()), Clock(), Namespace(b"ns:"))
        d = Deferred.fromCoroutine(store.get(b"__redisrepl__:{ns:}:site:a", limit=1234))
        self.assertEqual(self.failureResultOf(d, ReplicationError).value.kind, "bad_reply")  # no generation, no id
        method, body, limit = http.requests[0][0], http.requests[0][2], http.requests[0][3]
        self.assertEqual((method, limit), (b"POST", 1234))
        self.assertIn(b"EVALSHA/", body)

    def test_a_piece_of_a_big_string_takes_anothers_reply_for_a_reply_lost(self):
        """A piece's reply proves it ran (so before the copy's end) only if
        it is its own: a crossed one fails the copy, which starts again."""
        from redisrepl.namespace import Namespace
        from redisrepl.stores import RemoteStore

        def piece(reply):
            http = StubHTTP(Reply(200, reply))
            store = RemoteStore(WebdisClient(http, Clock()), Clock(), Namespace(b"ns:"))
            d = Deferred.fromCoroutine(store.write_piece(b"__redisrepl__-tmp-1", 0, b"\x00piece/+%", 1000))
            return http, d

        http, d = piece(b"*2\r\n$1\r\n1\r\n$16\r\n0123456789abcdef\r\n")
        self.assertEqual(self.failureResultOf(d, LinkError).value.kind, "crossed_reply")
        (method, target, body) = http.requests[0][:3]
        self.assertEqual((method, body), (b"PUT", b"\x00piece/+%"))  # the bytes as they are
        self.assertIn(b"/EVALSHA/", target)
        # another script's reply (longer, another id): crossed too, not a bad reply
        other_script = b"*6\r\n$1\r\nx\r\n$3\r\ngen\r\n$1\r\n5\r\n$1\r\n1\r\n$1\r\n0\r\n$16\r\n0123456789abcdef\r\n"
        self.assertEqual(self.failureResultOf(piece(other_script)[1], LinkError).value.kind, "crossed_reply")
        for other in (b":5\r\n", b"+OK\r\n"):  # a plain command's reply
            self.assertEqual(self.failureResultOf(piece(other)[1], ReplicationError).value.kind, "bad_reply")
