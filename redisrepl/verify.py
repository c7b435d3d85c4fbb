"""``python -m redisrepl verify [the daemon's options]``: compare the namespace
on both sides, never write.

Each side computes the digests of its keys itself (the reconcile's scan), so
values do not travel. Prints one line per differing key (missing on a side,
type, value, or expiry beyond a tolerance), then a summary; exits 0 when the
sides are equal, 1 when they differ, 2 when it cannot compare.
"""

import json
import sys
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any, TextIO

from twisted.internet import task
from twisted.internet.defer import Deferred, TimeoutError

from redisrepl import connections
from redisrepl.config import Config
from redisrepl.connections import Reactor
from redisrepl.epochs import SideEpoch
from redisrepl.errors import ReplicationError
from redisrepl.options import Options
from redisrepl.scan import LOOKAHEAD, scan_digests
from redisrepl.sides import LOCAL, REMOTE, short
from redisrepl.startup import Runtime
from redisrepl.stores import LocalStore, RemoteStore

#: Expiries further apart than this (seconds) are reported.
TTL_TOLERANCE = 2.0


TYPE_LETTERS = {
    b"h": "hash",
    b"l": "list",
    b"m": "set",
    b"z": "sorted set",
    b"t": "stream",
    b"x": "another type",
    b"B": "big key that changed while it was compared",
}


def kind(digest: bytes | None) -> str:
    if digest is None:
        return "absent"
    return TYPE_LETTERS.get(digest[:1], "string")


def differences(
    local: dict[bytes, bytes],
    remote: dict[bytes, bytes],
    local_ttl: dict[bytes, int],
    remote_ttl: dict[bytes, int],
    tolerance: float = TTL_TOLERANCE,
) -> list[tuple[bytes, str]]:
    """(key, description) of every key that differs, sorted by key."""
    found = []
    for key in sorted(set(local) | set(remote)):
        here, there = local.get(key), remote.get(key)
        if here is None:
            found.append((key, f"missing on the local side ({kind(there)} on the remote)"))
        elif there is None:
            found.append((key, f"missing on the remote side ({kind(here)} on the local)"))
        elif kind(here) != kind(there):
            found.append((key, f"type differs: {kind(here)} locally, {kind(there)} remotely"))
        elif here.partition(b"@")[0] != there.partition(b"@")[0]:
            found.append((key, f"{kind(here)} value differs"))
        else:
            a, b = local_ttl.get(key), remote_ttl.get(key)
            if (a is None) != (b is None):
                which = "only locally" if b is None else "only remotely"
                found.append((key, f"expires {which}"))
            elif a is not None and b is not None and abs(a - b) > tolerance * 1000:
                found.append((key, f"expiry differs by {abs(a - b) / 1000:.1f}s"))
    return found


class CannotCompare(Exception):
    """The sides cannot be compared (a side unreachable, a refused request)."""


@asynccontextmanager
async def looking(
    reactor: Reactor, config: Config, runtime: Runtime, epochs: dict[str, SideEpoch] | None = None
) -> AsyncIterator[tuple[LocalStore, RemoteStore]]:
    """Both sides' stores, connected and looking only (their scripts start
    no generation and write nothing); ``epochs``: told each generation seen."""
    local_redis = connections.local_commands(reactor, config, runtime)
    hub = connections.remote_client(reactor, config, runtime)
    local_redis.startService()
    try:
        ready = local_redis.factory.deferred
        ready.addTimeout(10, reactor)
        try:
            await ready
        except (TimeoutError, ValueError) as e:
            raise CannotCompare(f"cannot use the local Redis at {local_redis.description}: {e}") from None
        epochs = epochs or {}
        names, big = config.names, config.big_key_items
        remote_store = RemoteStore(hub.client, reactor, names, big_items=big, epoch=epochs.get(REMOTE))
        local_store = LocalStore(local_redis.factory, reactor, names, big_items=big, epoch=epochs.get(LOCAL))
        local_store.look_only = remote_store.look_only = True
        try:
            yield local_store, remote_store
        except ReplicationError as e:
            raise CannotCompare(str(e)) from None
    finally:
        await hub.stopService()
        await local_redis.stopService()


async def verify(
    reactor: Reactor, config: Config, runtime: Runtime, out: TextIO = sys.stdout, as_json: bool = False
) -> int:
    """Compare both sides; 0 if equal, 1 if they differ, 2 if they cannot be
    compared. ``as_json``: one JSON object instead of lines."""
    report = Report(out, as_json)
    local_ttl: dict[bytes, int] = {}
    remote_ttl: dict[bytes, int] = {}
    refused = []

    def refuse(side, key):
        refused.append((side, key))

    try:
        async with looking(reactor, config, runtime) as (local_store, remote_store):
            local = await scan_digests(local_store, config.names, expiries=local_ttl, refused=refuse)
            remote = await scan_digests(
                remote_store, config.names, expiries=remote_ttl, refused=refuse, parts=LOOKAHEAD
            )
    except CannotCompare as e:
        return report.error(str(e))
    found = differences(local, remote, local_ttl, remote_ttl)
    return report.result(len(set(local) | set(remote)), found, refused)


class Report:
    """What verify prints: lines, or one JSON object (``--json``)."""

    def __init__(self, out: TextIO, as_json: bool, command: str = "redisrepl verify") -> None:
        self._out = out
        self._json = as_json
        self._command = command

    def error(self, message: str) -> int:
        if self._json:
            print(json.dumps({"error": message}), file=self._out)
        else:
            print(f"{self._command}: {message}", file=self._out)
        return 2

    def result(self, compared: int, found: list[tuple[bytes, str]], refused: list[tuple[str, bytes]]) -> int:
        if self._json:
            report = {
                "compared": compared,
                "differ": len(found),
                "equal": not found,
                "differences": [{"key": short(key, 200), "what": what} for key, what in found],
                "outside_namespace": [{"side": side, "key": short(key, 200)} for side, key in refused],
            }
            print(json.dumps(report), file=self._out)
        else:
            for side, key in refused[:10]:
                print(
                    f"redisrepl verify: the {side} side listed {short(key, 200)}, outside the namespace: ignored",
                    file=self._out,
                )
            for key, what in found:
                print(f"{short(key, 200)}: {what}", file=self._out)
            print(
                f"{compared} keys compared, {len(found)} differ" + ("" if found else ": both sides are equal"),
                file=self._out,
            )
        return 1 if found else 0


class VerifyOptions(Options):
    synopsis = "Usage: redisrepl-verify [the daemon's options] [--json]"
    optFlags = [
        *Options.optFlags,
        ["json", None, "print one JSON object (compared, differ, differences) instead of lines"],
    ]
    longdesc = (
        "Compare the namespace on both sides and never write: one line per key that differs "
        "(missing on a side, type, value, or expiry), then a summary. Exit status: 0 when the "
        "sides are equal, 1 when they differ, 2 when they cannot be compared (a bad option "
        "included). Takes the daemon's options, or its --config file; those that only matter "
        "to the daemon (--rc, --metrics, ...) are accepted and ignored."
    )


def parse(options: Options, argv: list[str] | None, command: str) -> None:
    """Parse ``argv`` (default: the command line); a bad option exits 2,
    "cannot compare", not 1, "differ"."""
    try:
        options.parseOptions(sys.argv[1:] if argv is None else argv)
    except SystemExit as e:
        if isinstance(e.code, str):
            print(e.code.replace("redisrepl: error:", f"{command}: error:", 1), file=sys.stderr)
            raise SystemExit(2) from None
        raise


def react(body: Callable[[Reactor], Coroutine[Any, Any, int]]) -> None:
    """Run ``body(reactor)`` on the reactor and exit with the code it returns."""

    def run(reactor):
        return Deferred.fromCoroutine(body(reactor)).addCallback(_exit)

    task.react(run)


def _exit(code: int) -> None:
    if code:
        raise SystemExit(code)


def main(argv: list[str] | None = None) -> None:
    options = VerifyOptions()
    parse(options, argv, "redisrepl-verify")
    config, runtime = options.config, options.runtime
    assert config is not None and runtime is not None  # set by parse
    react(lambda reactor: verify(reactor, config, runtime, as_json=bool(options["json"])))
