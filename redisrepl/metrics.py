"""``/metrics`` (Prometheus text format) and ``/healthz``, served by twisted.web.

The numbers are read from the router and the sources when scraped: nothing
is counted twice and the replication path carries no metrics code.
"""

import platform

from prometheus_client import ProcessCollector
from prometheus_client.core import CollectorRegistry, CounterMetricFamily, GaugeMetricFamily
from prometheus_client.twisted import MetricsResource
from twisted.copyright import version as twisted_version
from twisted.web.resource import Resource
from twisted.web.server import Site

from redisrepl import __version__
from redisrepl.sides import LOCAL, REMOTE

SIDES = (LOCAL, REMOTE)


#: Failure kinds reported from the start (at 0); others appear when they happen.
FAILURE_KINDS = (
    "bad_reply",
    "connection_lost",
    "connection_refused",
    "dns",
    "http_403",
    "http_413",
    "http_502",
    "http_503",
    "not_connected",
    "redis_busy",
    "redis_error",
    "reply_too_large",
    "timeout",
    "tls",
)


class ReplicationCollector:
    def __init__(self, router, local_source, remote_source=None, reconciler=None):
        self._reconciler = reconciler
        self._router = router
        self._local = local_source
        self._remote = remote_source

    def _per_side(self, family, values):
        for side in SIDES:
            family.add_metric([side], values.get(side, 0))
        return family

    def _side_gauge(self, name, text, value_of):
        """A gauge with one value per side, ``value_of(side)``."""
        return self._per_side(GaugeMetricFamily(name, text, labels=["side"]), {side: value_of(side) for side in SIDES})

    def collect(self):
        stats = self._router.stats
        build = GaugeMetricFamily(
            "redisrepl_build_info", "Always 1: the versions running, as labels", labels=["version", "python", "twisted"]
        )
        build.add_metric([__version__, platform.python_version(), twisted_version], 1)
        yield build
        yield self._per_side(
            CounterMetricFamily(
                "redisrepl_events", "Keyspace events received, by side they came from", labels=["side"]
            ),
            stats.events,
        )
        yield self._per_side(
            CounterMetricFamily(
                "redisrepl_echoes_suppressed", "Events recognised as echoes of redisrepl's own writes", labels=["side"]
            ),
            stats.echoes,
        )
        yield self._per_side(
            CounterMetricFamily("redisrepl_keys_written", "Keys written, by side written", labels=["side"]),
            stats.writes,
        )
        yield self._per_side(
            CounterMetricFamily(
                "redisrepl_bytes_written",
                "Bytes of keys and values written, by side written (big keys' chunks included)",
                labels=["side"],
            ),
            stats.bytes_written,
        )
        yield self._per_side(
            CounterMetricFamily(
                "redisrepl_write_requests", "Write requests (batches) that succeeded, by side written", labels=["side"]
            ),
            stats.requests,
        )
        failures = CounterMetricFamily(
            "redisrepl_request_failures",
            "Failed reads and writes, by side and kind "
            "(http_<status>, tls, connection_refused, timeout, redis_error, ...)",
            labels=["side", "kind"],
        )
        # the usual kinds are there from the start, at 0, so that a rate()
        # alert sees the first failure
        counts = {(side, kind): 0 for side in SIDES for kind in FAILURE_KINDS}
        counts.update(stats.failures)
        for (side, kind), n in sorted(counts.items()):
            failures.add_metric([side, kind], n)
        yield failures
        yield CounterMetricFamily(
            "redisrepl_changes_coalesced", "Events merged into a change already waiting", value=stats.coalesced
        )
        yield CounterMetricFamily(
            "redisrepl_writes_skipped",
            "Changes not written because the other side already held that state",
            value=stats.unchanged,
        )
        yield GaugeMetricFamily(
            "redisrepl_backlog_keys",
            "Keys waiting to be copied (queued, retried or in flight)",
            value=self._router.backlog,
        )
        yield GaugeMetricFamily(
            "redisrepl_keys_parked",
            "Keys a side refused (HTTP 403 or 413, a Redis error, a reply too large), each waiting for its own retry",
            value=self._router.parked,
        )
        yield self._side_gauge(
            "redisrepl_oldest_change_age_seconds",
            "Age of the oldest change made on the side and not yet copied to the other (0 when none waits)",
            self._router.lag,
        )
        yield self._side_gauge(
            "redisrepl_waiting_changes",
            "Changes made on the side and not yet copied to the other (queued, retried, parked or in flight)",
            self._router.waiting,
        )
        yield GaugeMetricFamily("redisrepl_batches_in_flight", "Batches under way now", value=self._router.in_flight)
        yield GaugeMetricFamily(
            "redisrepl_window_batches",
            "Batches allowed in flight now: --concurrency, more while keys wait for a slot, up to --max-concurrency",
            value=self._router.concurrency,
        )
        yield GaugeMetricFamily(
            "redisrepl_backlog_high_water_keys", "Most keys ever waiting at once", value=stats.backlog_high
        )
        last = GaugeMetricFamily(
            "redisrepl_last_write_timestamp_seconds",
            "Unix time of the last successful write, by side written",
            labels=["side"],
        )
        for side in SIDES:
            if side in stats.last_write:
                last.add_metric([side], stats.last_write[side])
        yield last
        up = GaugeMetricFamily("redisrepl_stream_up", "1 while the side's event stream is subscribed", labels=["side"])
        reconnects = CounterMetricFamily(
            "redisrepl_stream_reconnects", "Times a side's event stream was established again", labels=["side"]
        )
        for side, source in ((LOCAL, self._local), (REMOTE, self._remote)):
            if source is not None:
                up.add_metric([side], 1 if source.up else 0)
                reconnects.add_metric([side], source.reconnects)
        yield up
        yield reconnects
        yield CounterMetricFamily(
            "redisrepl_unsupported_changes",
            "Changes to keys of a type not replicated (module types)",
            value=stats.unsupported,
        )
        yield CounterMetricFamily(
            "redisrepl_big_keys_copied",
            "Big keys (more than --big-key-items items) copied in chunks",
            value=stats.big_copies,
        )
        yield CounterMetricFamily(
            "redisrepl_backlog_overflows",
            "Changes not queued because the queue was full (left to the reconcile)",
            value=stats.overflows,
        )
        yield self._per_side(
            CounterMetricFamily(
                "redisrepl_evictions", "Keys evicted by a side (not replicated as deletions)", labels=["side"]
            ),
            stats.evicted,
        )
        yield CounterMetricFamily(
            "redisrepl_copies_voided",
            "Reconcile copies dropped because their source lost or rolled back data since the reconcile decided",
            value=stats.voided,
        )
        yield CounterMetricFamily(
            "redisrepl_refills_refused",
            "Refills the hub refused because it held something as fresh",
            value=stats.refills_refused,
        )
        if self._reconciler is not None:
            r = self._reconciler.stats
            yield CounterMetricFamily("redisrepl_reconcile_runs", "Reconciles completed", value=r.runs)
            yield CounterMetricFamily(
                "redisrepl_reconcile_failures", "Reconciles that failed (retried)", value=r.failures
            )
            yield CounterMetricFamily(
                "redisrepl_reconcile_keys_compared", "Keys compared by reconciles", value=r.keys_compared
            )
            yield CounterMetricFamily(
                "redisrepl_reconcile_keys_fixed", "Keys found different by reconciles and copied", value=r.keys_fixed
            )
            yield GaugeMetricFamily(
                "redisrepl_reconcile_last_duration_seconds", "How long the last reconcile took", value=r.last_duration
            )
            yield CounterMetricFamily(
                "redisrepl_reconcile_hub_seconds",
                "The hub Redis' time this site's walks of it took (reconciles and shared walks)",
                value=r.hub_seconds,
            )
            if r.last_end:
                yield GaugeMetricFamily(
                    "redisrepl_reconcile_last_success_timestamp_seconds",
                    "Unix time the last reconcile ended without failing",
                    value=r.last_end,
                )
            yield GaugeMetricFamily(
                "redisrepl_reconcile_owed",
                "1 while a reconcile is owed (after an overflow or a failed run)",
                value=int(self._reconciler.dirty),
            )
            yield CounterMetricFamily(
                "redisrepl_reconcile_voided",
                "Reconciles stopped because a side lost or rolled back data during them",
                value=r.voided,
            )
            yield CounterMetricFamily(
                "redisrepl_reconcile_keys_refilled", "Keys refilled on the hub after it lost data", value=r.refilled
            )
            yield self._per_side(
                CounterMetricFamily(
                    "redisrepl_reconcile_keys_deleted",
                    "Keys deleted by reconciles, by side deleted on",
                    labels=["side"],
                ),
                r.deleted,
            )
            yield self._per_side(
                GaugeMetricFamily(
                    "redisrepl_reconcile_deletions_blocked",
                    "Deletions the last reconcile held back on a side "
                    "because they were more than --max-delete (0: none)",
                    labels=["side"],
                ),
                r.blocked,
            )
            yield CounterMetricFamily(
                "redisrepl_hub_keys_refused", "Keys a side listed outside the namespace, refused", value=r.refused_keys
            )
            check = self._reconciler.check
            if check is not None:
                c = check.stats
                checks = CounterMetricFamily(
                    "redisrepl_reconcile_checks",
                    "Periodic checks by bucket digests, by outcome (differed and inconclusive: a walk followed)",
                    labels=["outcome"],
                )
                for outcome in ("confirmed", "differed", "inconclusive", "waited"):
                    checks.add_metric([outcome], getattr(c, outcome))
                yield checks
                yield CounterMetricFamily(
                    "redisrepl_reconcile_shared_walks",
                    "Walks of the hub this site made and published for every site",
                    value=c.walks,
                )
                yield GaugeMetricFamily(
                    "redisrepl_reconcile_check_buckets_excluded",
                    "Buckets the last periodic check left to live events",
                    value=c.excluded,
                )
        if self._remote is not None and self._remote.last_heartbeat_rtt is not None:
            yield GaugeMetricFamily(
                "redisrepl_heartbeat_rtt_seconds",
                "Last heartbeat round trip: remote write to its event on the stream (the replication lag)",
                value=self._remote.last_heartbeat_rtt,
            )


class HealthResource(Resource):
    isLeaf = True

    def __init__(self, health):
        super().__init__()
        self._health = health

    def render_GET(self, request):
        problems = self._health.problems()
        request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
        request.setHeader(b"Cache-Control", b"no-store")
        if problems:
            request.setResponseCode(503)
            return ("\n".join(problems) + "\n").encode("utf-8")
        return b"ok\n"


def make_site(collector, health):
    registry = CollectorRegistry(auto_describe=True)
    registry.register(collector)
    ProcessCollector(registry=registry)  # process_*: CPU, memory, open files (Linux)
    root = Resource()
    root.putChild(b"metrics", MetricsResource(registry=registry))
    root.putChild(b"healthz", HealthResource(health))
    return _QuietSite(root)


class _QuietSite(Site):
    """No access log line for every scrape."""

    noisy = False

    def log(self, request):
        pass
