"""A throwaway replication lab on loopback, for tests, the demo and the benchmark.

    local redis-server          remote redis-server <- Webdis <- nginx (mTLS) <- https://localhost:P/redis
    (127.0.0.1:L)               (127.0.0.1:R)          (W)       (127.0.0.1:P)

Everything lives in one work directory: generated certificates (EC P-256), the
Webdis and nginx configurations, every log, and Redis' (unused) data dirs.
Nothing persists: a restarted Redis comes back empty and with
``notify-keyspace-events`` empty, as a real restart would.

The nginx server certificate names ``DNS:localhost`` only, so
:attr:`Sandbox.wrong_name_haddr` (``https://127.0.0.1:P/redis``) reaches the
same proxy with a certificate that fails hostname verification.

Blocking code (subprocess, sockets); standard library plus ``cryptography``.
Never used inside the daemon.  Run ``python -m redisrepl.sandbox demo`` or
``python -m redisrepl.sandbox up --workdir DIR``.
"""

import argparse
import atexit
import datetime
import http.client
import json
import os
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

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

COMPONENTS = ("local_redis", "remote_redis", "webdis", "nginx")  # start order
READY_TIMEOUT = 15.0
STOP_TIMEOUT = 5.0
CLIENT_CN = "redisrepl-sandbox-client"
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


# --- certificates -----------------------------------------------------------------

def _write_private(path, data):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        os.fchmod(f.fileno(), 0o600)
        f.write(data)


def _issue(cn, issuer=None, *, ca=False, san=None, usage=None):
    """A fresh P-256 key and its certificate; ``issuer`` is (cert, key), None for self-signed."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    issuer_cert, issuer_key = issuer if issuer else (None, key)
    now = datetime.datetime.now(datetime.timezone.utc)
    b = (x509.CertificateBuilder()
         .subject_name(name)
         .issuer_name(issuer_cert.subject if issuer_cert else name)
         .public_key(key.public_key())
         .serial_number(x509.random_serial_number())
         .not_valid_before(now - datetime.timedelta(days=1))
         .not_valid_after(now + datetime.timedelta(days=30))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
         .add_extension(x509.KeyUsage(
             digital_signature=not ca, content_commitment=False, key_encipherment=False,
             data_encipherment=False, key_agreement=False, key_cert_sign=ca, crl_sign=ca,
             encipher_only=False, decipher_only=False), critical=True)
         .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False))
    if issuer_cert is not None:
        b = b.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
            issuer_key.public_key()), critical=False)
    if usage is not None:
        b = b.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if san is not None:
        b = b.add_extension(x509.SubjectAlternativeName([x509.DNSName(san)]), critical=False)
    return b.sign(issuer_key, hashes.SHA256()), key


def generate_certificates(directory):
    """Write every PEM file into ``directory``; return {attribute name: path}.

    Good CA -> server (SAN DNS:localhost only), client (CN=redisrepl-sandbox-client),
    wrong-host server (SAN DNS:wrong.example); other CA -> other client.
    Keys are unencrypted PKCS#8, mode 0600.
    """
    os.makedirs(directory, exist_ok=True)
    ca = _issue("redisrepl sandbox CA", ca=True)
    other_ca = _issue("redisrepl sandbox other CA", ca=True)
    issued = {
        "ca": ca,
        "server": _issue("localhost", ca, san="localhost", usage=ExtendedKeyUsageOID.SERVER_AUTH),
        "client": _issue(CLIENT_CN, ca, usage=ExtendedKeyUsageOID.CLIENT_AUTH),
        "wrong_host": _issue("wrong.example", ca, san="wrong.example",
                             usage=ExtendedKeyUsageOID.SERVER_AUTH),
        "other_ca": other_ca,
        "other_client": _issue(CLIENT_CN, other_ca, usage=ExtendedKeyUsageOID.CLIENT_AUTH),
    }
    paths = {}
    for stem, (cert, key) in issued.items():
        base = os.path.join(directory, stem.replace("_", "-"))
        with open(base + ".pem", "wb") as f:
            f.write(cert.public_bytes(serialization.Encoding.PEM))
        _write_private(base + ".key", key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()))
        paths[stem + "_cert"] = base + ".pem"
        paths[stem + "_key"] = base + ".key"
    return paths


# --- configurations ----------------------------------------------------------------

def nginx_config(*, root, proxy_port, webdis_port, server_cert, server_key, ca_cert,
                 path_prefix="/redis"):
    """nginx.conf for the mTLS proxy; ``root`` holds pid, logs and temp dirs."""
    location = path_prefix.rstrip("/") + "/"
    return f"""\
worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/error.log info;

events {{
    worker_connections 1024;
}}

http {{
    access_log {root}/access.log;
    client_body_temp_path {root}/client_body_temp;
    proxy_temp_path {root}/proxy_temp;
    fastcgi_temp_path {root}/fastcgi_temp;
    uwsgi_temp_path {root}/uwsgi_temp;
    scgi_temp_path {root}/scgi_temp;

    upstream webdis_upstream {{
        server 127.0.0.1:{webdis_port};
        keepalive 32;
    }}

    server {{
        listen 127.0.0.1:{proxy_port} ssl;
        server_name localhost;

        ssl_certificate {server_cert};
        ssl_certificate_key {server_key};
        ssl_client_certificate {ca_cert};
        ssl_verify_client on;
        ssl_protocols TLSv1.2 TLSv1.3;

        location {location} {{
            proxy_pass http://webdis_upstream/;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_request_buffering off;
            proxy_read_timeout 1h;
            proxy_send_timeout 1h;
            client_max_body_size 128m;
        }}
    }}
}}
"""


def webdis_config(*, redis_port, http_port, logfile):
    """Webdis' JSON configuration (Debian's defaults: DEBUG disabled)."""
    return json.dumps({
        "redis_host": "127.0.0.1", "redis_port": redis_port, "redis_auth": None,
        "http_host": "127.0.0.1", "http_port": http_port, "threads": 2,
        "daemonize": False, "database": 0,
        "acl": [{"disabled": ["DEBUG"]}],
        "verbosity": 3, "logfile": logfile,
    }, indent=4) + "\n"


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


class Sandbox:
    """A throwaway replication lab on loopback: local Redis, remote Redis, Webdis in front
    of the remote Redis, nginx terminating mTLS in front of Webdis, and generated certificates.

    ``with Sandbox() as sb:`` starts everything and stops it all at the end.
    Ports are picked at the first start() and kept for the sandbox's life, so
    stop_component()/start_component() bring a component back on the same port.
    """

    def __init__(self, workdir=None, *, path_prefix="/redis"):
        self.workdir = os.path.abspath(workdir) if workdir else None
        self._own_workdir = False
        self.path_prefix = ("/" + path_prefix.strip("/")) if path_prefix.strip("/") else ""
        self._procs = {}
        self._certs_done = False
        self.local_redis_port = self.remote_redis_port = None
        self.webdis_port = self.proxy_port = None
        self.haddr = self.wrong_name_haddr = None
        self.ca_cert = self.client_cert = self.client_key = None
        self.server_cert = self.server_key = None
        self.other_ca_cert = self.other_client_cert = self.other_client_key = None
        self.wrong_host_cert = self.wrong_host_key = None

    # life cycle

    def start(self):
        """Generate certs (once), pick ports (once), write configs, start and await all four."""
        if self.workdir is None:
            self.workdir = tempfile.mkdtemp(prefix="redisrepl-sandbox-")
            self._own_workdir = True
            self._certs_done = False
        os.makedirs(self.workdir, exist_ok=True)
        if not self._certs_done:
            for attr, path in generate_certificates(os.path.join(self.workdir, "certs")).items():
                setattr(self, attr, path)
            self._certs_done = True
        if self.proxy_port is None:
            ports = []
            while len(ports) < 4:
                port = free_port()
                if port not in ports:
                    ports.append(port)
            self.local_redis_port, self.remote_redis_port, self.webdis_port, self.proxy_port = ports
        self.haddr = f"https://localhost:{self.proxy_port}{self.path_prefix}"
        self.wrong_name_haddr = f"https://127.0.0.1:{self.proxy_port}{self.path_prefix}"
        self._write_configs()
        atexit.register(self.stop)
        try:
            for name in COMPONENTS:
                if name not in self._procs:
                    self.start_component(name)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self):
        """Stop every component (nginx first); idempotent; remove the workdir if ours."""
        for name in reversed(COMPONENTS):
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

    def start_component(self, name):
        """(Re)start one component on its port, with its config; return once it is ready."""
        self._check_name(name)
        if self.workdir is None or self.proxy_port is None:
            raise SandboxError("the sandbox is not started")
        if name in self._procs:
            raise SandboxError(f"{name} is already running")
        console = os.path.join(self.workdir, f"{name}.console")
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
        return os.path.join(self.workdir, name + ".sock")

    def redis_cli_args(self, side):
        """``["redis-cli", "-p", port]`` for side "local" or "remote"."""
        ports = {"local": self.local_redis_port, "remote": self.remote_redis_port}
        if side not in ports:
            raise ValueError(f"side must be 'local' or 'remote', not {side!r}")
        return ["redis-cli", "-p", str(ports[side])]

    def daemon_args(self, namespace, rc=True, extra=()):
        """The ``twistd -n redisrepl`` command line wired to this sandbox.

        ``python -m twisted`` is the ``twist`` runner, which knows no ``-n``; twistd
        has no ``__main__``, hence ``-c``.  ``--pidfile=`` keeps twistd from writing
        (and fighting over) ``twistd.pid`` in the current directory."""
        args = [sys.executable, "-c", TWISTD, "-n", "--pidfile=", "redisrepl",
                "--haddr", self.haddr, "--cert", self.client_cert, "--key", self.client_key,
                "--ca", self.ca_cert, "--raddr", f"127.0.0.1:{self.local_redis_port}",
                "--nam", namespace]
        return args + (["--rc"] if rc else []) + list(extra)

    def client_ssl_context(self):
        """A stdlib SSLContext holding the good client credentials and trusting the good CA."""
        ctx = ssl.create_default_context(cafile=self.ca_cert)
        ctx.load_cert_chain(self.client_cert, self.client_key)
        return ctx

    def request(self, method, path, body=None, timeout=5.0):
        """One request through nginx (``path`` after the prefix, e.g. "/GET/k.raw"); (status, body)."""
        return _http(self.proxy_port, method, self.path_prefix + path, body,
                     self.client_ssl_context(), timeout)

    def describe(self):
        """Ports, paths and URLs, as a JSON-friendly dict."""
        keys = ("workdir", "local_redis_port", "remote_redis_port", "webdis_port", "proxy_port",
                "haddr", "wrong_name_haddr", "ca_cert", "client_cert", "client_key",
                "server_cert", "server_key", "other_ca_cert", "other_client_cert",
                "other_client_key", "wrong_host_cert", "wrong_host_key")
        return {k: getattr(self, k) for k in keys}

    # internals

    @staticmethod
    def _check_name(name):
        if name not in COMPONENTS:
            raise ValueError(f"unknown component {name!r}; one of {COMPONENTS}")

    def _write_configs(self):
        nginx_root = os.path.join(self.workdir, "nginx")
        os.makedirs(nginx_root, exist_ok=True)
        for name in ("local_redis", "remote_redis"):
            os.makedirs(os.path.join(self.workdir, name), exist_ok=True)
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
        if name.endswith("_redis"):
            port = self.local_redis_port if name == "local_redis" else self.remote_redis_port
            return [binary("redis-server"), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                    "--appendonly", "no", "--dir", os.path.join(w, name),
                    "--unixsocket", self.socket_path(name), "--unixsocketperm", "700",
                    "--logfile", os.path.join(w, name + ".log"), "--daemonize", "no"]
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
                if n.endswith("_redis"):
                    port = getattr(self, n + "_port")
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
        for rel in logs.get(name, [name + ".log"]) + [name + ".console"]:
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


def main(argv=None):
    """``python -m redisrepl.sandbox demo [--nam NS]`` or ``... up [--workdir DIR]``."""
    parser = argparse.ArgumentParser(prog="python -m redisrepl.sandbox",
                                     description="A loopback replication lab for redisrepl.")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="start the lab and run the daemon in the foreground")
    demo.add_argument("--nam", default="demo:", help="namespace to replicate (default: demo:)")
    demo.add_argument("--workdir", help="keep configs, certs and logs here (default: a temp dir)")
    up = sub.add_parser("up", help="start the lab, print it as JSON, wait for Ctrl-C")
    up.add_argument("--workdir", help="keep configs, certs and logs here (default: a temp dir)")
    args = parser.parse_args(argv)

    signal.signal(signal.SIGTERM, _raise_stop)
    signal.signal(signal.SIGINT, _raise_stop)
    sandbox = Sandbox(args.workdir)
    child = None
    try:
        sandbox.start()
        if args.command == "up":
            print(json.dumps(sandbox.describe(), indent=2), flush=True)
            while True:
                signal.pause()
        local = shlex.join(sandbox.redis_cli_args("local"))
        remote = shlex.join(sandbox.redis_cli_args("remote"))
        ns = args.nam
        print(f"""\
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
""", flush=True)
        env = dict(os.environ)
        project = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [project, env.get("PYTHONPATH")]))
        child = subprocess.Popen(sandbox.daemon_args(ns), env=env, start_new_session=True)
        status = child.wait()
        print(f"daemon exited with status {status}; stopping the sandbox", flush=True)
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
        if child is not None and child.poll() is None:
            child.terminate()
            try:
                child.wait(10)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        sandbox.stop()
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


if __name__ == "__main__":
    sys.exit(main())
