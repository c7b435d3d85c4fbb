"""What the bench scenarios measure with: polling a condition, a process'
CPU and memory, a Redis server's CPU, keyspace events and the latency of
writes."""

import os
import statistics
import threading
import time

TIMEOUT = 120.0


def poll(predicate, timeout=TIMEOUT, interval=0.002):
    deadline = time.perf_counter() + timeout
    while not predicate():
        if time.perf_counter() > deadline:
            raise RuntimeError("timed out")
        time.sleep(interval)
    return time.perf_counter()


class Arrival:
    """Whether ``keys`` have all arrived on the Redis ``r`` (which held
    ``before`` keys when they were written), looked at cheaply, so that
    watching takes no CPU from what it watches: DBSIZE until it reaches
    ``before`` plus the keys, then EXISTS of the keys not yet seen. (An
    EXISTS of every key at every look took a core from the daemon and the
    Redis it watched.)"""

    def __init__(self, r, keys, before=0):
        self._r = r
        self._missing = list(keys)
        self._target = before + len(self._missing)

    def look(self):
        """When the keys were all there (perf_counter: the time of the
        DBSIZE that counted them, if none came while they were checked), or
        None if some are still missing."""
        size = self._r.dbsize()
        if size < self._target:
            return None
        at = time.perf_counter()
        pipe = self._r.pipeline(transaction=False)
        for i in range(0, len(self._missing), 5000):
            pipe.exists(*self._missing[i : i + 5000])
        if sum(pipe.execute()) == len(self._missing):
            self._missing = []
            return at if self._r.dbsize() == size else time.perf_counter()
        # some are still to come (redisrepl's own keys made up the count): which
        pipe = self._r.pipeline(transaction=False)
        for key in self._missing:
            pipe.exists(key)
        self._missing = [key for key, seen in zip(self._missing, pipe.execute()) if not seen]
        return None

    def wait(self, timeout=TIMEOUT, interval=0.002):
        """``look`` until the keys are all there; when they were."""
        deadline = time.perf_counter() + timeout
        while (at := self.look()) is None:
            if time.perf_counter() > deadline:
                raise RuntimeError("timed out")
            time.sleep(interval)
        return at


def proc_usage(pid):
    """(cpu seconds, peak RSS in MB) of a process, from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    with open(f"/proc/{pid}/status") as f:
        hwm = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    return cpu, hwm / 1024


def redis_cpu(r):
    """CPU seconds a Redis server used so far (user + system, all threads)."""
    info = r.info("cpu")
    return info["used_cpu_user"] + info["used_cpu_sys"]


class EventLog(threading.Thread):
    """Records (time, key, event) of keyspace events matching a pattern."""

    def __init__(self, r, pattern):
        super().__init__(daemon=True)
        self.pubsub = r.pubsub()
        self.pubsub.psubscribe(pattern)
        self.pubsub.get_message(timeout=5)
        self.events = []
        self.running = True

    def run(self):
        while self.running:
            msg = self.pubsub.get_message(timeout=0.1)
            if msg and msg["type"] == "pmessage":
                self.events.append((time.perf_counter(), msg["channel"].split(b":", 1)[1], msg["data"]))

    def stop(self):
        self.running = False
        self.join()
        self.pubsub.close()


def paced(rate, n, write):
    """Call ``write(i)`` for i in range(n) at ``rate`` calls a second, on
    schedule (not drifting with the calls' own time)."""
    t0 = time.perf_counter()
    for i in range(n):
        due = t0 + i / rate
        while time.perf_counter() < due:
            time.sleep(max(0, due - time.perf_counter() - 0.0005))
        write(i)


def write_latencies(local, remote, ns, rate, seconds, prefix=""):
    """``rate`` SETs a second for ``seconds`` on ``local``, each of a new key
    ``{ns}{prefix}{i}``, timed until the ``remote``'s set event: percentiles."""
    events = EventLog(remote, f"__keyspace@0__:{ns}{prefix}*")
    events.start()
    sent = {}
    n = int(rate * seconds)

    def write(i):
        key = f"{ns}{prefix}{i}"
        sent[key.encode()] = time.perf_counter()
        local.set(key, "x")

    paced(rate, n, write)
    poll(lambda: len({k for _, k, _ in events.events}) >= n)
    events.stop()
    lat = sorted((t - sent[k]) * 1000 for t, k, e in events.events if k in sent and e == b"set")
    q = statistics.quantiles(lat, n=100)
    return {
        "sets": n,
        "p50 ms": f"{q[49]:.2f}",
        "p95 ms": f"{q[94]:.2f}",
        "p99 ms": f"{q[98]:.2f}",
        "max ms": f"{lat[-1]:.2f}",
    }
