"""Sites sharing the sandbox's hub: each a Redis of its own and the client
certificate its daemon presents.

The sandbox's local Redis is the site "local" (component ``local_redis``, the
``client`` certificate); the others, made by ``Sandbox.add_site``, are kept here
by name: component ``site:<name>``, certificate CN ``redisrepl-site-<name>``.
"""

import dataclasses
import os
import re

from redisrepl.sandbox import layout
from redisrepl.sandbox.certificates import write_client_certificate

SITE_CN = "redisrepl-site-{}"
#: Site names end up in a certificate's CN and in file names; "local" and
#: "remote" are taken (the default site and redis_cli_args' other side).
SITE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,39}\Z")
RESERVED_SITE_NAMES = ("local", "remote")


@dataclasses.dataclass
class Site:
    """A site: a local Redis of its own and the client certificate its daemon presents.

    The sandbox's local Redis is the site "local" (component "local_redis", the
    ``client`` certificate); :meth:`Sandbox.add_site` makes the others (component
    "site:<name>").  Mutable only so that the sandbox can point the paths at a new
    work dir when start() has to make one again (after stop() removed its own).

    The ports, files and socket of the site "local" are None until the sandbox has
    made them (start() or add_site()); an extra site has its own from the start."""

    name: str
    redis_port: int | None
    client_cert: str | None
    client_key: str | None
    component: str
    socket_path: str | None


class Sites:
    """The extra sites by name, in the order added (not the site "local": the sandbox
    describes that one from its own attributes)."""

    def __init__(self) -> None:
        self._by_name: dict[str, Site] = {}

    def check_new(self, name: str) -> None:
        """ValueError unless ``name`` is a good name for a new site."""
        if not SITE_NAME.match(name) or name in RESERVED_SITE_NAMES:
            raise ValueError(
                f"bad site name {name!r}: letters, digits, '_', '.', '-'; not one of {RESERVED_SITE_NAMES}"
            )
        if name in self._by_name:
            raise ValueError(f"site {name!r} already exists")

    def add(self, name: str, redis_port: int, workdir: str, ca_cert: str, ca_key: str) -> Site:
        """A new site on ``redis_port``, issued its certificate by the CA in the two files."""
        self.check_new(name)
        site = Site(
            name=name,
            redis_port=redis_port,
            client_cert=None,
            client_key=None,
            component="site:" + name,
            socket_path=None,
        )
        _equip(site, workdir, ca_cert, ca_key)
        self._by_name[name] = site
        return site

    def forget(self, name: str) -> None:
        del self._by_name[name]

    def equip_all(self, workdir: str, ca_cert: str, ca_key: str) -> None:
        """New certificates and socket paths for every site, in a new work dir."""
        for site in self._by_name.values():
            _equip(site, workdir, ca_cert, ca_key)

    def by_name(self) -> dict[str, Site]:
        """Every extra site by name, in the order added (a copy)."""
        return dict(self._by_name)

    def components(self) -> tuple[str, ...]:
        """Their components ("site:<name>"), in the order added."""
        return tuple(site.component for site in self._by_name.values())

    def redis_ports(self) -> dict[str, int | None]:
        """Their Redis ports by component."""
        return {site.component: site.redis_port for site in self._by_name.values()}


def _equip(site: Site, workdir: str, ca_cert: str, ca_key: str) -> None:
    """Issue ``site`` its client certificate and point its socket into the work dir."""
    base = os.path.join(layout.certs_dir(workdir), layout.stem(site.component))
    site.client_cert, site.client_key = write_client_certificate(base, SITE_CN.format(site.name), ca_cert, ca_key)
    site.socket_path = layout.socket_path(workdir, site.component)
