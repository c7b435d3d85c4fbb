"""Command line of ``twistd redisrepl``, with the old Go program's spellings.

``Options`` gathers the raw values (flags over the --config file); its
``postOptions``, which twistd calls before it daemonizes, checks them into
``self.config`` (redisrepl.config, pure: the values and the environment's
$REDISREPL_USERNAME, $REDISREPL_PASSWORD) and then does start-up's effects
into ``self.runtime`` (redisrepl.startup: secrets, certificates). A bad
option or certificate ends the program there, with one line on stderr and a
non-zero exit.
"""

import os
import sys
import tomllib
from typing import NoReturn

from twisted.python import usage

from redisrepl import __version__, startup
from redisrepl.config import DEFAULTS, PASSWORD_ENV, USERNAME_ENV, Config, ConfigError, validate
from redisrepl.startup import Runtime

#: The Go program's single-dash flags and their names here.
LEGACY_FLAGS = {
    "cert": "cert",
    "key": "key",
    "CA": "ca",
    "raddr": "raddr",
    "rc": "rc",
    "nam": "nam",
    "haddr": "haddr",
    "pass": "pass",
    "version": "version",
}


def translate_legacy(argv: list[str]) -> list[str]:
    """Rewrite ``-cert x``, ``-CA=x``, ``--CA x`` ... into ``--cert x``, ``--ca=x``."""
    out: list[str] = []
    for arg in argv:
        if arg == "--":
            out += argv[len(out) :]
            break
        if arg.startswith("-") and len(arg) > 2:
            name, eq, value = arg.lstrip("-").partition("=")
            if name in LEGACY_FLAGS:
                arg = "--" + LEGACY_FLAGS[name] + eq + value
        out.append(arg)
    return out


def fail(message: str) -> NoReturn:
    """End the program with one clear line (before daemonizing)."""
    raise SystemExit(f"redisrepl: error: {message}")


class Options(usage.Options):
    #: set by postOptions
    config: Config | None = None
    runtime: Runtime | None = None

    synopsis = "[options]"
    longdesc = (
        "Replicate the keys under a namespace of a local Redis to a remote Redis "
        "reached through Webdis behind an HTTPS proxy that demands a client "
        "certificate; with --rc, the other way too. The old single-dash flags "
        "(-haddr -cert -key -CA -raddr -nam -rc -pass -version) work too."
    )

    optParameters = [
        ["config", None, None, "TOML file of options (keys are the long option names); flags override it"],
        ["haddr", None, None, "HTTPS base URL of the hub (Webdis behind the proxy), a path prefix allowed"],
        ["cert", None, None, "client certificate (PEM) presented to the proxy"],
        ["key", None, None, "private key (PEM) of the client certificate"],
        ["ca", None, None, "CA certificate(s) (PEM) that signed the proxy's certificate"],
        ["raddr", None, DEFAULTS["raddr"], "local Redis: host:port, or the path of a unix socket"],
        ["db", None, DEFAULTS["db"], "database number, on both sides"],
        ["nam", None, None, "namespace: the key prefix to replicate"],
        ["username", None, None, f"ACL user for the local Redis (or ${USERNAME_ENV})"],
        ["password-file", None, None, f"file whose first line is the local Redis password (or ${PASSWORD_ENV})"],
        ["key-password-file", None, None, "file whose first line is the passphrase of an encrypted --key"],
        ["pass", None, None, "DEPRECATED (visible in ps): the local Redis password; use --password-file"],
        [
            "heartbeat",
            None,
            DEFAULTS["heartbeat"],
            "seconds between checks of both sides (and, at most, heartbeats on a quiet remote stream)",
        ],
        ["site", None, None, "this site's name (default: one made at the first start and kept in the local Redis)"],
        [
            "max-delete",
            None,
            DEFAULTS["max-delete"],
            "most keys a reconcile may delete on a side: a share of its namespace (at least 100 keys), "
            "a number, or 'all'",
        ],
        ["metrics", None, None, "serve /metrics and /healthz on [HOST:]PORT (HOST defaults to 127.0.0.1)"],
        [
            "log-level",
            None,
            DEFAULTS["log-level"],
            "least severe log lines kept: debug (a line per key a reconcile fixes), info, warn, error, critical",
        ],
        [
            "winner",
            None,
            DEFAULTS["winner"],
            "with --rc: the side whose state wins when a key changed on both (remote or local)",
        ],
        [
            "reconcile-interval",
            None,
            DEFAULTS["reconcile-interval"],
            "seconds between periodic reconciles (0: only at start-up, reconnects, overflow)",
        ],
        [
            "full-walk-interval",
            None,
            DEFAULTS["full-walk-interval"],
            "with --rc: seconds between periodic reconciles that walk every key; those in between "
            "compare bucket digests of a walk of the hub shared by all sites (0: every one walks)",
        ],
        [
            "walk-share",
            None,
            DEFAULTS["walk-share"],
            "the most of the hub Redis' time a periodic walk of it may take, and of the local Redis' "
            "time a periodic check's fold of it, from 0.01 to 1 (1: not paced); walks that repair "
            "or refill are never paced",
        ],
        [
            "max-backlog",
            None,
            DEFAULTS["max-backlog"],
            "most keys waiting in memory; past it changes are left to the reconcile",
        ],
        [
            "concurrency",
            None,
            DEFAULTS["concurrency"],
            "batches copied at the same time, each on its own connection (more while keys wait for one)",
        ],
        [
            "max-concurrency",
            None,
            DEFAULTS["max-concurrency"],
            "most batches at the same time: the window grows to it while keys wait for a slot (across a WAN)",
        ],
        ["batch", None, DEFAULTS["batch"], "most keys read or written in one request"],
        [
            "big-key-items",
            None,
            DEFAULTS["big-key-items"],
            "keys with more items (fields, elements, members, entries) are copied and digested in chunks of 1000",
        ],
    ]
    optFlags = [
        ["rc", None, "also replicate remote changes to the local Redis"],
        ["all-keys", None, "replicate every key (allows an empty namespace)"],
        ["allow-http", None, "allow a plain http:// hub (only for Webdis on a trusted host)"],
        ["mirror", None, "without --rc: make the remote an exact mirror (delete remote keys this site never wrote)"],
        [
            "keep-remote-only",
            None,
            "deprecated, the default now: without --rc remote keys this site never wrote are left alone",
        ],
    ]

    def opt_version(self) -> NoReturn:
        """Print the version and exit."""
        print(f"redisrepl {__version__}")
        sys.exit(0)

    def parseOptions(self, options: list[str] | None = None) -> None:
        if options is None:
            options = sys.argv[1:]
        argv = translate_legacy(list(options))
        try:
            self._load_config(argv)
            super().parseOptions(argv)
        except usage.UsageError as e:
            fail(f"{e} (twistd redisrepl --help lists the options)")

    def _load_config(self, argv: list[str]) -> None:
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

    def postOptions(self) -> None:
        # checked (pure), then start-up's effects: both before twistd daemonizes
        try:
            self.config = validate(self, os.environ)
            self.runtime = startup.prepare(self.config)
        except ConfigError as e:
            fail(str(e))
