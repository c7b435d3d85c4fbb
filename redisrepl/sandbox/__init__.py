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

The modules, from the files to the processes to the lab:

* ``certificates``: the CA, server and client certificates;
* ``configs``: nginx.conf and webdis.json;
* ``layout``: where each file lives in the work dir;
* ``processes``: finding, starting, awaiting and stopping a server program;
* ``probes``: a Redis PING and one HTTP(S) request, blocking;
* ``sites``: the sites sharing the hub, by name;
* ``components``: the hub's servers and the sites' Redis as processes;
* ``reach``: what users of the lab need to reach it (command lines, requests);
* ``lab``: the :class:`Sandbox` itself;
* ``demo``: the command line (``__main__``).
"""

from redisrepl.sandbox.certificates import (
    CLIENT_CN,
    generate_certificates,
    write_client_certificate,
    write_server_certificate,
)
from redisrepl.sandbox.components import COMPONENTS
from redisrepl.sandbox.configs import nginx_config, webdis_config
from redisrepl.sandbox.demo import main
from redisrepl.sandbox.lab import Sandbox
from redisrepl.sandbox.layout import DUMP
from redisrepl.sandbox.processes import (
    READY_TIMEOUT,
    STOP_TIMEOUT,
    SandboxError,
    binary,
    free_port,
)
from redisrepl.sandbox.reach import TWISTD
from redisrepl.sandbox.sites import RESERVED_SITE_NAMES, SITE_CN, SITE_NAME, Site

__all__ = [
    "CLIENT_CN",
    "COMPONENTS",
    "DUMP",
    "READY_TIMEOUT",
    "RESERVED_SITE_NAMES",
    "SITE_CN",
    "SITE_NAME",
    "STOP_TIMEOUT",
    "TWISTD",
    "Sandbox",
    "SandboxError",
    "Site",
    "binary",
    "free_port",
    "generate_certificates",
    "main",
    "nginx_config",
    "webdis_config",
    "write_client_certificate",
    "write_server_certificate",
]
