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
