"""Real processes for integration tests: the sandbox, the daemon, and polling.

Nothing here sleeps in place of synchronisation: ``wait_until`` polls a
condition and fails with a description when the deadline passes.
"""

import dataclasses
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import redis

from redisrepl.sandbox import Sandbox, Site
from redisrepl.state import STRING, KeyState
from redisrepl.synced import SyncedEntry

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: How long a change may take to cross in a test; far above normal (~ms).
CROSS = 10.0


def silently(r, change):
    """``change(r)`` with r's keyspace notifications off: no event announces
    it (only a periodic reconcile can find it)."""
    flags = r.config_get("notify-keyspace-events")["notify-keyspace-events"]
    r.config_set("notify-keyspace-events", "")
    try:
        change(r)
    finally:
        r.config_set("notify-keyspace-events", flags)


def wait_until(predicate, timeout=CROSS, interval=0.02, what=None):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(interval)


def write_toml(path, **values):
    """A redisrepl --config file: keys are long option names (``_`` for ``-``)."""

    def spell(value):
        if isinstance(value, bool):
            return "true" if value else "false"
        return str(value) if isinstance(value, int) else '"%s"' % value

    path.write_text("".join(f"{k.replace('_', '-')} = {spell(v)}\n" for k, v in values.items()))
    return path


def meta(ns, name=""):
    """The name of one of redisrepl's own keys for namespace ``ns`` (the
    meta prefix, outside the namespace: redisrepl.namespace)."""
    return "__redisrepl__:{" + ns + "}:" + name


def recorded_as(r, ns, key, value):
    """Does the site whose Redis is ``r`` record ``key`` as synchronised
    holding the string ``value``?"""
    entry = SyncedEntry.decode(r.hget(meta(ns, "synced"), key))
    return entry is not None and entry.digest == KeyState(STRING, value).digest


def client(port, db=0):
    return redis.Redis(host="127.0.0.1", port=port, db=db, socket_timeout=5)


def key_state(r, key):
    """(type, value, has_ttl) of a key, read with redis-py; values as bytes."""
    while True:
        try:
            return _key_state(r, key)
        except redis.ResponseError as e:
            if not str(e).startswith("WRONGTYPE"):
                raise
            # it changed type between TYPE and the read: read it again


def _key_state(r, key):
    kind = r.type(key).decode()
    if kind == "none":
        return ("none", None, False)
    value = {
        "string": lambda: r.get(key),
        "hash": lambda: r.hgetall(key),
        "list": lambda: r.lrange(key, 0, -1),
        "set": lambda: r.smembers(key),
        "zset": lambda: r.zrange(key, 0, -1, withscores=True),
        "stream": lambda: r.xrange(key),
    }.get(kind, lambda: None)()
    return (kind, value, r.pttl(key) > 0)


def run_verify(lab, ns, extra=(), site=None):
    """``python -m redisrepl verify`` with the daemon's connection flags (``site``'s if given)."""
    return run_command(lab, ns, ["verify"], extra, site)


def run_dry(lab, ns, extra=(), site=None, rc=True):
    """``python -m redisrepl reconcile --dry-run`` with the daemon's flags."""
    return run_command(lab, ns, ["reconcile", "--dry-run"], extra, site, rc)


def run_command(lab, ns, command, extra=(), site=None, rc=True):
    args = lab.sandbox.daemon_args(ns, rc=rc, extra=list(extra), site=_site(site))
    args = args[args.index("redisrepl") + 1 :]
    return subprocess.run(
        [sys.executable, "-m", "redisrepl", *command, *args], capture_output=True, text=True, cwd=ROOT, timeout=120
    )


class Daemon:
    """``twistd -n redisrepl`` as a child process, its log in a file.

    ``site``/``cert``/``key`` go to :meth:`Sandbox.daemon_args`: the daemon of that site
    (default the local Redis), with another client certificate if given."""

    def __init__(self, sandbox, namespace, rc=True, extra=(), args=None, env=None, site=None, cert=None, key=None):
        self.logfile = os.path.join(sandbox.workdir, f"daemon-{time.monotonic_ns()}.log")
        cmd = (
            args
            if args is not None
            else sandbox.daemon_args(namespace, rc=rc, extra=extra, site=_site(site), cert=cert, key=key)
        )
        full_env = dict(os.environ)
        full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [ROOT, full_env.get("PYTHONPATH")]))
        full_env.update(env or {})
        self._log = open(self.logfile, "wb")
        self.proc = subprocess.Popen(
            cmd, stdout=self._log, stderr=subprocess.STDOUT, cwd=sandbox.workdir, env=full_env, start_new_session=True
        )
        self.rc = rc

    def log(self):
        with open(self.logfile, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def wait_log(self, text, timeout=CROSS, count=1):
        def seen():
            exited = self.proc.poll() is not None
            if self.log().count(text) >= count:
                return True
            if exited:
                raise AssertionError(f"daemon exited ({self.proc.returncode}) before logging {text!r}")

        try:
            wait_until(seen, timeout, what=f"daemon log line {text!r}")
        except AssertionError as e:
            raise AssertionError(f"{e}\n--- daemon log ---\n{self.log()}") from None

    def wait_ready(self):
        self.wait_log("listening to local Redis")
        if self.rc:
            self.wait_log("listening to remote Redis events")
        return self

    def stop(self, sig=signal.SIGTERM, timeout=15):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"daemon did not stop within {timeout}s on {sig!r}:\n{self.log()}") from None
        self._log.close()
        return self.proc.returncode


@dataclasses.dataclass
class LabSite:
    """An extra site of the lab: the sandbox's :class:`Site` and a redis-py client on its Redis."""

    name: str
    site: Site
    redis: redis.Redis


def _site(site):
    """What daemon_args takes for a site: a LabSite is unwrapped, a name or Site passes."""
    return site.site if isinstance(site, LabSite) else site


class Lab:
    """A sandbox with redis-py clients on both Redis servers (and on each extra site)."""

    def __init__(self):
        self.sandbox = Sandbox().start()
        self.local = client(self.sandbox.local_redis_port)
        self.remote = client(self.sandbox.remote_redis_port)
        self.daemons = []
        self.sites = {}  # name -> LabSite

    def add_site(self, name):
        """The extra site ``name``, started the first time it is asked for.  The lab is
        shared by a module's tests, so a later test asking for the same site gets the
        same one (with whatever an earlier test left in its Redis)."""
        if name not in self.sites:
            site = self.sandbox.add_site(name)
            self.sites[name] = LabSite(name, site, client(site.redis_port))
        return self.sites[name]

    def daemon(self, namespace, rc=True, extra=(), ready=True, site=None, cert=None, key=None, **kw):
        """A daemon for ``site`` (a LabSite, a Site or a name; default the local Redis)."""
        d = Daemon(self.sandbox, namespace, rc=rc, extra=extra, site=site, cert=cert, key=key, **kw)
        self.daemons.append(d)
        return d.wait_ready() if ready else d

    def stop_daemons(self):
        for d in self.daemons:
            d.stop()
        self.daemons = []

    def close(self):
        """Stop the daemons, then the sandbox: its extra sites with it."""
        try:
            self.stop_daemons()
        finally:
            self.sandbox.stop()
            for lab_site in self.sites.values():
                lab_site.redis.close()

    def same(self, key):
        """True once both sides hold the same state for ``key``."""
        return key_state(self.local, key) == key_state(self.remote, key)

    def crosses_both_ways(self, ns, timeout=CROSS):
        """A SET under ``ns`` reaches the remote, and one on the remote comes back."""
        self.local.set(ns + "to-remote", "L")
        wait_until(lambda: self.remote.get(ns + "to-remote") == b"L", timeout, what="local -> remote")
        self.remote.set(ns + "to-local", "R")
        wait_until(lambda: self.local.get(ns + "to-local") == b"R", timeout, what="remote -> local")

    def wait_same(self, key, timeout=CROSS):
        try:
            wait_until(lambda: self.same(key), timeout, what=f"{key!r} equal on both sides")
        except AssertionError as e:
            raise AssertionError(
                f"{e}: local={key_state(self.local, key)} remote={key_state(self.remote, key)}"
            ) from None


# -- /metrics and /healthz of a daemon run with --metrics ------------------------


def get(port, path):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def metric(text, name, **labels):
    """The value of one sample in Prometheus text, 0 when absent."""
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    pattern = re.escape(name) + (r"\{" + re.escape(want) + r"\}" if labels else "") + r" (\S+)"
    m = re.search("^" + pattern + "$", text, re.M)
    return float(m.group(1)) if m else 0.0


def scrape(port):
    status, text = get(port, "/metrics")
    assert status == 200
    return text
