"""``twistd redisrepl``: build the service tree from the options (their
checked ``config``, and the ``runtime`` start-up prepared: redisrepl.options).

    local Redis --(keyspace events)--> LocalSource --\\
                                                     Router --> LocalStore / RemoteStore
    Webdis stream --(PSUBSCRIBE)-----> RemoteSource -/

Services stop one after the other, in the reverse order they were added,
each once the one before has finished: first the sources (no new events),
then the router (in-flight writes finish, within a bound, and the records of
what they copied are written), then the connections.
"""

import atexit
import gc
import os

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService, Service
from twisted.internet import endpoints
from twisted.internet.defer import succeed
from twisted.logger import Logger

from redisrepl import __version__, connections, logs
from redisrepl.big_keys import BigCopier
from redisrepl.bucket_check import BucketCheck
from redisrepl.comparison import Comparison, for_config
from redisrepl.config import Config
from redisrepl.connections import Reactor
from redisrepl.epochs import SideEpoch
from redisrepl.expected import ExpectedEvents
from redisrepl.health import Health
from redisrepl.local_source import LocalSource
from redisrepl.options import Options
from redisrepl.reconcile import Reconciler
from redisrepl.remote_source import RemoteSource
from redisrepl.router import Router, Side
from redisrepl.sides import LOCAL, REMOTE, short
from redisrepl.startup import Runtime
from redisrepl.stores import LocalStore, RemoteStore
from redisrepl.synced import SyncedTable
from redisrepl.watchdog import Watchdog
from redisrepl.window import Window

log = Logger()

#: Seconds the router may spend finishing in-flight writes at shutdown.
STOP_TIMEOUT = 5.0


class RouterService(Service):
    """Logs the effective configuration at start; drains the router at stop
    (the batches in flight, then the records of what they copied)."""

    def __init__(self, router: Router, summary: str):
        self.router = router
        self._summary = summary

    def startService(self) -> None:
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


def summary(config: Config, runtime: Runtime) -> str:
    """The effective configuration, without secrets."""
    parts = [
        f"hub={config.haddr}",
        f"local={config.raddr}",
        f"db={config.db}",
        f"namespace={short(config.namespace)}",
        f"two-way={config.rc}",
    ]
    if runtime.tls_policy is not None:
        parts += [f"cert={config.cert}", f"key={config.key}", f"ca={config.ca}"]
    if runtime.password:
        parts.append("local password=(set)")
    if config.username:
        parts.append(f"local user={config.username}")
    if config.site_name:
        parts.append(f"site={config.site_name.decode()}")
    return " ".join(parts)


#: Allocations between two collections of the youngest generation (Python's
#: default is 700): a burst allocates a few objects per key, most of them
#: freed by reference counting; collecting for cycles every 700 of them cost
#: about 6 % of the daemon's CPU in a burst of 40,000 keys.
GC_THRESHOLD = 50_000


def tune_gc() -> None:
    """The daemon's garbage collector: what exists once the service tree is
    built (modules, the tree) lives as long as the process, so it is left
    out of every collection (``gc.freeze``), and cycles are looked for every
    GC_THRESHOLD allocations. Memory stays bounded: cyclic garbage waits at
    most that many allocations."""
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_THRESHOLD, middle, old)


def makeService(options: Options, reactor: Reactor | None = None) -> MultiService:
    """twistd's entry point: the service tree of the checked options."""
    if options.config is None or options.runtime is None:
        raise ValueError("makeService needs options that were parsed (Options.parseOptions)")
    tree = service_tree(options.config, options.runtime, reactor)
    tune_gc()
    return tree


def service_tree(config: Config, runtime: Runtime, reactor: Reactor | None = None) -> MultiService:
    if reactor is None:
        from twisted.internet import reactor
    logs.keep_from(config.log_level)
    for warning in runtime.warnings:
        log.warn(warning.format, **warning.fields)
    if runtime.legacy_pass:
        log.warn(
            "-pass is deprecated: it puts the password where ps shows it (redisrepl moved it to its "
            "environment at once); use --password-file or $REDISREPL_PASSWORD"
        )
    top = OrderlyMultiService()
    hub = connections.remote_client(reactor, config, runtime)
    hub.setServiceParent(top)
    local_redis = connections.local_commands(reactor, config, runtime)
    local_redis.setServiceParent(top)

    names = config.names
    # The reconcile and the router call each other: the scheduler is made
    # first and runs the comparison made after the router (late-bound here,
    # the one place they are joined).
    comparison: Comparison
    reconciler = Reconciler(
        reactor,
        lambda reason, paced: comparison.run(reason, paced),
        interval=config.reconcile_interval,
        full_every=config.full_walk_interval,
    )
    epochs = {side: SideEpoch(side, reconciler.generation_changed) for side in (LOCAL, REMOTE)}
    local_store = LocalStore(local_redis.factory, reactor, names, big_items=config.big_key_items, epoch=epochs[LOCAL])
    remote_store = RemoteStore(hub.client, reactor, names, big_items=config.big_key_items, epoch=epochs[REMOTE])
    synced = SyncedTable(local_store, names, reactor)
    router = Router(
        reactor,
        Side(LOCAL, local_store, ExpectedEvents(reactor)),
        Side(REMOTE, remote_store, ExpectedEvents(reactor, events=config.rc)),
        config.namespace,
        window=Window(reactor, config.concurrency, config.max_concurrency),
        batch_size=config.batch,
        max_backlog=config.max_backlog,
        first=config.winner,
        big=BigCopier(reactor, names.meta),
        synced=synced,
        reconcile=reconciler,
    )
    RouterService(router, summary(config, runtime)).setServiceParent(top)
    comparison = for_config(config, router, local_store, remote_store, synced, epochs, reactor, reconciler.stats)
    if config.rc and config.reconcile_interval and config.full_walk_interval:
        # both sides hold the whole namespace: a periodic reconcile may be a bucket check
        reconciler.check = BucketCheck(
            router,
            local_store,
            remote_store,
            names,
            epochs,
            reactor,
            config.reconcile_interval,
            reconciler.stats,
            walk_share=config.walk_share,
        )
    reconciler.setServiceParent(top)

    def fatal(message):
        # twistd exits 0 after reactor.stop(); an init system must see a
        # failure, so exit 1 once twistd has cleaned up (pidfile, logs).
        atexit.register(os._exit, 1)
        if reactor.running:
            reactor.stop()

    local = LocalSource(
        local_redis.endpoint,
        router,
        config.db,
        config.namespace,
        local_redis.description,
        password=runtime.password,
        username=config.username,
        on_fatal=fatal,
    )
    local.setServiceParent(top)

    remote = None
    if config.rc:
        remote = RemoteSource(
            connections.remote_stream_http(reactor, runtime),
            hub.client,
            router,
            config.db,
            config.namespace,
            config.reserved_prefix,
            reactor,
            heartbeat_interval=config.heartbeat,
        )
        remote.setServiceParent(top)
    watchdog = Watchdog(
        config.heartbeat, reactor, {LOCAL: local_store, REMOTE: remote_store}, reconciler, names.allow_key, remote
    )
    watchdog.setServiceParent(top)

    if config.metrics_endpoint:
        from redisrepl.metrics import ReplicationCollector, make_site

        health = Health(reactor, router, local, remote, watchdog, reconciler, max_lag=max(3.0, 3 * config.heartbeat))
        site = make_site(ReplicationCollector(router, local, remote, reconciler), health)
        server = endpoints.serverFromString(reactor, config.metrics_endpoint)
        StreamServerEndpointService(server, site).setServiceParent(top)
    return top


__all__ = ["Options", "makeService"]
