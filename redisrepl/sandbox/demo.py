"""The sandbox's command line, ``python -m redisrepl.sandbox`` (``./dev.sh demo``):

* ``demo [--nam NS] [--workdir DIR] [--sites N]`` starts the lab and one daemon per
  site (``--rc``), prints what to type in another terminal to watch a change travel,
  and stops everything at Ctrl-C (SIGINT or SIGTERM) or when a daemon exits;
* ``up [--workdir DIR] [--sites N]`` starts only the lab and prints it as JSON.

``--sites N`` adds the sites ``site2`` ... ``siteN`` to the local Redis.
"""

import argparse
import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time

import redisrepl
from redisrepl.sandbox.lab import Sandbox
from redisrepl.sandbox.processes import SandboxError


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
  {local} SET {shlex.quote(ns + "hello")} world
  {remote} GET {shlex.quote(ns + "hello")}
and remote -> local (--rc):
  {remote} SET {shlex.quote(ns + "back")} again
  {local} GET {shlex.quote(ns + "back")}

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
    lines += [f"  site {name:<{width}}  Redis 127.0.0.1:{site.redis_port}" for name, site in sites.items()]
    lines += [
        f"  remote Redis  127.0.0.1:{sandbox.remote_redis_port}  (Webdis 127.0.0.1:{sandbox.webdis_port})",
        f"  hub           {sandbox.haddr}",
        "",
        "In another terminal, from each site to the remote and to another site (--rc):",
    ]
    for i, name in enumerate(names):
        other = names[(i + 1) % len(names)]
        key = shlex.quote(ns + "from-" + name)
        lines += [
            f" {name} -> remote, {other}:",
            f"  {cli[name]} SET {key} hello",
            f"  {cli['remote']} GET {key}",
            f"  {cli[other]} GET {key}",
        ]
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
    project = os.path.dirname(os.path.dirname(os.path.abspath(redisrepl.__file__)))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [project, env.get("PYTHONPATH")]))
    several = len(sandbox.sites) > 1
    for name in sandbox.sites:
        out = subprocess.PIPE if several else None
        child = subprocess.Popen(
            sandbox.daemon_args(ns, site=name),
            env=env,
            start_new_session=True,
            stdout=out,
            stderr=subprocess.STDOUT if several else None,
        )
        children[name] = child
        if several:
            threading.Thread(target=_copy_prefixed, args=(child.stdout, f"[{name}] "), daemon=True).start()


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
        ((name, child),) = children.items()
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


def main(argv: list[str] | None = None) -> int:
    """``python -m redisrepl.sandbox demo [--nam NS] [--sites N]`` or
    ``... up [--workdir DIR] [--sites N]``."""
    parser = argparse.ArgumentParser(
        prog="python -m redisrepl.sandbox", description="A loopback replication lab for redisrepl."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="start the lab and run the daemon in the foreground")
    demo.add_argument("--nam", default="demo:", help="namespace to replicate (default: demo:)")
    demo.add_argument("--workdir", help="keep configs, certs and logs here (default: a temp dir)")
    demo.add_argument(
        "--sites",
        type=_site_count,
        default=1,
        metavar="N",
        help="N sites sharing the hub: the local Redis and site2 ... siteN, one daemon each (default: 1)",
    )
    up = sub.add_parser("up", help="start the lab, print it as JSON, wait for Ctrl-C")
    up.add_argument("--workdir", help="keep configs, certs and logs here (default: a temp dir)")
    up.add_argument(
        "--sites",
        type=_site_count,
        default=1,
        metavar="N",
        help="also start the sites site2 ... siteN (default: 1, the local Redis only)",
    )
    args = parser.parse_args(argv)

    signal.signal(signal.SIGTERM, _raise_stop)
    signal.signal(signal.SIGINT, _raise_stop)
    sandbox = Sandbox(args.workdir)
    children: dict[str, subprocess.Popen[bytes]] = {}
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
            print(
                f"the daemon of site {name} exited with status {status}; stopping the other daemons and the sandbox",
                flush=True,
            )
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
