"""redisrepl.connections: the clients of both sides, built from a Config for
the daemon and for ``verify`` alike."""

import subprocess
import sys

from twisted.internet import endpoints
from twisted.internet.testing import MemoryReactorClock

from redisrepl import connections, scan
from redisrepl.config import validate
from redisrepl.redis_protocol import CommandProtocol
from redisrepl.startup import prepare
from tests.harness import ROOT

HTTP = {"haddr": "http://127.0.0.1:7379", "allow-http": 1, "nam": "ns:"}


def test_local_endpoint_tcp_and_unix():
    reactor = MemoryReactorClock()
    endpoint, where = connections.local_endpoint(reactor, ("tcp", "::1", 6380))
    assert isinstance(endpoint, endpoints.HostnameEndpoint) and where == "::1:6380"
    endpoint, where = connections.local_endpoint(reactor, ("unix", "/run/redis.sock"))
    assert isinstance(endpoint, endpoints.UNIXClientEndpoint) and where == "/run/redis.sock"


def test_local_commands_bytes_in_bytes_out_with_the_fast_protocol():
    config = validate({**HTTP, "db": "3", "username": "repl"}, {"REDISREPL_PASSWORD": "pw"})
    service = connections.local_commands(MemoryReactorClock(), config, prepare(config, {}))
    factory = service.factory
    assert factory.protocol is CommandProtocol
    assert (factory.dbid, factory.charset, factory.convertNumbers) == (3, None, False)
    assert (factory.password, factory.username) == ("pw", "repl")
    assert service.description == "127.0.0.1:6379"


def test_remote_client_pool_keeps_a_connection_for_every_slot_of_the_window():
    config = validate({**HTTP, "concurrency": "3", "max-concurrency": "7"})
    service = connections.remote_client(MemoryReactorClock(), config, prepare(config, {}))
    # the window's 7, the watchdog's check, the reconcile's requests in flight
    assert service._pool.max_idle == 7 + 1 + scan.LOOKAHEAD == 12
    assert service._pool.idle_timeout == connections.POOL_IDLE_TIMEOUT


def test_the_daemon_pool_is_warmed_to_the_concurrency_at_start():
    config = validate({**HTTP, "concurrency": "3"})
    service = connections.remote_client(MemoryReactorClock(), config, prepare(config, {}))
    asked = []

    async def warm(n):
        asked.append(n)
        return n

    service.client.warm = warm
    service.startService()
    assert asked == [3]


def test_verify_does_not_import_the_service_wiring():
    code = "import sys, redisrepl.verify; print(sorted(m for m in sys.modules if m.startswith('redisrepl.')))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    loaded = eval(out.stdout)
    assert "redisrepl.tap" not in loaded and "redisrepl.local_source" not in loaded
    assert "redisrepl.connections" in loaded
