"""The many-sites scenario of bench/bench.py: N two-way sites on one hub.

1. **fill**: K keys are on the hub; N new sites (each its own Redis,
   certificate and ``twistd -n redisrepl --rc``) start at once, and each is
   timed until it holds all K (keys/s per site; the hub's Redis CPU during
   the fill);
2. **quiet**: nothing changes for ``quiet`` seconds while every daemon
   runs a reconcile every ``interval`` seconds: the hub Redis' CPU per
   reconcile per site (and per key), the local Redis' CPU per reconcile,
   how long a walk of the namespace takes, and the heartbeats the hub received and delivered (each heartbeat's
   event reaches every site's stream);
3. **fan-out**: single writes on the first site, one after another, each
   timed until every other site holds it (p50/p99).

Prints figures and asserts nothing, as the rest of the bench.
"""

import re
import statistics
import time

import redis

from bench.measure import poll, proc_usage, redis_cpu
from tests.harness import Daemon

#: The end of a reconcile run in a daemon's log (each run also logs its
#: start, "reconcile (...): comparing ...": counting both counted runs twice).
RUN_DONE = ") done: "
#: The duration at the end of a reconcile's "done" line.
WALK = re.compile(r"done: \d+ keys compared, \d+ differed and are being copied, in ([0-9.]+)s")


def script_calls(r):
    """Scripts a Redis server ran so far (EVAL and EVALSHA)."""
    stats = r.info("commandstats")
    return sum(stats.get(name, {}).get("calls", 0) for name in ("cmdstat_eval", "cmdstat_evalsha"))


def many_sites(lab, run_id, n_sites, keys, quiet, interval, writes=50):
    """Figures of the scenario (see the module)."""
    sandbox, remote = lab["sandbox"], lab["remote"]
    ns = f"bsites{run_id}:"
    sites = [sandbox.add_site(f"b{run_id}s{i}") for i in range(n_sites)]
    clients = [redis.Redis(port=site.redis_port) for site in sites]
    names = [f"{ns}{i}" for i in range(keys)]
    pipe = remote.pipeline(transaction=False)
    for i, name in enumerate(names):
        pipe.set(name, f"v{i}")
    pipe.execute()
    extra = [*lab.get("extra", ()), *lab["daemon"], "--reconcile-interval", str(interval)]
    figures = {"sites": n_sites, "keys": keys}
    daemons = []
    try:
        scripts0 = sum(script_calls(c) for c in clients)
        hub0, t0 = redis_cpu(remote), time.perf_counter()
        daemons = [Daemon(sandbox, ns, rc=True, extra=extra, site=site) for site in sites]

        def filled(c):
            return lambda: sum(c.exists(*names[i : i + 5000]) for i in range(0, keys, 5000)) == keys

        fill_times = [poll(filled(c), timeout=600) - t0 for c in clients]
        figures["fill s (slowest)"] = f"{max(fill_times):.2f}"
        figures["fill keys/s per site"] = f"{keys / max(fill_times):.0f}"
        figures["hub cpu s during fill"] = f"{redis_cpu(remote) - hub0:.2f}"
        calls = sum(script_calls(c) for c in clients) - scripts0
        figures["local script calls per key filled"] = f"{calls / (keys * n_sites):.4f}"
        for d in daemons:
            d.wait_log("connections to the hub open")

        # quiet: only reconciles and heartbeats
        runs0 = [d.log().count(RUN_DONE) for d in daemons]
        local0 = [redis_cpu(c) for c in clients]
        beats = remote.pubsub()
        beats.psubscribe(f"__keyspace@0__:{ns}__redisrepl__:heartbeat:*")
        hub0, started, seen = redis_cpu(remote), time.perf_counter(), 0
        while time.perf_counter() - started < quiet:  # a measurement window
            message = beats.get_message(timeout=0.1)
            if message is not None and message["type"] == "pmessage" and message["data"] == b"set":
                seen += 1
        elapsed = time.perf_counter() - started
        hub_cpu = redis_cpu(remote) - hub0
        beats.close()
        runs = sum(d.log().count(RUN_DONE) for d in daemons) - sum(runs0)
        local_cpu = sum(redis_cpu(c) for c in clients) - sum(local0)
        figures["reconciles"] = runs
        if runs:
            figures["hub cpu ms per reconcile per site"] = f"{hub_cpu / runs * 1000:.1f}"
            figures["hub cpu us per key per reconcile"] = f"{hub_cpu / runs / keys * 1e6:.2f}"
            figures["local cpu ms per reconcile"] = f"{local_cpu / runs * 1000:.1f}"
            # how long a walk of the namespace takes (the runs' own "done: ... in X s")
            walks = [float(m) for d in daemons for m in WALK.findall(d.log())[-runs:]]
            if walks:
                figures["reconcile walk s (median)"] = f"{statistics.median(walks):.2f}"
        figures["heartbeats/min"] = f"{seen * 60 / elapsed:.0f}"
        figures["heartbeat events delivered/min"] = f"{seen * n_sites * 60 / elapsed:.0f}"

        # fan-out: a write on the first site, until every other site has it
        latencies, others = [], clients[1:]
        for i in range(writes if others else 0):
            key = f"{ns}fan{i}"
            start = time.perf_counter()
            clients[0].set(key, "x")
            poll(lambda key=key: all(c.exists(key) for c in others), timeout=30, interval=0.0005)
            latencies.append((time.perf_counter() - start) * 1000)
        if len(latencies) >= 2:
            q = statistics.quantiles(latencies, n=100)
            figures["fan-out p50 ms"] = f"{q[49]:.1f}"
            figures["fan-out p99 ms"] = f"{q[98]:.1f}"
        cpu = sum(proc_usage(d.proc.pid)[0] for d in daemons)
        figures["daemons cpu s"] = f"{cpu:.2f}"
    finally:
        for d in daemons:
            d.stop()
        # the next run (at another round trip) walks a hub of the same size
        pipe = remote.pipeline(transaction=False)
        for key in remote.scan_iter(match=f"*{ns}*", count=5000):
            pipe.unlink(key)
        pipe.execute()
    return figures
