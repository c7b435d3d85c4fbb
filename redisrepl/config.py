"""The daemon's configuration: typed, immutable, checked (pure).

``validate`` turns the raw option values (the command line and the --config
file, as ``twisted.python.usage`` leaves them: strings, and 0/1 for flags)
and the environment it is handed ($REDISREPL_USERNAME, $REDISREPL_PASSWORD)
into a ``Config``, or raises ConfigError with the one line the user sees.
Nothing is read here (no file, no certificate, not ``os.environ`` itself):
that is redisrepl.startup's job, once the options are known to be sound.
"""

import math
from collections.abc import Mapping
from urllib.parse import urlsplit

import attrs

from redisrepl.merge import DeleteLimit
from redisrepl.namespace import Namespace

#: The defaults of the options that have one, as they are typed (strings).
DEFAULTS = {
    "raddr": "127.0.0.1:6379",
    "db": "0",
    "heartbeat": "1",
    "max-delete": "10%",
    "winner": "remote",
    "reconcile-interval": "60",
    "full-walk-interval": "86400",
    "walk-share": "0.25",
    "max-backlog": "100000",
    "concurrency": "4",
    "max-concurrency": "32",
    "batch": "256",
    "big-key-items": "10000",
    "log-level": "info",
}

#: --log-level's values, least to most severe (twisted.logger's level names).
LOG_LEVELS = ("debug", "info", "warn", "error", "critical")

PASSWORD_ENV = "REDISREPL_PASSWORD"
USERNAME_ENV = "REDISREPL_USERNAME"
#: Set when redisrepl re-ran itself to move a -pass password out of its argv.
LEGACY_PASS_ENV = "REDISREPL_PASSWORD_FROM_PASS"

#: Where the local Redis is: ``("tcp", host, port)`` or ``("unix", path)``.
LocalEndpoint = tuple[str, str, int] | tuple[str, str]


class ConfigError(ValueError):
    """An option that cannot be used; the message is the whole line the user sees
    (after ``redisrepl: error: ``)."""


@attrs.frozen(kw_only=True)
class Config:
    """Everything the options and the environment say, checked; secrets in
    files stay there (redisrepl.startup reads them)."""

    #: the hub: Webdis behind the proxy, ``https://host[:port][/path]``
    haddr: str
    #: the client certificate, its key and the CA of the proxy (https only)
    cert: str | None
    key: str | None
    ca: str | None
    key_password_file: str | None
    #: the local Redis, as given (for the log) and parsed
    raddr: str
    local_endpoint: LocalEndpoint
    db: int
    #: the local Redis' ACL user: --username, else $REDISREPL_USERNAME
    username: str | None
    password_file: str | None
    #: $REDISREPL_PASSWORD (used without -pass and --password-file)
    environ_password: str | None = attrs.field(repr=False)
    #: -pass (deprecated): startup moves it out of the command line
    legacy_password: str | None = attrs.field(repr=False)
    #: this process is the re-run that moved a -pass password to $REDISREPL_PASSWORD
    password_moved: bool
    namespace: bytes
    names: Namespace
    all_keys: bool
    allow_http: bool
    rc: bool
    winner: str
    mirror: bool
    keep_remote_only: bool
    heartbeat: float
    reconcile_interval: float
    #: with --rc: seconds between full walks of the namespace, periodic
    #: reconciles in between being bucket checks (0: every one walks)
    full_walk_interval: float
    #: the most of the hub Redis' time a periodic walk of it may take (redisrepl.pace)
    walk_share: float
    max_delete: DeleteLimit
    max_backlog: int
    #: batches in flight: always ``concurrency``, up to ``max_concurrency``
    #: while keys wait for a slot (redisrepl.window)
    concurrency: int
    max_concurrency: int
    batch: int
    big_key_items: int
    #: --site, or None: a name made at the first start and kept locally
    site_name: bytes | None
    #: a Twisted server endpoint string for /metrics and /healthz, or None
    metrics_endpoint: str | None
    #: the least severe level of redisrepl's log lines kept (LOG_LEVELS)
    log_level: str = "info"

    @property
    def https(self) -> bool:
        """Is the hub reached through TLS (with the client certificate)?"""
        return urlsplit(self.haddr).scheme == "https"

    @property
    def reserved_prefix(self) -> bytes:
        return self.names.reserved


def validate(values: Mapping[str, object], environ: Mapping[str, str] | None = None) -> Config:
    """The Config of raw option values (long option names as keys; a missing
    key takes its default) and of ``environ`` (the process' environment; none
    if not given), or ConfigError. The checks run in a fixed order: the first
    one to fail names the problem."""
    environ = {} if environ is None else environ
    raw = {**DEFAULTS, **{k: v for k, v in values.items() if v is not None}}

    def flag(name: str) -> bool:
        return bool(raw.get(name))

    def string(name: str) -> str | None:
        value = raw.get(name)
        return None if value is None else str(value)

    def text(name: str) -> str | None:
        return string(name) or None

    db = integer(raw["db"], "--db", 0, 1 << 20)
    concurrency = integer(raw["concurrency"], "--concurrency", 1, 64)
    max_concurrency = integer(raw["max-concurrency"], "--max-concurrency", 1, 256)
    if values.get("max-concurrency") is None:
        max_concurrency = max(max_concurrency, concurrency)  # the default cap never undercuts --concurrency
    elif max_concurrency < concurrency:
        raise ConfigError(f"--max-concurrency ({max_concurrency}) must not be below --concurrency ({concurrency})")
    batch = integer(raw["batch"], "--batch", 1, 10000)
    big_key_items = integer(raw["big-key-items"], "--big-key-items", 1, 1_000_000)
    max_backlog = integer(raw["max-backlog"], "--max-backlog", 100, 100_000_000)
    winner = string("winner")
    if winner not in ("remote", "local"):
        raise ConfigError(f"--winner must be remote or local, not {winner!r}")
    log_level = string("log-level")
    if log_level not in LOG_LEVELS:
        raise ConfigError(f"--log-level must be one of {', '.join(LOG_LEVELS)}, not {log_level!r}")
    reconcile_interval = _seconds(raw["reconcile-interval"], "--reconcile-interval")
    if reconcile_interval < 0:
        raise ConfigError("--reconcile-interval must not be negative")
    full_walk_interval = _seconds(raw["full-walk-interval"], "--full-walk-interval")
    if full_walk_interval < 0:
        raise ConfigError("--full-walk-interval must not be negative")
    walk_share = _share(raw["walk-share"])
    heartbeat = _seconds(raw["heartbeat"], "--heartbeat")
    if not 0.1 <= heartbeat <= 3600:
        raise ConfigError("--heartbeat must be between 0.1 and 3600 seconds")
    try:
        max_delete = DeleteLimit.parse(string("max-delete"))
    except ValueError:
        raise ConfigError(
            f"--max-delete must be a percentage (10%), a number of keys or 'all', not {raw['max-delete']!r}"
        ) from None
    if flag("mirror") and flag("rc"):
        raise ConfigError("--mirror is for one-way mode: with --rc both sides are merged")
    site = string("site")
    if site is not None and not (0 < len(site) <= 64 and all(c.isalnum() or c in "-_." for c in site)):
        raise ConfigError(f"--site must be 1 to 64 letters, digits, '-', '_' or '.', not {site!r}")
    namespace = _namespace(text("nam") or "", flag("all-keys"))
    haddr = _haddr(text("haddr"), flag("allow-http"))
    if urlsplit(haddr).scheme == "https":
        missing = [f"--{name}" for name in ("cert", "key", "ca") if not raw.get(name)]
        if missing:
            raise ConfigError(f"{', '.join(missing)} required for an https:// hub")
    raddr = string("raddr") or ""
    local_endpoint = _raddr(raddr)
    metrics_endpoint = _metrics(text("metrics"))
    return Config(
        haddr=haddr,
        cert=text("cert"),
        key=text("key"),
        ca=text("ca"),
        key_password_file=text("key-password-file"),
        raddr=raddr,
        local_endpoint=local_endpoint,
        db=db,
        username=text("username") or environ.get(USERNAME_ENV) or None,
        password_file=text("password-file"),
        environ_password=environ.get(PASSWORD_ENV) or None,
        legacy_password=string("pass"),
        password_moved=bool(environ.get(LEGACY_PASS_ENV)),
        namespace=namespace,
        names=Namespace(namespace),
        all_keys=flag("all-keys"),
        allow_http=flag("allow-http"),
        rc=flag("rc"),
        winner=winner,
        log_level=log_level,
        mirror=flag("mirror"),
        keep_remote_only=flag("keep-remote-only"),
        heartbeat=heartbeat,
        reconcile_interval=reconcile_interval,
        full_walk_interval=full_walk_interval,
        walk_share=walk_share,
        max_delete=max_delete,
        max_backlog=max_backlog,
        concurrency=concurrency,
        max_concurrency=max_concurrency,
        batch=batch,
        big_key_items=big_key_items,
        site_name=site.encode() if site else None,
        metrics_endpoint=metrics_endpoint,
    )


def _seconds(value: object, what: str) -> float:
    try:
        if isinstance(value, str | int | float):
            return float(value)
    except ValueError:
        pass
    raise ConfigError(f"{what} must be a number of seconds, not {value!r}")


def _share(value: object) -> float:
    try:
        share = float(value) if isinstance(value, str | int | float) else math.nan
    except ValueError:
        share = math.nan
    if not 0.01 <= share <= 1:  # (False for NaN)
        raise ConfigError(f"--walk-share must be a number from 0.01 to 1 (a share of the hub's time), not {value!r}")
    return share


def _namespace(nam: str, all_keys: bool) -> bytes:
    if not nam and not all_keys:
        raise ConfigError("--nam is empty: give a namespace (key prefix), or --all-keys to replicate every key")
    return nam.encode("utf-8", "surrogateescape")


def _haddr(haddr: str | None, allow_http: bool) -> str:
    """The hub's URL, checked."""
    if not haddr:
        raise ConfigError("--haddr is required: the https:// URL of the hub")
    try:
        url = urlsplit(haddr)
        _ = url.port  # a bad port raises ValueError only when read
    except ValueError as e:
        raise ConfigError(f"--haddr {haddr!r} is not a valid URL: {e}") from None
    if url.scheme not in ("https", "http") or not url.hostname:
        raise ConfigError(f"--haddr {haddr!r} is not an https://host[:port][/path] URL")
    if url.query or url.fragment:
        raise ConfigError(f"--haddr {haddr!r} must not have a query or fragment")
    if url.scheme == "http" and not allow_http:
        raise ConfigError(
            f"--haddr {haddr!r} is plain HTTP: the hub needs https:// "
            "(use --allow-http only for Webdis on a trusted host)"
        )
    return haddr


def _raddr(raddr: str) -> LocalEndpoint:
    if "/" in raddr:
        return ("unix", raddr)
    host, sep, port = raddr.rpartition(":")
    if not sep or not host:
        raise ConfigError(f"--raddr {raddr!r} is neither host:port nor a unix socket path")
    return ("tcp", host.strip("[]"), integer(port, "--raddr port", 1, 65535))


def _metrics(spec: str | None) -> str | None:
    """``[HOST:]PORT`` as a Twisted server endpoint string (HOST: 127.0.0.1)."""
    if not spec:
        return None
    host, _, port_text = spec.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    port = integer(port_text, "--metrics port", 1, 65535)
    return f"tcp:{port}:interface={host.replace(':', chr(92) + ':')}"


def integer(text: object, what: str, low: int, high: int) -> int:
    """``text`` as a whole number between ``low`` and ``high``, or ConfigError."""
    try:
        value = int(text) if isinstance(text, str | int) else None
    except ValueError:
        value = None
    if value is None:
        raise ConfigError(f"{what} must be a whole number, not {text!r}")
    if not low <= value <= high:
        raise ConfigError(f"{what} must be between {low} and {high}")
    return value
