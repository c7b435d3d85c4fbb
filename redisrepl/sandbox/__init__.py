"""A throwaway replication lab on loopback, for tests, the demo and the benchmark.

    local redis-server          remote redis-server <- Webdis <- nginx (mTLS) <- https://localhost:P/redis
    (127.0.0.1:L)               (127.0.0.1:R)          (W)       (127.0.0.1:P)
    site redis-servers (add_site)
    (127.0.0.1:S1, S2, ...)

Several sites can share the one hub: the local Redis is the site "local" (its
daemon presents the ``client`` certificate) and :meth:`Sandbox.add_site` starts
another redis-server with a client certificate of its own
(CN ``redisrepl-site-<name>``), component ``site:<name>``.

Everything lives in one work directory: generated certificates (EC P-256), the
Webdis and nginx configurations, every log, and each Redis' data dir.
No Redis saves by itself (``--save ""``, no AOF, so a SIGTERM writes no dump
either), and ``start_component(name)`` deletes the data dir's ``dump.rdb``
first: a restarted Redis comes back empty and with ``notify-keyspace-events``
empty, as a real restart would.  ``start_component(name, snapshot=True)``
keeps the dump, so the Redis comes back with what its last ``SAVE`` held: a
restart from an older snapshot.

The nginx server certificate names ``DNS:localhost`` only, so
:attr:`Sandbox.wrong_name_haddr` (``https://127.0.0.1:P/redis``) reaches the
same proxy with a certificate that fails hostname verification.

Blocking code (subprocess, sockets); standard library plus ``cryptography``.
Never used inside the daemon.  Run ``python -m redisrepl.sandbox demo`` or
``python -m redisrepl.sandbox up --workdir DIR``; ``--sites N`` adds the sites
``site2`` ... ``siteN`` (and ``demo`` runs one daemon per site).
"""

import argparse
import atexit
import dataclasses
import http.client
import json
import os
import re
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time

from redisrepl.sandbox.certificates import (  # noqa: F401 (the package's API)
    CLIENT_CN,
    generate_certificates,
    write_client_certificate,
    write_server_certificate,
)
from redisrepl.sandbox.configs import nginx_config, webdis_config

COMPONENTS = ("local_redis", "remote_redis", "webdis", "nginx")  # start order
READY_TIMEOUT = 15.0
STOP_TIMEOUT = 5.0
SITE_CN = "redisrepl-site-{}"
#: Site names end up in a certificate's CN and in file names; "local" and
#: "remote" are taken (the default site and redis_cli_args' other side).
SITE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,39}\Z")
RESERVED_SITE_NAMES = ("local", "remote")
DUMP = "dump.rdb"
TWISTD = "from twisted.scripts.twistd import run; run()"


class SandboxError(Exception):
    """A sandbox component failed to start (the message carries its log's tail)."""


def binary(name):
    """The path of a server program, also where Debian puts it outside a
    normal user's PATH (/usr/sbin for nginx)."""
    path = os.pathsep.join([os.environ.get("PATH", os.defpath), "/usr/sbin", "/sbin"])
    found = shutil.which(name, path=path)
    if found is None:
        raise SandboxError(f"{name} is not installed (./dev.sh demo installs it with apt-get)")
    return found


def free_port():
    """A TCP port free on 127.0.0.1 right now (bind to port 0, read it, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- small blocking clients ----------------------------------------------------------

def _redis_ping(port, timeout=1.0):
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(b"PING\r\n")
        return s.recv(64).startswith(b"+PONG")


def _http(port, method, path, body=None, context=None, timeout=5.0):
    """One HTTP(S) request to 127.0.0.1:port (TLS name checked as "localhost"); (status, body)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        if context is not None:
            sock = context.wrap_socket(sock, server_hostname="localhost")
        head = f"{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
        if body is not None:
            head += f"Content-Length: {len(body)}\r\n"
        sock.sendall(head.encode("latin-1") + b"\r\n" + (body or b""))
        resp = http.client.HTTPResponse(sock, method=method)
        resp.begin()
        return resp.status, resp.read()
    finally:
        sock.close()


# --- the sandbox -------------------------------------------------------------------

def _death_signal_setter():
    """A preexec_fn asking the kernel to SIGTERM the child when the starting thread dies
    (Linux ``PR_SET_PDEATHSIG``), or None where that is unavailable or unsafe: the signal
    follows the *thread*, so it is only used from the main thread."""
    if threading.current_thread() is not threading.main_thread():
        return None
    try:
        import ctypes
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (ImportError, OSError, AttributeError):
        return None
    return lambda: prctl(1, int(signal.SIGTERM))  # resolved before the fork


def _stem(component):
    """The file name stem of a component's log, console, socket and data dir
    ("site:paris" -> "site-paris": no colon in file names)."""
    return component.replace(":", "-")


@dataclasses.dataclass
class Site:
    """A site: a local Redis of its own and the client certificate its daemon presents.

    The sandbox's local Redis is the site "local" (component "local_redis", the
    ``client`` certificate); :meth:`Sandbox.add_site` makes the others (component
    "site:<name>").  Mutable only so that the sandbox can point the paths at a new
    work dir when start() has to make one again (after stop() removed its own)."""
    name: str
    redis_port: int
    client_cert: str
    client_key: str
    component: str
    socket_path: str


class Sandbox:
    """A throwaway replication lab on loopback: local Redis, remote Redis, Webdis in front
    of the remote Redis, nginx terminating mTLS in front of Webdis, and generated certificates.

    ``with Sandbox() as sb:`` starts everything and stops it all at the end.
    Ports are picked at the first start() (or add_site()) and kept for the sandbox's
    life, so stop_component()/start_component() bring a component back on the same port.
    Extra sites (add_site) are started and stopped with the rest.
    """

    def __init__(self, workdir=None, *, path_prefix="/redis"):
        self.workdir = os.path.abspath(workdir) if workdir else None
        self._own_workdir = False
        self.path_prefix = ("/" + path_prefix.strip("/")) if path_prefix.strip("/") else ""
        self._procs = {}
        self._sites = {}  # name -> Site, the extra sites in the order added
        self._issued = 0  # client certificates issued by issue_client_certificate()
        self._started = False
        self._certs_done = False
        self.local_redis_port = self.remote_redis_port = None
        self.webdis_port = self.proxy_port = None
        self.haddr = self.wrong_name_haddr = None
        self.ca_cert = self.ca_key = self.client_cert = self.client_key = None
        self.server_cert = self.server_key = None
        self.other_ca_cert = self.other_ca_key = None
        self.other_client_cert = self.other_client_key = None
        self.wrong_host_cert = self.wrong_host_key = None

    # life cycle

    def start(self):
        """Generate certs (once), pick ports (once), write configs, start and await all four
        and the extra sites."""
        self._prepare()
        self._write_configs()
        self._started = True
        try:
            for name in self._components():
                if name not in self._procs:
                    self.start_component(name)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self):
        """Stop every component (the extra sites, then nginx first); idempotent; remove the
        workdir if ours.  The extra sites are kept: a later start() starts them again."""
        self._started = False
        for name in reversed(self._components()):
            if name in self._procs:
                self.stop_component(name)
        atexit.unregister(self.stop)
        if self._own_workdir and self.workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None
            self._own_workdir = False

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def add_site(self, name):
        """Another site sharing the hub: its own redis-server (same flags as the local Redis,
        its own port, data dir and socket) and its own client certificate, CN
        ``redisrepl-site-<name>`` signed by the good CA.  Returns its :class:`Site`.

        Before start() the site is only prepared (certificate, port) and start() starts
        it; after, its Redis is started now (and the site forgotten if that fails)."""
        if not SITE_NAME.match(name) or name in RESERVED_SITE_NAMES:
            raise ValueError(f"bad site name {name!r}: letters, digits, '_', '.', '-'; "
                             f"not one of {RESERVED_SITE_NAMES}")
        if name in self._sites:
            raise ValueError(f"site {name!r} already exists")
        self._prepare()
        site = Site(name=name, redis_port=self._free_port(), client_cert=None, client_key=None,
                    component="site:" + name, socket_path=None)
        self._equip(site)
        self._sites[name] = site
        if self._started:
            try:
                self.start_component(site.component)
            except BaseException:
                del self._sites[name]
                raise
        return site

    @property
    def sites(self):
        """Every site by name: "local" (the local Redis and the ``client`` certificate)
        first, then the extra sites in the order add_site() made them."""
        local = Site(name="local", redis_port=self.local_redis_port, client_cert=self.client_cert,
                     client_key=self.client_key, component="local_redis",
                     socket_path=self.socket_path("local_redis") if self.workdir else None)
        return {"local": local, **self._sites}

    def issue_client_certificate(self, cn):
        """A new client certificate for ``cn`` signed by the good CA (to play a renewed or a
        shared certificate); (cert path, key path), in a new pair of files each time."""
        self._prepare()
        self._issued += 1
        slug = re.sub(r"[^A-Za-z0-9_.-]", "_", cn)[:40]
        base = os.path.join(self.workdir, "certs", f"issued-{self._issued}-{slug}")
        return write_client_certificate(base, cn, self.ca_cert, self.ca_key)

    def start_component(self, name, snapshot=False):
        """(Re)start one component on its port, with its config; return once it is ready.

        For a Redis (local, remote or a site): with ``snapshot=False`` its ``dump.rdb`` is
        deleted first, so it comes back empty; with ``snapshot=True`` the dump is kept and
        loaded, so it comes back as its last ``SAVE`` left it (stopping writes no dump:
        there are no save points, and Redis 7's default ``shutdown-on-sigterm`` saves on
        SIGTERM only if there are)."""
        self._check_name(name)
        is_redis = self._redis_port(name) is not None
        if snapshot and not is_redis:
            raise ValueError(f"snapshot is for a Redis component, not {name!r}")
        if self.workdir is None or self.proxy_port is None:
            raise SandboxError("the sandbox is not started")
        if name in self._procs:
            raise SandboxError(f"{name} is already running")
        if is_redis:
            self._prepare_data_dir(name, snapshot)
        console = os.path.join(self.workdir, f"{_stem(name)}.console")
        with open(console, "ab") as out:
            proc = subprocess.Popen(
                self._argv(name), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True, cwd=self.workdir, preexec_fn=_death_signal_setter())
        self._procs[name] = proc
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            if proc.poll() is not None:
                problem = f"exited with status {proc.returncode}"
                break
            problem = self._problem(name)
            if problem is None:
                return
            if time.monotonic() > deadline:
                problem += f" after {READY_TIMEOUT:.0f} s"
                break
            time.sleep(0.05)
        self.stop_component(name)
        raise SandboxError(f"{name} failed to start: {problem}\n{self._log_tail(name)}")

    def stop_component(self, name):
        """SIGTERM one component, wait (SIGKILL its process group after a few s); no-op if stopped."""
        self._check_name(name)
        proc = self._procs.pop(name, None)
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)  # leader not reaped yet: still our group
                except ProcessLookupError:
                    pass
                proc.wait()

    def running(self, name):
        """Whether the component's process is alive."""
        proc = self._procs.get(name)
        return proc is not None and proc.poll() is None

    # command lines for users of the sandbox

    def socket_path(self, name="local_redis"):
        """The unix socket a Redis of the sandbox also listens on."""
        return os.path.join(self.workdir, _stem(name) + ".sock")

    def dump_path(self, name="local_redis"):
        """The RDB file a Redis component's ``SAVE`` writes and ``snapshot=True`` loads."""
        return os.path.join(self._data_dir(name), DUMP)

    def redis_cli_args(self, side):
        """``["redis-cli", "-p", port]`` for side "local", "remote" or an extra site's name."""
        ports = {"local": self.local_redis_port, "remote": self.remote_redis_port}
        ports.update((name, site.redis_port) for name, site in self._sites.items())
        if side not in ports:
            raise ValueError(f"side must be 'local', 'remote' or a site's name, not {side!r}")
        return ["redis-cli", "-p", str(ports[side])]

    def daemon_args(self, namespace, rc=True, extra=(), site=None, cert=None, key=None):
        """The ``twistd -n redisrepl`` command line wired to this sandbox.

        ``site`` (a name or a :class:`Site`; default the local Redis) picks ``--raddr``
        and the client certificate; ``cert``/``key`` replace that certificate (a shared
        or a renewed one).

        ``python -m twisted`` is the ``twist`` runner, which knows no ``-n``; twistd
        has no ``__main__``, hence ``-c``.  ``--pidfile=`` keeps twistd from writing
        (and fighting over) ``twistd.pid`` in the current directory."""
        s = self._site("local" if site is None else site)
        args = [sys.executable, "-c", TWISTD, "-n", "--pidfile=", "redisrepl",
                "--haddr", self.haddr, "--cert", cert or s.client_cert,
                "--key", key or s.client_key,
                "--ca", self.ca_cert, "--raddr", f"127.0.0.1:{s.redis_port}",
                "--nam", namespace]
        return args + (["--rc"] if rc else []) + list(extra)

    def client_ssl_context(self, cert=None, key=None):
        """A stdlib SSLContext trusting the good CA and holding client credentials: the
        good ``client`` certificate unless ``cert``/``key`` name others (a site's)."""
        ctx = ssl.create_default_context(cafile=self.ca_cert)
        ctx.load_cert_chain(cert or self.client_cert, key or self.client_key)
        return ctx

    def request(self, method, path, body=None, timeout=5.0, cert=None, key=None):
        """One request through nginx (``path`` after the prefix, e.g. "/GET/k.raw"); (status, body).
        ``cert``/``key``: the client certificate to present instead of the good one."""
        return _http(self.proxy_port, method, self.path_prefix + path, body,
                     self.client_ssl_context(cert, key), timeout)

    def describe(self):
        """Ports, paths and URLs, as a JSON-friendly dict (``sites``: every site by name)."""
        keys = ("workdir", "local_redis_port", "remote_redis_port", "webdis_port", "proxy_port",
                "haddr", "wrong_name_haddr", "ca_cert", "client_cert", "client_key",
                "server_cert", "server_key", "other_ca_cert", "other_client_cert",
                "other_client_key", "wrong_host_cert", "wrong_host_key")
        described = {k: getattr(self, k) for k in keys}
        described["sites"] = {name: dataclasses.asdict(site) for name, site in self.sites.items()}
        return described

    # internals

    def _prepare(self):
        """The work dir, the certificates and the ports, made once (by start() or add_site());
        again the work dir and certificates after stop() removed a work dir of ours."""
        if self.workdir is None:
            self.workdir = tempfile.mkdtemp(prefix="redisrepl-sandbox-")
            self._own_workdir = True
            self._certs_done = False
        os.makedirs(self.workdir, exist_ok=True)
        atexit.register(self.stop)  # stop() unregisters every registration
        if not self._certs_done:
            for attr, path in generate_certificates(os.path.join(self.workdir, "certs")).items():
                setattr(self, attr, path)
            self._certs_done = True
            for site in self._sites.values():
                self._equip(site)
        if self.proxy_port is None:
            for attr in ("local_redis_port", "remote_redis_port", "webdis_port", "proxy_port"):
                setattr(self, attr, self._free_port())  # one by one: each avoids the ones before
        self.haddr = f"https://localhost:{self.proxy_port}{self.path_prefix}"
        self.wrong_name_haddr = f"https://127.0.0.1:{self.proxy_port}{self.path_prefix}"

    def _free_port(self):
        """A free port that no component of this sandbox has been given yet."""
        taken = {self.local_redis_port, self.remote_redis_port, self.webdis_port,
                 self.proxy_port, *(site.redis_port for site in self._sites.values())}
        while True:
            port = free_port()
            if port not in taken:
                return port

    def _equip(self, site):
        """Issue ``site`` its client certificate and point its socket into the work dir."""
        base = os.path.join(self.workdir, "certs", _stem(site.component))
        site.client_cert, site.client_key = write_client_certificate(
            base, SITE_CN.format(site.name), self.ca_cert, self.ca_key)
        site.socket_path = self.socket_path(site.component)

    def _site(self, site):
        """A :class:`Site` from a site or a site's name."""
        if isinstance(site, Site):
            return site
        sites = self.sites
        if site not in sites:
            raise ValueError(f"unknown site {site!r}; one of {tuple(sites)}")
        return sites[site]

    def _components(self):
        """Every component in start order: the four of the hub, then the extra sites."""
        return COMPONENTS + tuple(site.component for site in self._sites.values())

    def _check_name(self, name):
        if name not in self._components():
            raise ValueError(f"unknown component {name!r}; one of {self._components()}")

    def _redis_port(self, name):
        """The port of Redis component ``name``; None for Webdis and nginx."""
        ports = {"local_redis": self.local_redis_port, "remote_redis": self.remote_redis_port}
        ports.update((site.component, site.redis_port) for site in self._sites.values())
        return ports.get(name)

    def _data_dir(self, name):
        return os.path.join(self.workdir, _stem(name))

    def _prepare_data_dir(self, name, snapshot):
        """Make the Redis' ``--dir``; unless ``snapshot``, delete the dump it would load."""
        os.makedirs(self._data_dir(name), exist_ok=True)
        if not snapshot:
            try:
                os.remove(self.dump_path(name))
            except FileNotFoundError:
                pass

    def _write_configs(self):
        nginx_root = os.path.join(self.workdir, "nginx")
        os.makedirs(nginx_root, exist_ok=True)
        with open(os.path.join(nginx_root, "nginx.conf"), "w") as f:
            f.write(nginx_config(root=nginx_root, proxy_port=self.proxy_port,
                                 webdis_port=self.webdis_port, server_cert=self.server_cert,
                                 server_key=self.server_key, ca_cert=self.ca_cert,
                                 path_prefix=self.path_prefix))
        with open(os.path.join(self.workdir, "webdis.json"), "w") as f:
            f.write(webdis_config(redis_port=self.remote_redis_port, http_port=self.webdis_port,
                                  logfile=os.path.join(self.workdir, "webdis.log")))

    def _argv(self, name):
        w = self.workdir
        port = self._redis_port(name)
        if port is not None:
            return [binary("redis-server"), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                    "--appendonly", "no", "--dbfilename", DUMP, "--dir", self._data_dir(name),
                    "--unixsocket", self.socket_path(name), "--unixsocketperm", "700",
                    "--logfile", os.path.join(w, _stem(name) + ".log"), "--daemonize", "no"]
        if name == "webdis":
            return [binary("webdis"), os.path.join(w, "webdis.json")]
        root = os.path.join(w, "nginx")
        return [binary("nginx"), "-p", root, "-c", os.path.join(root, "nginx.conf"),
                "-e", os.path.join(root, "error.log"), "-g", "daemon off;"]

    def _problem(self, name):
        """None once ``name`` is ready, else what is still wrong.

        Ready means: Redis answers PING; Webdis answers ``GET /PING`` with PONG (with
        any HTTP status if the remote Redis is stopped); nginx does the same through
        TLS with the good client certificate (any status if Webdis or the remote
        Redis is stopped).  A restarted component is ready only when the running
        components in front of it answer too (Webdis reconnects to a restarted Redis
        within ~0.1 s, nginx to a restarted Webdis)."""
        chain = COMPONENTS[1:]
        names = [name] if name not in chain else chain[chain.index(name):]
        for n in names:
            if n != name and not self.running(n):
                break
            try:
                port = self._redis_port(n)
                if port is not None:
                    ok, status = _redis_ping(port), "no PONG"
                else:
                    if n == "webdis":
                        status, body = _http(self.webdis_port, "GET", "/PING", timeout=2.0)
                    else:
                        status, body = self.request("GET", "/PING", timeout=2.0)
                    behind = chain[:chain.index(n)]
                    ok = (body == b'{"PING":[true,"PONG"]}' if all(map(self.running, behind))
                          else status > 0)
                    status = f"HTTP {status} {body[:100]!r}"
            except (OSError, http.client.HTTPException) as e:
                ok, status = False, repr(e)
            if not ok:
                return f"{n} not ready ({status})"
        return None

    def _log_tail(self, name, lines=20):
        logs = {"webdis": ["webdis.log"], "nginx": [os.path.join("nginx", "error.log")]}
        out = []
        for rel in logs.get(name, [_stem(name) + ".log"]) + [_stem(name) + ".console"]:
            try:
                with open(os.path.join(self.workdir, rel), "rb") as f:
                    tail = f.read().decode("utf-8", "replace").splitlines()[-lines:]
            except OSError:
                continue
            if tail:
                out.append(f"--- {rel} (last {len(tail)} lines) ---\n" + "\n".join(tail))
        return "\n".join(out) or "(no log output)"


# --- command line ------------------------------------------------------------------

class _Stop(Exception):
    pass


def _raise_stop(signum, frame):
    raise _Stop(signal.Signals(signum).name)


def _site_count(text):
    """argparse's type for --sites: a whole number of sites, 1 or more."""
    try:
        count = int(text)
    except ValueError:
        count = 0
    if count < 1:
        raise argparse.ArgumentTypeError(f"a number of sites, 1 or more, not {text!r}")
    return count


def _one_site_text(sandbox, ns):
    """What the demo prints with one site (the local Redis) and its one daemon."""
    local = shlex.join(sandbox.redis_cli_args("local"))
    remote = shlex.join(sandbox.redis_cli_args("remote"))
    return f"""\
redisrepl sandbox (work dir {sandbox.workdir})
  local Redis   127.0.0.1:{sandbox.local_redis_port}
  remote Redis  127.0.0.1:{sandbox.remote_redis_port}  (Webdis 127.0.0.1:{sandbox.webdis_port})
  hub           {sandbox.haddr}

In another terminal, local -> remote:
  {local} SET {shlex.quote(ns + 'hello')} world
  {remote} GET {shlex.quote(ns + 'hello')}
and remote -> local (--rc):
  {remote} SET {shlex.quote(ns + 'back')} again
  {local} GET {shlex.quote(ns + 'back')}

Running: {shlex.join(sandbox.daemon_args(ns))}
Ctrl-C stops everything.
"""


def _sites_text(sandbox, ns):
    """What the demo prints with several sites: each site's change goes to the remote and,
    through the hub, to the next site; a remote change goes to every site."""
    sites = sandbox.sites
    names = list(sites)
    cli = {name: shlex.join(sandbox.redis_cli_args(name)) for name in names + ["remote"]}
    width = max(map(len, names))
    lines = [f"redisrepl sandbox (work dir {sandbox.workdir}), {len(names)} sites sharing one hub"]
    lines += [f"  site {name:<{width}}  Redis 127.0.0.1:{site.redis_port}"
              for name, site in sites.items()]
    lines += [f"  remote Redis  127.0.0.1:{sandbox.remote_redis_port}"
              f"  (Webdis 127.0.0.1:{sandbox.webdis_port})",
              f"  hub           {sandbox.haddr}",
              "",
              "In another terminal, from each site to the remote and to another site (--rc):"]
    for i, name in enumerate(names):
        other = names[(i + 1) % len(names)]
        key = shlex.quote(ns + "from-" + name)
        lines += [f" {name} -> remote, {other}:",
                  f"  {cli[name]} SET {key} hello",
                  f"  {cli['remote']} GET {key}",
                  f"  {cli[other]} GET {key}"]
    key = shlex.quote(ns + "back")
    lines += ["and from the remote to every site (--rc):", f"  {cli['remote']} SET {key} again"]
    lines += [f"  {cli[name]} GET {key}" for name in names]
    lines += ["", "Running one daemon per site (each output line starts with [site]):"]
    lines += [f"  {name}: {shlex.join(sandbox.daemon_args(ns, site=name))}" for name in names]
    lines += ["Ctrl-C stops everything.", ""]
    return "\n".join(lines)


def _start_daemons(sandbox, ns, children):
    """One daemon per site, with --rc and the site's certificate, into ``children`` (name ->
    Popen) as each starts, so that the caller stops those started if a later one fails.

    Each in its own session: Ctrl-C reaches only us, and we stop them.  With one site its
    output is ours, as always; with several, a thread copies each one's lines prefixed
    with its site's name, to tell them apart."""
    env = dict(os.environ)
    project = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [project, env.get("PYTHONPATH")]))
    several = len(sandbox.sites) > 1
    for name in sandbox.sites:
        out = subprocess.PIPE if several else None
        child = subprocess.Popen(sandbox.daemon_args(ns, site=name), env=env,
                                 start_new_session=True, stdout=out,
                                 stderr=subprocess.STDOUT if several else None)
        children[name] = child
        if several:
            threading.Thread(target=_copy_prefixed, args=(child.stdout, f"[{name}] "),
                             daemon=True).start()


def _copy_prefixed(stream, prefix):
    """Copy a daemon's output to ours line by line, each line prefixed (whole lines, so
    that the daemons' lines do not mix)."""
    prefix = prefix.encode()
    with stream:
        for line in stream:
            sys.stdout.buffer.write(prefix + line + (b"" if line.endswith(b"\n") else b"\n"))
            sys.stdout.buffer.flush()


def _wait_any(children):
    """(site name, exit status) of the first daemon to exit.  Several are polled (a demo
    need not notice within milliseconds); one is simply waited for."""
    if len(children) == 1:
        (name, child), = children.items()
        return name, child.wait()
    while True:
        for name, child in children.items():
            if child.poll() is not None:
                return name, child.returncode
        time.sleep(0.2)


def _stop_daemons(children, timeout=10.0):
    """SIGTERM every daemon still running, then wait for them all (SIGKILL past ``timeout``)."""
    running = [child for child in children.values() if child.poll() is None]
    for child in running:
        child.terminate()
    deadline = time.monotonic() + timeout
    for child in running:
        try:
            child.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def main(argv=None):
    """``python -m redisrepl.sandbox demo [--nam NS] [--sites N]`` or
    ``... up [--workdir DIR] [--sites N]``."""
    parser = argparse.ArgumentParser(prog="python -m redisrepl.sandbox",
                                     description="A loopback replication lab for redisrepl.")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="start the lab and run the daemon in the foreground")
    demo.add_argument("--nam", default="demo:", help="namespace to replicate (default: demo:)")
    demo.add_argument("--workdir", help="keep configs, certs and logs here (default: a temp dir)")
    demo.add_argument("--sites", type=_site_count, default=1, metavar="N",
                      help="N sites sharing the hub: the local Redis and site2 ... siteN, "
                           "one daemon each (default: 1)")
    up = sub.add_parser("up", help="start the lab, print it as JSON, wait for Ctrl-C")
    up.add_argument("--workdir", help="keep configs, certs and logs here (default: a temp dir)")
    up.add_argument("--sites", type=_site_count, default=1, metavar="N",
                    help="also start the sites site2 ... siteN (default: 1, the local Redis only)")
    args = parser.parse_args(argv)

    signal.signal(signal.SIGTERM, _raise_stop)
    signal.signal(signal.SIGINT, _raise_stop)
    sandbox = Sandbox(args.workdir)
    children = {}
    try:
        for number in range(2, args.sites + 1):
            sandbox.add_site(f"site{number}")
        sandbox.start()
        if args.command == "up":
            print(json.dumps(sandbox.describe(), indent=2), flush=True)
            while True:
                signal.pause()
        text = _one_site_text if args.sites == 1 else _sites_text
        print(text(sandbox, args.nam), flush=True)
        _start_daemons(sandbox, args.nam, children)
        name, status = _wait_any(children)
        if len(children) == 1:
            print(f"daemon exited with status {status}; stopping the sandbox", flush=True)
        else:
            print(f"the daemon of site {name} exited with status {status}; "
                  "stopping the other daemons and the sandbox", flush=True)
        return status
    except _Stop as e:
        print(f"{e}: stopping", file=sys.stderr, flush=True)
        return 0
    except SandboxError as e:
        print(f"sandbox: {e}", file=sys.stderr, flush=True)
        return 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        _stop_daemons(children)
        sandbox.stop()
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
