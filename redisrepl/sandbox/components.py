"""The sandbox's servers as processes, by component name: the hub's four
(``local_redis``, ``remote_redis``, ``webdis``, ``nginx``, in start order) and
each extra site's Redis (``site:<name>``).

Each is started on its port with its configuration and awaited until it
answers; a Redis starts empty unless asked to load its last snapshot.  No Redis
saves by itself (``--save ""``, no AOF, so a SIGTERM writes no dump either).
"""

import http.client
import os
import subprocess
from typing import Any

from redisrepl.sandbox import layout
from redisrepl.sandbox.configs import nginx_config, webdis_config
from redisrepl.sandbox.probes import http_request, redis_ping
from redisrepl.sandbox.processes import (
    SandboxError,
    await_ready,
    binary,
    log_tail,
    spawn,
    terminate,
)
from redisrepl.sandbox.sites import Sites

COMPONENTS = ("local_redis", "remote_redis", "webdis", "nginx")  # start order
#: The hub's chain: a request goes through nginx to Webdis to the remote Redis.
CHAIN = COMPONENTS[1:]
PONG = b'{"PING":[true,"PONG"]}'


class Components:
    """The running processes of a sandbox, and what it takes to run each component.

    ``lab`` is the :class:`Sandbox`, read when needed for its work dir (made again
    when a start() follows a stop()), ports, certificates and ``request()``;
    ``sites`` its extra sites."""

    def __init__(self, lab: Any, sites: Sites) -> None:
        self._lab = lab  # the Sandbox (Any: lab.py imports this module)
        self._sites = sites
        self._procs: dict[str, subprocess.Popen[bytes]] = {}

    def names(self) -> tuple[str, ...]:
        """Every component in start order: the four of the hub, then the extra sites."""
        return COMPONENTS + self._sites.components()

    def __contains__(self, name: object) -> bool:
        """Whether ``name`` has a process (running or exited, until stop())."""
        return name in self._procs

    def check(self, name: str) -> None:
        """ValueError unless ``name`` is a component of the sandbox."""
        if name not in self.names():
            raise ValueError(f"unknown component {name!r}; one of {self.names()}")

    def redis_port(self, name: str) -> int | None:
        """The port of Redis component ``name``; None for Webdis and nginx."""
        ports = {"local_redis": self._lab.local_redis_port, "remote_redis": self._lab.remote_redis_port}
        ports.update(self._sites.redis_ports())
        return ports.get(name)

    def write_configs(self) -> None:
        """nginx.conf and webdis.json into the work dir."""
        lab = self._lab
        root = layout.nginx_root(lab.workdir)
        os.makedirs(root, exist_ok=True)
        with open(os.path.join(root, "nginx.conf"), "w") as f:
            f.write(
                nginx_config(
                    root=root,
                    proxy_port=lab.proxy_port,
                    webdis_port=lab.webdis_port,
                    server_cert=lab.server_cert,
                    server_key=lab.server_key,
                    ca_cert=lab.ca_cert,
                    path_prefix=lab.path_prefix,
                )
            )
        with open(layout.webdis_config_path(lab.workdir), "w") as f:
            f.write(
                webdis_config(
                    redis_port=lab.remote_redis_port,
                    http_port=lab.webdis_port,
                    logfile=layout.log_path(lab.workdir, "webdis"),
                )
            )

    def start(self, name: str, snapshot: bool = False) -> None:
        """(Re)start one component; return once it is ready (see Sandbox.start_component)."""
        self.check(name)
        is_redis = self.redis_port(name) is not None
        if snapshot and not is_redis:
            raise ValueError(f"snapshot is for a Redis component, not {name!r}")
        workdir = self._lab.workdir
        if workdir is None or self._lab.proxy_port is None:
            raise SandboxError("the sandbox is not started")
        if name in self._procs:
            raise SandboxError(f"{name} is already running")
        if is_redis:
            _prepare_data_dir(workdir, name, snapshot)
        proc = spawn(self._argv(name), layout.console_path(workdir, name), cwd=workdir)
        self._procs[name] = proc
        problem = await_ready(proc, lambda: self._problem(name))
        if problem is None:
            return
        self.stop(name)
        raise SandboxError(f"{name} failed to start: {problem}\n{log_tail(workdir, layout.log_names(name))}")

    def stop(self, name: str) -> None:
        """SIGTERM one component, wait (SIGKILL its process group after a few s); no-op if stopped."""
        self.check(name)
        proc = self._procs.pop(name, None)
        if proc is not None:
            terminate(proc)

    def running(self, name: str) -> bool:
        """Whether the component's process is alive."""
        proc = self._procs.get(name)
        return proc is not None and proc.poll() is None

    def _argv(self, name):
        w = self._lab.workdir
        port = self.redis_port(name)
        if port is not None:
            return redis_server_argv(
                port,
                layout.data_dir(w, name),
                layout.log_path(w, name),
                "--dbfilename",
                layout.DUMP,
                "--unixsocket",
                layout.socket_path(w, name),
                "--unixsocketperm",
                "700",
            )
        if name == "webdis":
            return [binary("webdis"), layout.webdis_config_path(w)]
        root = layout.nginx_root(w)
        return [
            binary("nginx"),
            "-p",
            root,
            "-c",
            os.path.join(root, "nginx.conf"),
            "-e",
            layout.log_path(w, "nginx"),
            "-g",
            "daemon off;",
        ]

    def _problem(self, name):
        """None once ``name`` is ready, else what is still wrong.

        Ready means: Redis answers PING; Webdis answers ``GET /PING`` with PONG (with
        any HTTP status if the remote Redis is stopped); nginx does the same through
        TLS with the good client certificate (any status if Webdis or the remote
        Redis is stopped).  A restarted component is ready only when the running
        components in front of it answer too (Webdis reconnects to a restarted Redis
        within ~0.1 s, nginx to a restarted Webdis)."""
        names = [name] if name not in CHAIN else CHAIN[CHAIN.index(name) :]
        for n in names:
            if n != name and not self.running(n):
                break
            try:
                port = self.redis_port(n)
                if port is not None:
                    ok, status = redis_ping(port), "no PONG"
                else:
                    if n == "webdis":
                        status, body = http_request(self._lab.webdis_port, "GET", "/PING", timeout=2.0)
                    else:
                        status, body = self._lab.request("GET", "/PING", timeout=2.0)
                    behind = CHAIN[: CHAIN.index(n)]
                    ok = body == PONG if all(map(self.running, behind)) else status > 0
                    status = f"HTTP {status} {body[:100]!r}"
            except (OSError, http.client.HTTPException) as e:
                ok, status = False, repr(e)
            if not ok:
                return f"{n} not ready ({status})"
        return None


def redis_server_argv(port: int, directory: str, logfile: str, *more: str) -> list[str]:
    """A redis-server on loopback ``port``, in the foreground, saving nothing
    by itself, its files in ``directory`` (the sandbox's and the tests' own)."""
    return [
        binary("redis-server"),
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        directory,
        "--logfile",
        logfile,
        "--daemonize",
        "no",
        *more,
    ]


def _prepare_data_dir(workdir, name, snapshot):
    """Make the Redis' ``--dir``; unless ``snapshot``, delete the dump it would load."""
    os.makedirs(layout.data_dir(workdir, name), exist_ok=True)
    if not snapshot:
        try:
            os.remove(layout.dump_path(workdir, name))
        except FileNotFoundError:
            pass
