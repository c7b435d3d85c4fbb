"""The many-sites scenario of bench/bench.py: N two-way sites on one hub.

1. **fill**: K keys are on the hub; N new sites (each its own Redis,
   certificate and ``twistd -n redisrepl --rc``) start at once, and each is
   timed until it holds all K: keys/s per site from its daemon's
   connections to the hub being open (the fill proper) and from the
   process' start (with Python's and twistd's start-up); the hub's Redis
   CPU during the fill;
2. **quiet**: nothing changes for ``quiet`` seconds while every daemon
   runs a periodic reconcile every ``interval`` seconds (a bucket check
   against a walk of the hub shared by all sites, or a whole walk): the
   checks, shared walks and whole walks made, the hub Redis' CPU per site
   per interval, per key of a shared walk, and per check's table read;
   how long a shared walk takes and its share of the hub Redis' time
   (paced: ``--walk-share``);
   what that makes for 100 sites of 1,000,000 keys (extrapolated); the
   local Redis' CPU per periodic reconcile; and the heartbeats the hub
   received and delivered (each heartbeat's event reaches every site's
   stream);
3. **fan-out**: single writes on the first site, one after another, each
   timed until every other site holds it (p50/p99).

Prints figures and asserts nothing, as the rest of the bench.
"""

import re
import statistics
import time

import redis

from bench.measure import Arrival, poll, proc_usage, redis_cpu, write_latencies
from tests.harness import Daemon

#: The end of a reconcile run in a daemon's log (each run also logs its
#: start, "reconcile (...): comparing ...": counting both counted runs twice).
RUN_DONE = ") done: "
#: The duration at the end of a reconcile's "done" line.
WALK = re.compile(r"done: \d+ keys compared, \d+ differed and are being copied, in ([0-9.]+)s")
#: A periodic check that confirmed the namespace, and a walk of the hub shared by all sites.
CHECKED = "both sides hold the same namespace"
SHARED_WALK = "shared walk of the hub:"
#: A shared walk's duration and the hub Redis' time it took (paced: --walk-share).
SHARED_TIMES = re.compile(r"steps and ([0-9.]+)s \(([0-9.]+)s of the hub Redis' time")


def table_read_cpu(r, ns, reads=20):
    """Seconds of the hub Redis' CPU one read of the last published table
    costs (GETs counted by commandstats around ``reads`` of them; the
    window's own GETs cannot tell: every GET a script makes counts too)."""
    info = r.get(f"__redisrepl__:{{{ns}}}:walk:info")
    if not info:
        return 0.0
    table = f"__redisrepl__:{{{ns}}}:walk:table:".encode() + info.split()[1]

    def usec():
        return r.info("commandstats").get("cmdstat_get", {}).get("usec", 0)

    before = usec()
    for _ in range(reads):
        r.get(table)
    return (usec() - before) / 1e6 / reads


def script_calls(r):
    """Scripts a Redis server ran so far (EVAL and EVALSHA)."""
    stats = r.info("commandstats")
    return sum(stats.get(name, {}).get("calls", 0) for name in ("cmdstat_eval", "cmdstat_evalsha"))


#: The daemon's line once its connections to the hub are open (its fill starts).
CONNECTED = "connections to the hub open"


def fill_times(daemons, clients, names, interval=0.01):
    """When each daemon's connections to the hub opened and when its site
    held all ``names`` (perf_counter times, in the order of ``daemons``),
    watched cheaply (``Arrival``: redisrepl's own few keys may bring the
    count there a little early; the keys are checked then)."""
    ready, filled = [None] * len(daemons), [None] * len(daemons)
    arrivals = [Arrival(client, names) for client in clients]
    deadline = time.perf_counter() + 600
    while None in filled:
        if time.perf_counter() > deadline:
            raise RuntimeError("timed out")
        for i, daemon in enumerate(daemons):
            if ready[i] is None and CONNECTED in daemon.log():
                ready[i] = time.perf_counter()
            if ready[i] is not None and filled[i] is None:
                filled[i] = arrivals[i].look()
        time.sleep(interval)
    return ready, filled


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
        ready, filled = fill_times(daemons, clients, names)
        slowest = max(filled) - t0
        figures["fill s (slowest, from the daemons' start)"] = f"{slowest:.2f}"
        figures["start-up s (slowest: process start to connections open)"] = f"{max(ready) - t0:.2f}"
        # the fill itself: from a daemon's connections to the hub being open
        # to the last key there (the start-up of Python and twistd, about a
        # second, is no part of a rate)
        rates = [keys / (end - begin) for begin, end in zip(ready, filled)]
        figures["fill keys/s per site (from connections open)"] = f"{min(rates):.0f}"
        figures["fill keys/s per site (from the daemons' start)"] = f"{keys / slowest:.0f}"
        figures["hub cpu s during fill"] = f"{redis_cpu(remote) - hub0:.2f}"
        calls = sum(script_calls(c) for c in clients) - scripts0
        figures["local script calls per key filled"] = f"{calls / (keys * n_sites):.4f}"
        for d in daemons:
            d.wait_log("connections to the hub open")
            d.wait_log(RUN_DONE, timeout=600)  # its start-up reconcile is over: the quiet phase is periodic only

        # quiet: only periodic reconciles and heartbeats
        def tally():
            logs = [d.log() for d in daemons]
            return [sum(log.count(what) for log in logs) for what in (RUN_DONE, CHECKED, SHARED_WALK)]

        runs0 = tally()
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
        done, checked, shared = (after - before for after, before in zip(tally(), runs0))
        full = done - checked  # a confirmed check's line ends in ") done: " too
        local_cpu = sum(redis_cpu(c) for c in clients) - sum(local0)
        figures["periodic reconciles"] = done
        figures["checks confirmed"] = checked
        figures["shared walks of the hub"] = shared
        figures["whole walks"] = full
        intervals = n_sites * elapsed / interval  # site-intervals in the window
        figures["hub cpu ms per site per interval"] = f"{hub_cpu / intervals * 1000:.1f}"
        if done:
            figures["local cpu ms per periodic reconcile"] = f"{local_cpu / done * 1000:.1f}"
        if shared + full:
            # everything the hub did in the window, put on the walks: an upper bound
            per_key = hub_cpu / (shared + full) / keys
            figures["hub cpu us per key per walk (upper bound)"] = f"{per_key * 1e6:.2f}"
            read = table_read_cpu(remote, ns)
            figures["hub cpu ms per check's table read"] = f"{read * 1000:.2f}"
            figures["hub cpu s per site per interval, 100 sites of 1,000,000 keys (extrapolated)"] = (
                f"{per_key * 1_000_000 / 100 + read:.3f}"
            )
        if shared:
            # how long a shared walk takes, and its share of the hub's time (--walk-share)
            times = [tuple(map(float, m)) for d in daemons for m in SHARED_TIMES.findall(d.log())[-shared:]]
            shares = [hub / t for t, hub in times if t > 0]
            if shares:
                figures["shared walk s (median)"] = f"{statistics.median(t for t, _ in times):.2f}"
                figures["shared walk's share of the hub (median)"] = f"{statistics.median(shares):.2f}"
        if full:
            # how long a walk of the namespace takes (the runs' own "done: ... in X s")
            walks = [float(m) for d in daemons for m in WALK.findall(d.log())[-full:]]
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


def checking_site(lab, run_id, keys, interval, rate=100, seconds=30):
    """One two-way site of ``keys`` keys whose periodic reconcile (a bucket
    check) runs every ``interval`` seconds: the latency of its live copies
    to the hub while the checks run (``rate`` SETs a second), and the checks
    made meanwhile. Its walks are paced by ``--walk-share`` (``--daemon``
    sets it; 1 is no pacing)."""
    sandbox, remote = lab["sandbox"], lab["remote"]
    ns = f"bcheck{run_id}:"
    site = sandbox.add_site(f"b{run_id}c")
    local = redis.Redis(port=site.redis_port)
    pipe = remote.pipeline(transaction=False)
    for i in range(keys):
        pipe.set(f"{ns}{i}", f"v{i}")
    pipe.execute()
    extra = [*lab.get("extra", ()), *lab["daemon"], "--reconcile-interval", str(interval)]
    daemon = Daemon(sandbox, ns, rc=True, extra=extra, site=site)
    try:
        daemon.wait_log("connections to the hub open")
        poll(lambda: local.dbsize() >= keys, timeout=600, interval=0.1)
        daemon.wait_log(RUN_DONE, timeout=600)  # the start-up reconcile is over
        before = daemon.log()
        figures = {"keys": keys, "check interval s": interval}
        figures.update(write_latencies(local, remote, ns, rate, seconds, prefix="live"))
        during = daemon.log()[len(before) :]
        figures["checks confirmed meanwhile"] = during.count(CHECKED)
        figures["shared walks meanwhile"] = during.count(SHARED_WALK)
        return figures
    finally:
        daemon.stop()
        pipe = remote.pipeline(transaction=False)
        for key in remote.scan_iter(match=f"{ns}*", count=5000):
            pipe.unlink(key)
        pipe.execute()
