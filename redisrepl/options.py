"""Command line of ``twistd redisrepl``, with the old Go program's spellings.

Everything is checked here, before twistd daemonizes: a bad option ends the
program with one line on stderr and a non-zero exit.
"""

import os
import sys
import tomllib
from urllib.parse import urlsplit

from twisted.python import usage

from redisrepl import __version__
from redisrepl.merge import DeleteLimit
from redisrepl.namespace import Namespace
from redisrepl.tls import CredentialsError, load_policy

#: The Go program's single-dash flags and their names here.
LEGACY_FLAGS = {
    "cert": "cert", "key": "key", "CA": "ca", "raddr": "raddr", "rc": "rc",
    "nam": "nam", "haddr": "haddr", "pass": "pass", "version": "version",
}
PASSWORD_ENV = "REDISREPL_PASSWORD"
USERNAME_ENV = "REDISREPL_USERNAME"
#: Set when redisrepl re-ran itself to move a -pass password out of its argv.
LEGACY_PASS_ENV = "REDISREPL_PASSWORD_FROM_PASS"


def translate_legacy(argv):
    """Rewrite ``-cert x``, ``-CA=x``, ``--CA x`` ... into ``--cert x``, ``--ca=x``."""
    out = []
    for arg in argv:
        if arg == "--":
            out += argv[len(out):]
            break
        if arg.startswith("-") and len(arg) > 2:
            name, eq, value = arg.lstrip("-").partition("=")
            if name in LEGACY_FLAGS:
                arg = "--" + LEGACY_FLAGS[name] + eq + value
        out.append(arg)
    return out


def fail(message):
    """End the program with one clear line (before daemonizing)."""
    raise SystemExit(f"redisrepl: error: {message}")


class Options(usage.Options):
    synopsis = "[options]"
    longdesc = ("Replicate the keys under a namespace of a local Redis to a remote Redis "
                "reached through Webdis behind an HTTPS proxy that demands a client "
                "certificate; with --rc, the other way too. The old single-dash flags "
                "(-haddr -cert -key -CA -raddr -nam -rc -pass -version) work too.")

    optParameters = [
        ["config", None, None, "TOML file of options (keys are the long option names); flags override it"],
        ["haddr", None, None, "HTTPS base URL of the hub (Webdis behind the proxy), a path prefix allowed"],
        ["cert", None, None, "client certificate (PEM) presented to the proxy"],
        ["key", None, None, "private key (PEM) of the client certificate"],
        ["ca", None, None, "CA certificate(s) (PEM) that signed the proxy's certificate"],
        ["raddr", None, "127.0.0.1:6379", "local Redis: host:port, or the path of a unix socket"],
        ["db", None, "0", "database number, on both sides"],
        ["nam", None, None, "namespace: the key prefix to replicate"],
        ["username", None, None, f"ACL user for the local Redis (or ${USERNAME_ENV})"],
        ["password-file", None, None, f"file whose first line is the local Redis password (or ${PASSWORD_ENV})"],
        ["key-password-file", None, None, "file whose first line is the passphrase of an encrypted --key"],
        ["pass", None, None, "DEPRECATED (visible in ps): the local Redis password; use --password-file"],
        ["heartbeat", None, "1", "seconds between checks of both sides (and heartbeats on the remote stream)"],
        ["site", None, None, "this site's name (default: one made at the first start and kept in the local Redis)"],
        ["max-delete", None, "10%", "most keys a reconcile may delete on a side: a share of its namespace "
                                    "(at least 100 keys), a number, or 'all'"],
        ["metrics", None, None, "serve /metrics and /healthz on [HOST:]PORT (HOST defaults to 127.0.0.1)"],
        ["winner", None, "remote", "with --rc: the side whose state wins when a key changed on both (remote or local)"],
        ["reconcile-interval", None, "60", "seconds between periodic reconciles (0: only at start-up, reconnects, overflow)"],
        ["max-backlog", None, "100000", "most keys waiting in memory; past it changes are left to the reconcile"],
        ["concurrency", None, "4", "batches copied at the same time, each on its own connection"],
        ["batch", None, "256", "most keys read or written in one request"],
        ["big-key-items", None, "10000", "keys with more items (fields, elements, members, entries) are copied "
                                         "and digested in chunks of 1000"],
    ]
    optFlags = [
        ["rc", None, "also replicate remote changes to the local Redis"],
        ["all-keys", None, "replicate every key (allows an empty namespace)"],
        ["allow-http", None, "allow a plain http:// hub (only for Webdis on a trusted host)"],
        ["mirror", None, "without --rc: make the remote an exact mirror (delete remote keys this site never wrote)"],
        ["keep-remote-only", None, "deprecated, the default now: without --rc remote keys this site never "
                                   "wrote are left alone"],
    ]

    def opt_version(self):
        """Print the version and exit."""
        print(f"redisrepl {__version__}")
        sys.exit(0)

    def parseOptions(self, options=None):
        if options is None:
            options = sys.argv[1:]
        argv = translate_legacy(list(options))
        try:
            self._load_config(argv)
            super().parseOptions(argv)
        except usage.UsageError as e:
            fail(f"{e} (twistd redisrepl --help lists the options)")

    def _load_config(self, argv):
        """Take defaults from the --config file, if any, before the flags."""
        path = None
        for i, arg in enumerate(argv):
            if arg == "--config" and i + 1 < len(argv):
                path = argv[i + 1]
            elif arg.startswith("--config="):
                path = arg.split("=", 1)[1]
        if path is None:
            return
        try:
            with open(path, "rb") as f:
                values = tomllib.load(f)
        except OSError as e:
            fail(f"cannot read --config {path}: {e.strerror}")
        except tomllib.TOMLDecodeError as e:
            fail(f"--config {path} is not valid TOML: {e}")
        parameters = {p[0] for p in self.optParameters} - {"config", "pass"}
        flags = {f[0] for f in self.optFlags}
        for name, value in values.items():
            if name in flags:
                if not isinstance(value, bool):
                    fail(f"{path}: '{name}' must be true or false")
                self[name] = int(value)
            elif name in parameters:
                if isinstance(value, bool) or not isinstance(value, (str, int, float)):
                    fail(f"{path}: '{name}' must be a string or a number")
                self[name] = str(value)
            else:
                hint = " (secrets go in password-file)" if name == "pass" else ""
                fail(f"{path}: unknown key '{name}'{hint}")

    def postOptions(self):
        self["warnings"] = []
        self["db"] = _integer(self["db"], "--db", 0, 1 << 20)
        self["concurrency"] = _integer(self["concurrency"], "--concurrency", 1, 64)
        self["batch"] = _integer(self["batch"], "--batch", 1, 10000)
        self["big-key-items"] = _integer(self["big-key-items"], "--big-key-items", 1, 1_000_000)
        self["max-backlog"] = _integer(self["max-backlog"], "--max-backlog", 100, 100_000_000)
        if self["winner"] not in ("remote", "local"):
            fail(f"--winner must be remote or local, not {self['winner']!r}")
        try:
            self["reconcile-interval"] = float(self["reconcile-interval"])
        except ValueError:
            fail(f"--reconcile-interval must be a number of seconds, not {self['reconcile-interval']!r}")
        if self["reconcile-interval"] < 0:
            fail("--reconcile-interval must not be negative")
        try:
            self["heartbeat"] = float(self["heartbeat"])
        except ValueError:
            fail(f"--heartbeat must be a number of seconds, not {self['heartbeat']!r}")
        if not 0.1 <= self["heartbeat"] <= 3600:
            fail("--heartbeat must be between 0.1 and 3600 seconds")
        try:
            self["max_delete"] = DeleteLimit.parse(self["max-delete"])
        except ValueError:
            fail(f"--max-delete must be a percentage (10%), a number of keys or 'all', not {self['max-delete']!r}")
        if self["mirror"] and self["rc"]:
            fail("--mirror is for one-way mode: with --rc both sides are merged")
        if self["keep-remote-only"]:
            self["warnings"].append("--keep-remote-only is the default now and can be dropped")
        site = self["site"]
        if site is not None and not (0 < len(site) <= 64 and all(c.isalnum() or c in "-_." for c in site)):
            fail(f"--site must be 1 to 64 letters, digits, '-', '_' or '.', not {site!r}")
        self["site_name"] = site.encode() if site else None
        self._check_namespace()
        self._check_haddr()
        self._check_raddr()
        self._check_password()
        self._check_metrics()

    def _check_metrics(self):
        spec = self["metrics"]
        if not spec:
            self["metrics_endpoint"] = None
            return
        host, _, port = spec.rpartition(":")
        host = host.strip("[]") or "127.0.0.1"
        port = _integer(port, "--metrics port", 1, 65535)
        self["metrics_endpoint"] = f"tcp:{port}:interface={host.replace(':', chr(92) + ':')}"

    def _check_namespace(self):
        nam = self["nam"] or ""
        if not nam and not self["all-keys"]:
            fail("--nam is empty: give a namespace (key prefix), or --all-keys to replicate every key")
        self["namespace"] = nam.encode("utf-8", "surrogateescape")
        self["names"] = Namespace(self["namespace"])
        self["reserved_prefix"] = self["names"].reserved

    def _check_haddr(self):
        haddr = self["haddr"]
        if not haddr:
            fail("--haddr is required: the https:// URL of the hub")
        try:
            url = urlsplit(haddr)
            url.port
        except ValueError as e:
            fail(f"--haddr {haddr!r} is not a valid URL: {e}")
        if url.scheme not in ("https", "http") or not url.hostname:
            fail(f"--haddr {haddr!r} is not an https://host[:port][/path] URL")
        if url.query or url.fragment:
            fail(f"--haddr {haddr!r} must not have a query or fragment")
        if url.scheme == "http":
            if not self["allow-http"]:
                fail(f"--haddr {haddr!r} is plain HTTP: the hub needs https:// "
                     "(use --allow-http only for Webdis on a trusted host)")
            self["tls_policy"] = None
            return
        missing = [f"--{name}" for name in ("cert", "key", "ca") if not self[name]]
        if missing:
            fail(f"{', '.join(missing)} required for an https:// hub")
        passphrase = None
        if self["key-password-file"]:
            passphrase = _first_line(self["key-password-file"], "--key-password-file").encode()
            self._private_file(self["key-password-file"])
        try:
            self["tls_policy"] = load_policy(self["cert"], self["key"], self["ca"], passphrase)
        except CredentialsError as e:
            fail(str(e))
        self._private_file(self["key"])

    def _private_file(self, path):
        """Warn (at start, in the log) about a secret others can read."""
        try:
            mode = os.stat(path).st_mode
        except OSError:
            return
        if mode & 0o044:
            self["warnings"].append(f"{path} is readable by other users (mode {mode & 0o777:03o}): "
                                    f"chmod 600 it")

    def _check_raddr(self):
        raddr = self["raddr"]
        if "/" in raddr:
            self["local_endpoint"] = ("unix", raddr)
            return
        host, sep, port = raddr.rpartition(":")
        if not sep or not host:
            fail(f"--raddr {raddr!r} is neither host:port nor a unix socket path")
        self["local_endpoint"] = ("tcp", host.strip("[]"), _integer(port, "--raddr port", 1, 65535))

    def _check_password(self):
        password = None
        self["legacy_pass"] = bool(os.environ.pop(LEGACY_PASS_ENV, None))
        if self["pass"] is not None:
            _reexec_without(self["pass"])
            password = self["pass"]    # not on Linux: only the warning is left
            self["legacy_pass"] = True
        elif self["password-file"]:
            password = _first_line(self["password-file"], "--password-file")
            self._private_file(self["password-file"])
        elif os.environ.get(PASSWORD_ENV):
            password = os.environ[PASSWORD_ENV]
        self["password"] = password or None
        self["username"] = self["username"] or os.environ.get(USERNAME_ENV) or None


def _reexec_without(password):
    """Run this same command again without ``-pass PASSWORD``, the password in
    the environment instead: ``ps`` shows any user the arguments of every
    process, while a process' environment is readable only by its owner."""
    try:
        with open("/proc/self/cmdline", "rb") as f:
            argv = f.read().split(b"\0")[:-1]
    except OSError:
        return
    if b"redisrepl" not in argv:
        return  # not ``twistd ... redisrepl ...`` (the options parsed in-process)
    kept, skip = [], False
    for arg in argv[1:]:
        if skip:
            skip = False
            continue
        if arg.startswith(b"-") and arg.lstrip(b"-").split(b"=", 1)[0] == b"pass":
            skip = b"=" not in arg
            continue
        kept.append(arg)
    env = dict(os.environb)
    env[PASSWORD_ENV.encode()] = password.encode("utf-8", "surrogateescape")
    env[LEGACY_PASS_ENV.encode()] = b"1"
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [os.fsencode(sys.executable)] + kept, env)


def _first_line(path, what):
    try:
        with open(path, encoding="utf-8") as f:
            return f.readline().rstrip("\r\n")
    except OSError as e:
        fail(f"cannot read {what} {path}: {e.strerror}")


def _integer(text, what, low, high):
    try:
        value = int(text)
    except (TypeError, ValueError):
        fail(f"{what} must be a whole number, not {text!r}")
    if not low <= value <= high:
        fail(f"{what} must be between {low} and {high}")
    return value
