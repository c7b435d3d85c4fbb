"""What users of a sandbox need to reach it, from the ports and files it made:
daemon command lines, redis-cli arguments, sockets and dumps, TLS contexts,
requests through the proxy, and the whole description as JSON.

:class:`Reach` is mixed into :class:`~redisrepl.sandbox.lab.Sandbox`, which
makes those ports and files (start() or add_site()) and knows its sites; it
reads only their public names, each None until made (asking for one before
raises SandboxError).
"""

import dataclasses
import ssl
import sys
from collections.abc import Iterable
from typing import TypeVar

from redisrepl.sandbox import layout
from redisrepl.sandbox.probes import http_request
from redisrepl.sandbox.processes import SandboxError
from redisrepl.sandbox.sites import Site

TWISTD = "from twisted.scripts.twistd import run; run()"
#: What describe() gives besides the sites.
DESCRIBED = (
    "workdir",
    "local_redis_port",
    "remote_redis_port",
    "webdis_port",
    "proxy_port",
    "haddr",
    "wrong_name_haddr",
    "ca_cert",
    "client_cert",
    "client_key",
    "server_cert",
    "server_key",
    "other_ca_cert",
    "other_client_cert",
    "other_client_key",
    "wrong_host_cert",
    "wrong_host_key",
)

_T = TypeVar("_T")


def _made(value: _T | None, what: str) -> _T:
    """``value``, one of the sandbox's ports or files: SandboxError while it has not
    made it (start() or add_site() does)."""
    if value is None:
        raise SandboxError(f"the sandbox is not started: it has no {what} yet")
    return value


class Reach:
    """The ways into a sandbox (see the module): what it made, as its users need it."""

    # made by the Sandbox (None until made)
    workdir: str | None
    path_prefix: str
    remote_redis_port: int | None
    proxy_port: int | None
    haddr: str | None
    ca_cert: str | None
    client_cert: str | None
    client_key: str | None

    @property
    def sites(self) -> dict[str, Site]:
        """Every site by name, "local" first (the Sandbox knows them)."""
        raise NotImplementedError

    def socket_path(self, name: str = "local_redis") -> str:
        """The unix socket a Redis of the sandbox also listens on."""
        return layout.socket_path(_made(self.workdir, "work dir"), name)

    def dump_path(self, name: str = "local_redis") -> str:
        """The RDB file a Redis component's ``SAVE`` writes and ``snapshot=True`` loads."""
        return layout.dump_path(_made(self.workdir, "work dir"), name)

    def redis_cli_args(self, side: str) -> list[str]:
        """``["redis-cli", "-p", port]`` for side "local", "remote" or an extra site's name."""
        ports: dict[str, int | None] = {"remote": self.remote_redis_port}
        ports.update((name, site.redis_port) for name, site in self.sites.items())
        if side not in ports:
            raise ValueError(f"side must be 'local', 'remote' or a site's name, not {side!r}")
        return ["redis-cli", "-p", str(ports[side])]

    def daemon_args(
        self,
        namespace: str,
        rc: bool = True,
        extra: Iterable[str] = (),
        site: str | Site | None = None,
        cert: str | None = None,
        key: str | None = None,
    ) -> list[str]:
        """The ``twistd -n redisrepl`` command line wired to this sandbox.

        ``site`` (a name or a :class:`Site`; default the local Redis) picks ``--raddr``
        and the client certificate; ``cert``/``key`` replace that certificate (a shared
        or a renewed one).

        ``python -m twisted`` is the ``twist`` runner, which knows no ``-n``; twistd
        has no ``__main__``, hence ``-c``.  ``--pidfile=`` keeps twistd from writing
        (and fighting over) ``twistd.pid`` in the current directory."""
        s = self._site("local" if site is None else site)
        args = [
            sys.executable,
            "-c",
            TWISTD,
            "-n",
            "--pidfile=",
            "redisrepl",
            "--haddr",
            _made(self.haddr, "hub URL"),
            "--cert",
            cert or _made(s.client_cert, "client certificate"),
            "--key",
            key or _made(s.client_key, "client key"),
            "--ca",
            _made(self.ca_cert, "CA certificate"),
            "--raddr",
            f"127.0.0.1:{s.redis_port}",
            "--nam",
            namespace,
        ]
        return args + (["--rc"] if rc else []) + list(extra)

    def client_ssl_context(self, cert: str | None = None, key: str | None = None) -> ssl.SSLContext:
        """A stdlib SSLContext trusting the good CA and holding client credentials: the
        good ``client`` certificate unless ``cert``/``key`` name others (a site's)."""
        ctx = ssl.create_default_context(cafile=_made(self.ca_cert, "CA certificate"))
        ctx.load_cert_chain(
            cert or _made(self.client_cert, "client certificate"), key or _made(self.client_key, "client key")
        )
        return ctx

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        timeout: float = 5.0,
        cert: str | None = None,
        key: str | None = None,
    ) -> tuple[int, bytes]:
        """One request through nginx (``path`` after the prefix, e.g. "/GET/k.raw"); (status, body).
        ``cert``/``key``: the client certificate to present instead of the good one."""
        return http_request(
            _made(self.proxy_port, "proxy port"),
            method,
            self.path_prefix + path,
            body,
            self.client_ssl_context(cert, key),
            timeout,
        )

    def describe(self) -> dict:
        """Ports, paths and URLs, as a JSON-friendly dict (``sites``: every site by name)."""
        described = {k: getattr(self, k) for k in DESCRIBED}
        described["sites"] = {name: dataclasses.asdict(site) for name, site in self.sites.items()}
        return described

    def _site(self, site: str | Site) -> Site:
        """A :class:`Site` from a site or a site's name."""
        if isinstance(site, Site):
            return site
        sites = self.sites
        if site not in sites:
            raise ValueError(f"unknown site {site!r}; one of {tuple(sites)}")
        return sites[site]
