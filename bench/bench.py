#!/usr/bin/env python3
"""redisrepl benchmark: prints figures, asserts nothing.

Starts the same sandbox as the demo (local Redis, remote Redis, Webdis, nginx
with mTLS on loopback), then for each scenario starts a fresh daemon under
twistd and measures it from the outside:

  burst    N distinct SETs at once: time until all are on the remote, keys/s
  latency  R SETs/s for T s: local write -> remote keyspace event, percentiles
  hot      100 keys x 200 overwrites: time until the remote holds every final
           value, time until the remote stops receiving writes, remote writes
  hash     2,000 HSETs over 100 hashes: time until both sides are equal
  reverse  (--rc) N SETs on the remote: time until all are local, keys/s
  outage   the hub down while 300,000 distinct keys change: peak RSS, then
           time to convergence once it is back (through the reconcile)
  bighash  a hash of 1,000,000 fields (a big key, copied in chunks), then one
           field of it changed: time until each is on the remote
  trickle  R SETs/s for T s over 1,000 keys, one-way and with --rc: daemon
           CPU per key, requests per key through the proxy (the scripts the
           remote Redis ran, the daemon's heartbeat checks included),
           latency percentiles
  sites    N new two-way sites start beside a hub holding K keys: fill rate
           per site; then a quiet phase: the hub Redis' CPU per reconcile
           per site, heartbeats a minute; then fan-out latency of single
           writes from one site to all others (bench/sites.py)
  checks   one two-way site of K keys checking every S seconds (a bucket
           check, its walks paced by --walk-share): latency of 100 live
           SETs/s to the hub while the checks run

and for each, the daemon's CPU seconds and peak RSS.

    ./dev.sh bench [--burst 20000] [--only burst,hot] [--rtt 40]

``--rtt MS`` (one or more, comma-separated) puts a delay proxy between the
daemon and nginx (bench/delay_proxy.py: that round trip added, as across a
WAN) and runs the burst, latency, trickle, reverse and sites scenarios at each.
"""

import argparse
import os
import platform
import statistics
import sys
import time

import redis

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.delay_proxy import DelayProxy  # noqa: E402
from bench.measure import Arrival, EventLog, paced, poll, proc_usage, write_latencies  # noqa: E402
from bench.sites import checking_site, many_sites  # noqa: E402
from redisrepl.sandbox import Sandbox  # noqa: E402
from tests.harness import Daemon  # noqa: E402


def count(r, pattern):
    return r.eval("return #redis.call('KEYS', ARGV[1])", 0, pattern)


_runs = iter(range(1, 1_000_000))


def run_scenario(lab, name, rc, body):
    """A fresh daemon on a namespace of its own (a scenario run twice, or at
    another round trip, starts from empty keys), measured around ``body``."""
    lab["remote"].config_set("notify-keyspace-events", "KA")
    ns = f"b{name}{next(_runs)}:"
    daemon = Daemon(lab["sandbox"], ns, rc=rc, extra=[*lab.get("extra", ()), *lab["daemon"]])
    daemon.wait_ready()
    daemon.wait_log("connections to the hub open")  # measured warm, not its TLS handshakes
    cpu0, _ = proc_usage(daemon.proc.pid)
    try:
        figures = body(ns)
    finally:
        cpu1, peak = proc_usage(daemon.proc.pid)
        daemon.stop()
    figures["cpu s"] = f"{cpu1 - cpu0:.2f}"
    figures["peak RSS MB"] = f"{peak:.0f}"
    return figures


def fill_and_wait(src, dst, ns, n):
    """N distinct SETs on ``src`` at once; figures once all are on ``dst``."""
    pipe = src.pipeline(transaction=False)
    for i in range(n):
        pipe.set(f"{ns}{i}", f"value-{i}")
    keys = [f"{ns}{i}" for i in range(n)]
    before = dst.dbsize()
    t0 = time.perf_counter()
    pipe.execute()
    t1 = Arrival(dst, keys, before).wait()
    return {"keys": n, "seconds": f"{t1 - t0:.2f}", "keys/s": f"{n / (t1 - t0):.0f}"}


def burst(lab, n):
    figures = run_scenario(lab, "burst", False, lambda ns: fill_and_wait(lab["local"], lab["remote"], ns, n))
    figures["cpu us/key"] = f"{float(figures['cpu s']) / n * 1e6:.0f}"
    return figures


def latency(lab, rate, seconds):
    return run_scenario(
        lab, "latency", False, lambda ns: write_latencies(lab["local"], lab["remote"], ns, rate, seconds)
    )


def hot(lab, keys=100, writes=200):
    local, remote = lab["local"], lab["remote"]

    def body(ns):
        events = EventLog(remote, f"__keyspace@0__:{ns}*")
        events.start()
        pipe = local.pipeline(transaction=False)
        for w in range(writes):
            for k in range(keys):
                pipe.set(f"{ns}{k}", f"v{w}")
        pipe.execute()
        last = time.perf_counter()
        final = f"v{writes - 1}".encode()
        t1 = poll(lambda: all(v == final for v in remote.mget([f"{ns}{k}" for k in range(keys)])))
        # quiet: no remote write for 1 s, counted from the final values at the
        # earliest (events already on their way must not be missed; with a
        # fast daemon, the last event seen could be an older heartbeat)
        poll(lambda: time.perf_counter() - max(t1, events.events[-1][0] if events.events else t1) > 1.0)
        events.stop()
        writes_seen = sum(1 for _, _, e in events.events if e == b"set")
        stopped = events.events[-1][0] if events.events else t1
        return {
            "local writes": keys * writes,
            "final values after s": f"{t1 - last:.2f}",
            "writing stopped after s": f"{stopped - last:.2f}",
            "remote writes": writes_seen,
        }

    return run_scenario(lab, "hot", False, body)


def hashes(lab, n=2000, keys=100):
    local, remote = lab["local"], lab["remote"]

    def body(ns):
        pipe = local.pipeline(transaction=False)
        for i in range(n):
            pipe.hset(f"{ns}{i % keys}", f"f{i}", f"v{i}")
        t0 = time.perf_counter()
        pipe.execute()
        expected = {k: local.hgetall(f"{ns}{k}") for k in range(keys)}
        t1 = poll(lambda: all(remote.hgetall(f"{ns}{k}") == v for k, v in expected.items()), interval=0.01)
        return {"hsets": n, "hashes": keys, "seconds": f"{t1 - t0:.2f}"}

    return run_scenario(lab, "hash", False, body)


def hub_requests(r):
    """Scripts the remote Redis ran so far: each is one request of the daemon
    through the proxy and Webdis (the commands inside a script are counted
    apart by Redis, and not here)."""
    stats = r.info("commandstats")
    return sum(stats.get(k, {}).get("calls", 0) for k in ("cmdstat_evalsha", "cmdstat_eval"))


def trickle(lab, rate, seconds, rc, keys=1000):
    """R SETs/s for T s cycling over ``keys`` keys: CPU and requests per key."""
    local, remote = lab["local"], lab["remote"]

    def body(ns):
        events = EventLog(remote, f"__keyspace@0__:{ns}*")
        events.start()
        requests0 = hub_requests(remote)
        sent = []
        n = int(rate * seconds)

        def write(i):
            key = f"{ns}{i % keys}"
            sent.append((key.encode(), time.perf_counter()))
            local.set(key, f"v{i}")

        paced(rate, n, write)
        final = {f"{ns}{i % keys}".encode(): f"v{i}".encode() for i in range(n)}
        poll(lambda: all(remote.get(k) == v for k, v in final.items()), interval=0.05)
        requests = hub_requests(remote) - requests0
        events.stop()
        # the i-th SET of a key is matched with that key's i-th set event on the hub
        arrivals = {}
        for t, k, e in events.events:
            if e == b"set":
                arrivals.setdefault(k, []).append(t)
        taken, lat = {}, []
        for k, t in sent:
            i = taken.get(k, 0)
            times = arrivals.get(k, [])
            while i < len(times) and times[i] < t:
                i += 1
            if i < len(times):
                lat.append((times[i] - t) * 1000)
                taken[k] = i + 1
        q = statistics.quantiles(lat, n=100) if len(lat) > 2 else [float("nan")] * 99
        return {
            "sets": n,
            "hub requests/key": f"{requests / n:.2f}",
            "p50 ms": f"{q[49]:.2f}",
            "p99 ms": f"{q[98]:.2f}",
        }

    figures = run_scenario(lab, "trickle-rc" if rc else "trickle", rc, body)
    figures["cpu ms/key"] = f"{float(figures['cpu s']) / figures['sets'] * 1e3:.2f}"
    return figures


def reverse(lab, n):
    return run_scenario(lab, "reverse", True, lambda ns: fill_and_wait(lab["remote"], lab["local"], ns, n))


def outage(lab, n):
    """The hub down while N distinct keys change: memory stays bounded (the
    queue overflows into a reconcile), then everything converges."""
    local, remote, sandbox = lab["local"], lab["remote"], lab["sandbox"]

    def body(ns):
        sandbox.stop_component("nginx")
        try:
            for start in range(0, n, 10000):
                pipe = local.pipeline(transaction=False)
                for i in range(start, min(n, start + 10000)):
                    pipe.set(f"{ns}{i}", f"value-{i}")
                pipe.execute()
            time.sleep(1)  # let the daemon take every event while the hub is down
        finally:
            sandbox.start_component("nginx")
        t0 = time.perf_counter()
        t1 = poll(lambda: count(remote, ns + "*") >= n, interval=0.2)
        return {"keys": n, "converged after hub back s": f"{t1 - t0:.2f}"}

    return run_scenario(lab, "outage", False, body)


def big_hash(lab, fields):
    """A hash of FIELDS fields (a big key: copied in chunks), then one field
    of it changed: time until the remote holds each."""
    local, remote = lab["local"], lab["remote"]

    def body(ns):
        key = ns + "h"
        t0 = time.perf_counter()
        for start in range(0, fields, 100_000):
            local.eval(
                "for i = ARGV[1], ARGV[2] do redis.call('HSET', KEYS[1], 'field:' .. i, 'value:' .. i) end",
                1,
                key,
                start,
                min(fields, start + 100_000) - 1,
            )
        t1 = poll(lambda: remote.hlen(key) >= fields, timeout=600, interval=0.1)
        local.hset(key, "field:7", "changed")
        t2 = time.perf_counter()
        t3 = poll(lambda: remote.hget(key, "field:7") == b"changed", timeout=600, interval=0.05)
        return {
            "fields": fields,
            "written and copied s": f"{t1 - t0:.2f}",
            "one field changed, copied again s": f"{t3 - t2:.2f}",
        }

    return run_scenario(lab, "bighash", False, body)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--burst", type=int, default=20000)
    parser.add_argument("--reverse", type=int, default=2000)
    parser.add_argument("--rate", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--outage", type=int, default=300000)
    parser.add_argument("--big-hash", type=int, default=1_000_000)
    parser.add_argument("--trickle-rate", type=int, default=200)
    parser.add_argument("--sites", type=int, default=4, help="sites of the sites scenario")
    parser.add_argument("--site-keys", type=int, default=20000, help="keys on the hub in the sites scenario")
    parser.add_argument("--quiet", type=float, default=30, help="seconds of the sites scenario's quiet phase")
    parser.add_argument("--site-interval", type=float, default=10, help="--reconcile-interval of the sites scenario")
    parser.add_argument("--check-keys", type=int, default=150000, help="keys of the checks scenario's site")
    parser.add_argument("--check-interval", type=float, default=5, help="--reconcile-interval of the checks scenario")
    parser.add_argument("--only", default="burst,latency,hot,hash,reverse,outage,bighash,trickle,sites,checks")
    parser.add_argument("--rtt", default="", help="round trips in ms to add, comma-separated (e.g. 10,40,100)")
    parser.add_argument("--daemon", default="", help="more options for every daemon (e.g. '--concurrency 8')")
    args = parser.parse_args()
    only = set(args.only.split(","))
    print(
        f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    with Sandbox() as sandbox:
        lab = {
            "sandbox": sandbox,
            "local": redis.Redis(port=sandbox.local_redis_port),
            "remote": redis.Redis(port=sandbox.remote_redis_port),
            "daemon": args.daemon.split(),
        }
        scenarios = [
            ("burst", lambda: burst(lab, args.burst)),
            ("latency", lambda: latency(lab, args.rate, args.seconds)),
            ("hot", lambda: hot(lab)),
            ("hash", lambda: hashes(lab)),
            ("reverse", lambda: reverse(lab, args.reverse)),
            ("outage", lambda: outage(lab, args.outage)),
            ("bighash", lambda: big_hash(lab, args.big_hash)),
            ("trickle", lambda: trickle(lab, args.trickle_rate, args.seconds, rc=False)),
            ("trickle", lambda: trickle(lab, args.trickle_rate, args.seconds, rc=True)),
            (
                "sites",
                lambda: many_sites(lab, next(_runs), args.sites, args.site_keys, args.quiet, args.site_interval),
            ),
            ("checks", lambda: checking_site(lab, next(_runs), args.check_keys, args.check_interval)),
        ]
        for name, run in scenarios:
            if name not in only:
                continue
            report(name, run)
        for rtt in [float(x) for x in args.rtt.split(",") if x]:
            with DelayProxy(sandbox.proxy_port, rtt / 1000) as proxy:
                lab["extra"] = ["--haddr", f"https://localhost:{proxy.port}{sandbox.path_prefix}"]
                for name, run in scenarios:
                    if name in only and name in ("burst", "latency", "trickle", "reverse", "sites"):
                        report(f"{name} @{rtt:.0f}ms", run)
                del lab["extra"]


def report(name, run):
    try:
        figures = run()
    except RuntimeError as e:
        figures = {"error": str(e)}
    print(f"{name:8} " + "  ".join(f"{k}: {v}" for k, v in figures.items()), flush=True)


if __name__ == "__main__":
    main()
