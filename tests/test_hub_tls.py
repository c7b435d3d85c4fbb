"""What a TLS failure towards the hub is reported as, against real TLS
servers on loopback (stdlib ``ssl`` in a thread) with certificates of the
kinds people get wrong: expired, not yet valid, from another CA, for
another host, a proxy stuck at TLS 1.1, a plain HTTP port."""

import socket
import ssl
import threading
import warnings

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.trial.unittest import TestCase

from redisrepl.errors import LinkError
from redisrepl.hub_http import HubHTTP
from redisrepl.sandbox import generate_certificates, write_server_certificate
from redisrepl.tls import load_policy
from redisrepl.webdis_client import WebdisClient


class _Server:
    """Accepts connections on loopback; ``context`` None answers plain HTTP."""

    def __init__(self, context):
        self.context = context
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            try:
                if self.context is not None:
                    conn = self.context.wrap_socket(conn, server_side=True)
                conn.recv(65536)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n+OK\r\n")
            except OSError:
                pass  # the client gave up on the handshake: that is the point
            finally:
                conn.close()

    def close(self):
        self.sock.close()


class HubTLSReportTests(TestCase):
    @classmethod
    def setUpClass(cls):
        import tempfile

        cls.dir = tempfile.mkdtemp(prefix="redisrepl-tls-")
        cls.paths = generate_certificates(cls.dir)
        cls.policy = load_policy(cls.paths["client_cert"], cls.paths["client_key"], cls.paths["ca_cert"])

    def server(self, cert, key, max_version=None):
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        if max_version is not None:
            try:
                context.set_ciphers("DEFAULT:@SECLEVEL=0")
                context.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
                with warnings.catch_warnings():  # (an old version on purpose: the proxy under test)
                    warnings.simplefilter("ignore", DeprecationWarning)
                    context.maximum_version = max_version
            except (ssl.SSLError, ValueError) as e:
                self.skipTest(f"this OpenSSL cannot serve an old TLS version: {e}")
        return self.plain(context)

    def plain(self, context=None):
        server = _Server(context)
        self.addCleanup(server.close)
        return server

    def dated(self, name, days, san=True):
        return write_server_certificate(
            f"{self.dir}/{name}", "localhost", self.paths["ca_cert"], self.paths["ca_key"], days, san
        )

    def client(self, server):
        client = WebdisClient(HubHTTP(reactor, f"https://localhost:{server.port}/redis", self.policy), reactor)
        self.addCleanup(client.close)
        return client

    async def failure_of(self, server):
        client = self.client(server)
        try:
            await client.command(b"PING")
        except LinkError as e:
            self.assertEqual(e.kind, "tls")
            return str(e)
        self.fail("the request succeeded")

    def report(self, server):
        return Deferred.fromCoroutine(self.failure_of(server))

    async def _good(self):
        server = self.server(self.paths["server_cert"], self.paths["server_key"])
        client = self.client(server)
        self.assertEqual(await client.command(b"PING"), b"OK")

    def test_a_good_proxy_is_trusted(self):
        return Deferred.fromCoroutine(self._good())

    def test_an_expired_certificate_is_named_with_its_date(self):
        server = self.server(*self.dated("expired", (-10, -2)))
        d = self.report(server)
        d.addCallback(
            lambda m: self.assertRegex(m, r"the proxy's certificate \(CN=localhost\) expired on 20\d\d-\d\d-\d\d")
        )
        return d

    def test_a_certificate_not_yet_valid_is_named_with_its_date(self):
        server = self.server(*self.dated("future", (2, 10)))
        d = self.report(server)
        d.addCallback(
            lambda m: self.assertRegex(
                m, r"the proxy's certificate \(CN=localhost\) is not valid before 20\d\d-\d\d-\d\d .*clock"
            )
        )
        return d

    def test_a_certificate_from_another_ca_is_not_signed_by_ca(self):
        server = self.server(self.paths["other_client_cert"], self.paths["other_client_key"])
        d = self.report(server)
        d.addCallback(lambda m: self.assertIn("issued by CN=redisrepl sandbox other CA, is not signed by --ca", m))
        return d

    def test_a_certificate_for_another_host_names_both(self):
        server = self.server(self.paths["wrong_host_cert"], self.paths["wrong_host_key"])
        d = self.report(server)
        d.addCallback(lambda m: self.assertIn("not valid for this host name, localhost (it names wrong.example)", m))
        return d

    def test_a_certificate_naming_the_host_only_in_its_cn_is_refused(self):
        # Twisted's own check lets such a certificate through (it logs the
        # error and keeps OpenSSL's verdict); redisrepl refuses it.
        server = self.server(*self.dated("cn-only", (-1, 10), san=False))
        d = self.report(server)
        d.addCallback(
            lambda m: self.assertIn("not valid for this host name, localhost (it names no subjectAltName)", m)
        )
        return d

    def test_a_client_certificate_used_as_the_server_one_is_named(self):
        server = self.server(self.paths["client_cert"], self.paths["client_key"])
        d = self.report(server)
        d.addCallback(lambda m: self.assertIn("is not meant for a TLS server", m))
        return d

    def test_a_proxy_stuck_at_tls_1_1_is_told_apart_from_a_certificate_problem(self):
        server = self.server(self.paths["server_cert"], self.paths["server_key"], max_version=ssl.TLSVersion.TLSv1_1)
        d = self.report(server)

        def check(message):
            self.assertIn("requires TLS 1.2 or newer", message)
            self.assertNotIn("--cert", message)

        d.addCallback(check)
        return d

    def test_a_plain_http_port_is_not_taken_for_tls(self):
        d = self.report(self.plain())
        d.addCallback(lambda m: self.assertIn("does not speak TLS", m))
        return d
