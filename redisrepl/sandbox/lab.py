"""The :class:`Sandbox`: a work dir, its certificates and ports, the sites and the
components (sites.py, components.py), started and stopped together; what users of
the lab need to reach it (daemon command lines, redis-cli, requests through the
proxy) comes from reach.py."""

import atexit
import os
import re
import shutil
import tempfile

from redisrepl.sandbox import layout
from redisrepl.sandbox.certificates import (
    generate_certificates,
    write_client_certificate,
)
from redisrepl.sandbox.components import Components
from redisrepl.sandbox.processes import free_port
from redisrepl.sandbox.reach import TWISTD, Reach
from redisrepl.sandbox.sites import Site, Sites

__all__ = ["TWISTD", "Sandbox"]


class Sandbox(Reach):
    """A throwaway replication lab on loopback: local Redis, remote Redis, Webdis in front
    of the remote Redis, nginx terminating mTLS in front of Webdis, and generated certificates.

    ``with Sandbox() as sb:`` starts everything and stops it all at the end.
    Ports are picked at the first start() (or add_site()) and kept for the sandbox's
    life, so stop_component()/start_component() bring a component back on the same port.
    Extra sites (add_site) are started and stopped with the rest.  What users need to
    reach it (daemon_args, request, describe, ...) comes from :class:`Reach`.
    """

    def __init__(self, workdir: str | None = None, *, path_prefix: str = "/redis"):
        self.workdir: str | None = os.path.abspath(workdir) if workdir else None
        self._own_workdir = False
        self.path_prefix = ("/" + path_prefix.strip("/")) if path_prefix.strip("/") else ""
        self._sites = Sites()  # the extra sites in the order added
        self._components = Components(self, self._sites)
        self._issued = 0  # client certificates issued by issue_client_certificate()
        self._started = False
        self._certs_done = False
        # ports, URLs and files: None until made (by start() or add_site())
        self.local_redis_port: int | None = None
        self.remote_redis_port: int | None = None
        self.webdis_port: int | None = None
        self.proxy_port: int | None = None
        self.haddr: str | None = None
        self.wrong_name_haddr: str | None = None
        self.ca_cert: str | None = None
        self.ca_key: str | None = None
        self.client_cert: str | None = None
        self.client_key: str | None = None
        self.server_cert: str | None = None
        self.server_key: str | None = None
        self.other_ca_cert: str | None = None
        self.other_ca_key: str | None = None
        self.other_client_cert: str | None = None
        self.other_client_key: str | None = None
        self.wrong_host_cert: str | None = None
        self.wrong_host_key: str | None = None

    # life cycle

    def start(self) -> "Sandbox":
        """Generate certs (once), pick ports (once), write configs, start and await all four
        and the extra sites."""
        self._prepare()
        self._components.write_configs()
        self._started = True
        try:
            for name in self._components.names():
                if name not in self._components:
                    self.start_component(name)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop every component (the extra sites, then nginx first); idempotent; remove the
        workdir if ours.  The extra sites are kept: a later start() starts them again."""
        self._started = False
        for name in reversed(self._components.names()):
            if name in self._components:
                self.stop_component(name)
        atexit.unregister(self.stop)
        if self._own_workdir and self.workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None
            self._own_workdir = False

    def __enter__(self) -> "Sandbox":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def add_site(self, name: str) -> Site:
        """Another site sharing the hub: its own redis-server (same flags as the local Redis,
        its own port, data dir and socket) and its own client certificate, CN
        ``redisrepl-site-<name>`` signed by the good CA.  Returns its :class:`Site`.

        Before start() the site is only prepared (certificate, port) and start() starts
        it; after, its Redis is started now (and the site forgotten if that fails)."""
        self._sites.check_new(name)
        self._prepare()
        assert self.workdir is not None and self.ca_cert is not None and self.ca_key is not None
        site = self._sites.add(name, self._free_port(), self.workdir, self.ca_cert, self.ca_key)
        if self._started:
            try:
                self.start_component(site.component)
            except BaseException:
                self._sites.forget(name)
                raise
        return site

    @property
    def sites(self) -> dict[str, Site]:
        """Every site by name: "local" (the local Redis and the ``client`` certificate)
        first, then the extra sites in the order add_site() made them."""
        local = Site(
            name="local",
            redis_port=self.local_redis_port,
            client_cert=self.client_cert,
            client_key=self.client_key,
            component="local_redis",
            socket_path=self.socket_path("local_redis") if self.workdir else None,
        )
        return {"local": local, **self._sites.by_name()}

    def issue_client_certificate(self, cn: str) -> tuple[str, str]:
        """A new client certificate for ``cn`` signed by the good CA (to play a renewed or a
        shared certificate); (cert path, key path), in a new pair of files each time."""
        self._prepare()
        assert self.workdir is not None and self.ca_cert is not None and self.ca_key is not None
        self._issued += 1
        slug = re.sub(r"[^A-Za-z0-9_.-]", "_", cn)[:40]
        base = os.path.join(layout.certs_dir(self.workdir), f"issued-{self._issued}-{slug}")
        return write_client_certificate(base, cn, self.ca_cert, self.ca_key)

    def start_component(self, name: str, snapshot: bool = False) -> None:
        """(Re)start one component on its port, with its config; return once it is ready.

        For a Redis (local, remote or a site): with ``snapshot=False`` its ``dump.rdb`` is
        deleted first, so it comes back empty; with ``snapshot=True`` the dump is kept and
        loaded, so it comes back as its last ``SAVE`` left it (stopping writes no dump:
        there are no save points, and Redis 7's default ``shutdown-on-sigterm`` saves on
        SIGTERM only if there are)."""
        self._components.start(name, snapshot)

    def stop_component(self, name: str) -> None:
        """SIGTERM one component, wait (SIGKILL its process group after a few s); no-op if stopped."""
        self._components.stop(name)

    def running(self, name: str) -> bool:
        """Whether the component's process is alive."""
        return self._components.running(name)

    # internals

    def _prepare(self) -> None:
        """The work dir, the certificates and the ports, made once (by start() or add_site());
        again the work dir and certificates after stop() removed a work dir of ours."""
        if self.workdir is None:
            self.workdir = tempfile.mkdtemp(prefix="redisrepl-sandbox-")
            self._own_workdir = True
            self._certs_done = False
        os.makedirs(self.workdir, exist_ok=True)
        atexit.register(self.stop)  # stop() unregisters every registration
        if not self._certs_done:
            for attr, path in generate_certificates(layout.certs_dir(self.workdir)).items():
                setattr(self, attr, path)
            self._certs_done = True
            assert self.ca_cert is not None and self.ca_key is not None  # set just above
            self._sites.equip_all(self.workdir, self.ca_cert, self.ca_key)
        if self.proxy_port is None:
            for attr in ("local_redis_port", "remote_redis_port", "webdis_port", "proxy_port"):
                setattr(self, attr, self._free_port())  # one by one: each avoids the ones before
        self.haddr = f"https://localhost:{self.proxy_port}{self.path_prefix}"
        self.wrong_name_haddr = f"https://127.0.0.1:{self.proxy_port}{self.path_prefix}"

    def _free_port(self) -> int:
        """A free port that no component of this sandbox has been given yet."""
        taken = {
            self.local_redis_port,
            self.remote_redis_port,
            self.webdis_port,
            self.proxy_port,
            *self._sites.redis_ports().values(),
        }
        while True:
            port = free_port()
            if port not in taken:
                return port
