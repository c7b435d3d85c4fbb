"""The connections to both Redis servers, for the daemon and for ``verify``.

- The local Redis: a txredisapi factory for commands (bytes in, bytes out,
  reconnecting with backoff), owned by a ConnectionService. LocalStore
  writes and reads through it; LocalSource keeps its own subscriber
  connection to the same endpoint.
- The hub: a WebdisClient over a persistent pool of HTTPS connections with
  the client certificate, one per concurrent batch (``--concurrency`` opened
  at start, up to ``--max-concurrency`` kept; plus the watchdog's and the
  reconcile's, redisrepl.scan.LOOKAHEAD), owned by a PoolService; the ``--rc`` event stream has its
  own, non-persistent pool.
"""

from typing import Any, TypeAlias, cast

import txredisapi
from treq.client import HTTPClient
from twisted.application.service import Service
from twisted.internet import endpoints
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.web.client import Agent
from twisted.web.iweb import IAgent

from redisrepl.backoff import reconnect_backoff
from redisrepl.config import Config, LocalEndpoint
from redisrepl.hub_http import HubHTTP
from redisrepl.redis_protocol import CommandProtocol
from redisrepl.scan import LOOKAHEAD
from redisrepl.startup import Runtime
from redisrepl.tls import plain_policy
from redisrepl.webdis_client import QuietConnectionPool, WebdisClient

log = Logger()

#: The reactor: it connects (IReactorTCP, IReactorUNIX) and keeps time
#: (IReactorTime), zope interfaces all, so no type to mypy.
Reactor: TypeAlias = Any
#: Where the local Redis is reached (both provide IStreamClientEndpoint).
ClientEndpoint = endpoints.HostnameEndpoint | endpoints.UNIXClientEndpoint

#: Idle keep-alive connections are dropped before nginx's 75 s default does.
POOL_IDLE_TIMEOUT = 50


def retry_delay(factory: txredisapi.RedisFactory, attempt: int) -> float:
    """txredisapi's reconnect delay (ClientService's retry policy): quick
    first retries, so that a Redis that comes back is used within a second."""
    policy = reconnect_backoff()
    policy.failures = max(0, attempt - 1)
    return policy.next_delay()


def local_endpoint(reactor: Reactor, spec: LocalEndpoint) -> tuple[ClientEndpoint, str]:
    """The client endpoint of the local Redis, and how to name it in messages."""
    match spec:
        case (_, path):  # ("unix", path)
            return endpoints.UNIXClientEndpoint(reactor, path), path
        case (_, host, port):
            return endpoints.HostnameEndpoint(reactor, host, port, timeout=10), f"{host}:{port}"


def command_factory(db: int, password: str | None = None, username: str | None = None) -> txredisapi.RedisFactory:
    """A txredisapi factory for the local Redis' commands: bytes in, bytes out."""
    factory = txredisapi.RedisFactory(
        None,
        db,
        1,
        isLazy=True,
        charset=None,
        password=password,
        convertNumbers=False,
        username=username,
        replyTimeout=None,
    )
    factory.protocol = CommandProtocol
    factory.retryDelay = retry_delay.__get__(factory)
    return factory


class ConnectionService(Service):
    """Owns a txredisapi factory's connection: connect on start, close on stop."""

    def __init__(self, factory: txredisapi.RedisFactory, endpoint: ClientEndpoint, description: str):
        self.factory = factory
        self.endpoint = endpoint
        #: where it connects, for messages
        self.description = description

    def startService(self) -> None:
        super().startService()
        self.factory.startConnecting(self.endpoint)

    def stopService(self) -> Deferred:
        super().stopService()
        return self.factory.disconnect()


def local_commands(reactor: Reactor, config: Config, runtime: Runtime) -> ConnectionService:
    """The local Redis command connection (``.factory``), started with the service."""
    endpoint, where = local_endpoint(reactor, config.local_endpoint)
    return ConnectionService(command_factory(config.db, runtime.password, config.username), endpoint, where)


class PoolService(Service):
    """Owns the hub's WebdisClient and its connection pool: opens ``warm``
    connections at start (the batches in flight at once, so that the first
    writes and a trickle across a WAN do not wait for TLS handshakes), and
    closes the pool at stop."""

    def __init__(self, client: WebdisClient, pool: HubHTTP, warm: int = 0):
        self.client = client
        self._pool = pool
        self._warm = warm

    def startService(self) -> None:
        super().startService()
        if self._warm:
            # failures are the checks' to report (the watchdog, the first write)
            d = Deferred.fromCoroutine(self.client.warm(self._warm))
            d.addCallback(self._warmed)
            d.addErrback(lambda _: None)

    def _warmed(self, opened: int) -> None:
        if opened:
            log.info("{opened} connections to the hub open", opened=opened)

    def stopService(self) -> Deferred:
        super().stopService()
        return self.client.close()


def _policy(runtime: Runtime):
    return runtime.tls_policy or plain_policy()


def remote_client(reactor: Reactor, config: Config, runtime: Runtime) -> PoolService:
    """The hub's WebdisClient (``.client``) over a persistent pool that
    keeps a connection for each batch the window may have in flight
    (``--max-concurrency``); the service closes the pool at stop."""
    pool = HubHTTP(
        reactor,
        config.haddr,
        _policy(runtime),
        max_idle=config.max_concurrency + 1 + LOOKAHEAD,
        idle_timeout=POOL_IDLE_TIMEOUT,
    )
    return PoolService(WebdisClient(pool, reactor, db=config.db), pool, warm=config.concurrency)


def remote_stream_http(reactor: Reactor, runtime: Runtime) -> HTTPClient:
    """The HTTP client of the hub's event stream (``--rc``): its own
    connections, never pooled (a stream holds one for as long as it lasts)."""
    pool = QuietConnectionPool(reactor, persistent=False)
    agent = Agent(reactor, contextFactory=_policy(runtime), pool=pool)
    return HTTPClient(cast(IAgent, agent))  # Agent provides IAgent (a zope declaration mypy does not see)
