"""``twistd redisrepl``: build the service tree from the options.

    local Redis --(keyspace events)--> LocalSource --\\
                                                     Router --> LocalStore / RemoteStore
    Webdis stream --(PSUBSCRIBE)-----> RemoteSource -/

Services stop one after the other, in the reverse order they were added,
each once the one before has finished: first the sources (no new events),
then the router (in-flight writes finish, within a bound, and the records of
what they copied are written), then the connections.
"""

import atexit
import os

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService, Service
from twisted.internet import endpoints
from twisted.internet.defer import succeed
from twisted.logger import Logger
from twisted.web.client import Agent
from treq.client import HTTPClient

from redisrepl import __version__
from redisrepl.big_keys import BigCopier
from redisrepl.comparison import Comparison
from redisrepl.epochs import SideEpoch
from redisrepl.expected import ExpectedEvents
from redisrepl.health import Health
from redisrepl.local_source import ConnectionService, LocalSource, command_factory
from redisrepl.options import Options
from redisrepl.reconcile import Reconciler
from redisrepl.remote_source import RemoteSource
from redisrepl.router import Router, Side
from redisrepl.sides import LOCAL, REMOTE
from redisrepl.stores import LocalStore, RemoteStore
from redisrepl.synced import SyncedTable
from redisrepl.tls import plain_policy
from redisrepl.watchdog import Watchdog
from redisrepl.webdis_client import QuietConnectionPool, WebdisClient

log = Logger()

#: Idle keep-alive connections are dropped before nginx's 75 s default does.
POOL_IDLE_TIMEOUT = 50
#: Seconds the router may spend finishing in-flight writes at shutdown.
STOP_TIMEOUT = 5.0


class RouterService(Service):
    """Logs the effective configuration at start; drains the router at stop
    (the batches in flight, then the records of what they copied)."""

    def __init__(self, router, summary):
        self.router = router
        self._summary = summary

    def startService(self):
        super().startService()
        log.info("redisrepl {version} starting: {summary}", version=__version__, summary=self._summary)

    def stopService(self):
        super().stopService()
        d = self.router.stop(STOP_TIMEOUT)
        if self.router.synced is not None:
            d.addCallback(lambda _: self.router.synced.flushed())
        return d


class OrderlyMultiService(MultiService):
    """A MultiService whose children stop one at a time, last added first,
    each once the previous one's stop has finished (MultiService stops them
    all at once: the local connection would close under the router's last
    records)."""

    def stopService(self):
        Service.stopService(self)
        d = succeed(None)
        for service in reversed(list(self)):
            d.addCallback(lambda _, service=service: service.stopService())
            d.addErrback(lambda f: log.failure("stopping a service failed", f))
        return d


class PoolService(Service):
    """Closes an HTTP connection pool at stop."""

    def __init__(self, pool):
        self._pool = pool

    def stopService(self):
        super().stopService()
        return self._pool.closeCachedConnections()


def local_endpoint(reactor, spec):
    if spec[0] == "unix":
        return endpoints.UNIXClientEndpoint(reactor, spec[1]), spec[1]
    _, host, port = spec
    return endpoints.HostnameEndpoint(reactor, host, port, timeout=10), f"{host}:{port}"


def summary(config):
    """The effective configuration, without secrets."""
    parts = [f"hub={config['haddr']}", f"local={config['raddr']}", f"db={config['db']}",
             f"namespace={config['namespace']!r}", f"two-way={bool(config['rc'])}"]
    if config["tls_policy"] is not None:
        parts += [f"cert={config['cert']}", f"key={config['key']}", f"ca={config['ca']}"]
    if config["password"]:
        parts.append("local password=(set)")
    if config["username"]:
        parts.append(f"local user={config['username']}")
    if config["site_name"]:
        parts.append(f"site={config['site_name'].decode()}")
    return " ".join(parts)


def makeService(config, reactor=None):
    if reactor is None:
        from twisted.internet import reactor
    for warning in config["warnings"]:
        log.warn("{warning}", warning=warning)
    if config["legacy_pass"]:
        log.warn("-pass is deprecated: it puts the password where ps shows it (redisrepl moved it to its "
                 "environment at once); use --password-file or $REDISREPL_PASSWORD")
    top = OrderlyMultiService()
    policy = config["tls_policy"] or plain_policy()

    pool = QuietConnectionPool(reactor, persistent=True)
    pool.maxPersistentPerHost = config["concurrency"] + 2
    pool.cachedConnectionTimeout = POOL_IDLE_TIMEOUT
    PoolService(pool).setServiceParent(top)
    client = WebdisClient(Agent(reactor, contextFactory=policy, pool=pool), config["haddr"], reactor,
                          db=config["db"])

    endpoint, where = local_endpoint(reactor, config["local_endpoint"])
    commands = command_factory(config["db"], config["password"], config["username"])
    ConnectionService(commands, endpoint, where).setServiceParent(top)

    big_items = config["big-key-items"]
    reserved, names = config["reserved_prefix"], config["names"]
    # The reconcile and the router call each other: the scheduler is made
    # first and runs the comparison made after the router (late-bound here,
    # the one place they are joined).
    reconciler = Reconciler(reactor, lambda reason: comparison.run(reason),
                            interval=config["reconcile-interval"])
    epochs = {side: SideEpoch(side, reconciler.generation_changed) for side in (LOCAL, REMOTE)}
    local_store = LocalStore(commands, reactor, names, big_items=big_items, epoch=epochs[LOCAL])
    remote_store = RemoteStore(client, reactor, names, big_items=big_items, epoch=epochs[REMOTE])
    synced = SyncedTable(local_store, names)
    router = Router(
        reactor,
        Side(LOCAL, local_store, ExpectedEvents(reactor)),
        Side(REMOTE, remote_store, ExpectedEvents(reactor, events=bool(config["rc"]))),
        config["namespace"],
        concurrency=config["concurrency"], batch_size=config["batch"],
        max_backlog=config["max-backlog"], first=config["winner"],
        big=BigCopier(reactor, names.meta), synced=synced, reconcile=reconciler)
    RouterService(router, summary(config)).setServiceParent(top)
    comparison = Comparison(router, local_store, remote_store, synced, epochs, names, reactor,
                            reconciler.stats, two_way=bool(config["rc"]), winner=config["winner"],
                            mirror=bool(config["mirror"]), max_delete=config["max_delete"],
                            wanted_site=config["site_name"])
    reconciler.setServiceParent(top)

    def fatal(message):
        # twistd exits 0 after reactor.stop(); an init system must see a
        # failure, so exit 1 once twistd has cleaned up (pidfile, logs).
        atexit.register(os._exit, 1)
        if reactor.running:
            reactor.stop()

    local = LocalSource(endpoint, router, config["db"], config["namespace"], where,
                        password=config["password"], username=config["username"],
                        on_fatal=fatal)
    local.setServiceParent(top)

    remote = None
    if config["rc"]:
        stream_pool = QuietConnectionPool(reactor, persistent=False)
        stream_http = HTTPClient(Agent(reactor, contextFactory=policy, pool=stream_pool))
        remote = RemoteSource(stream_http, client, router, config["db"], config["namespace"],
                              reserved, reactor, heartbeat_interval=config["heartbeat"])
        remote.setServiceParent(top)
    watchdog = Watchdog(config["heartbeat"], reactor, {LOCAL: local_store, REMOTE: remote_store},
                        reconciler, names.allow_key, remote)
    watchdog.setServiceParent(top)

    if config["metrics_endpoint"]:
        from redisrepl.metrics import ReplicationCollector, make_site
        health = Health(reactor, router, local, remote, watchdog, reconciler,
                        max_lag=max(3.0, 3 * config["heartbeat"]))
        site = make_site(ReplicationCollector(router, local, remote, reconciler), health)
        server = endpoints.serverFromString(reactor, config["metrics_endpoint"])
        StreamServerEndpointService(server, site).setServiceParent(top)
    return top


__all__ = ["Options", "makeService"]
