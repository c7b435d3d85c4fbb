"""What the bench scenarios measure with: polling a condition, a process'
CPU and memory, a Redis server's CPU."""

import os
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
