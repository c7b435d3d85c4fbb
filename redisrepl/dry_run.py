"""``redisrepl reconcile --dry-run [the daemon's options] [--json]``: what a
reconcile would copy and delete now, by side, writing nothing.

It runs the reconcile's own judgement (redisrepl.comparison, walk,
judgement, merge) against both sides as they are, with this site's
synchronised state and generations as the local Redis holds them, but with
stores that only look and a live path that only takes notes. So the
answer is the daemon's answer, rules and ``--max-delete`` guard included,
for the options given (``--rc``, ``--winner``, ``--mirror``,
``--max-delete``, ``--site``).

It is a snapshot: a running daemon's live events may change things before
its next run, and the real run decides on what it finds then. Exit status:
0 when a reconcile would change nothing, 1 when it would copy or delete,
2 when it cannot tell (a side unreachable, a bad option).
"""

import json
import sys
from typing import TextIO

from twisted.logger import globalLogBeginner

from redisrepl import logs
from redisrepl.comparison import describe, for_config
from redisrepl.config import Config
from redisrepl.connections import Reactor
from redisrepl.epochs import SideEpoch
from redisrepl.options import Options
from redisrepl.reconcile import ReconcileStats
from redisrepl.sides import LOCAL, OTHER, REMOTE, short
from redisrepl.startup import Runtime
from redisrepl.synced import SyncedTable
from redisrepl.verify import CannotCompare, Report, looking, parse, react

#: Deletions (and, with --json, copies) listed at most; the counts are whole.
LISTED = 100_000

COMMAND = "redisrepl reconcile"


class Notes:
    """The live path of a dry run (redisrepl.interfaces.ILiveCopies): takes
    note of each copy asked for instead of making it."""

    backlog = 0
    max_backlog = LISTED

    def __init__(self, on_copy) -> None:
        self._on_copy = on_copy  # (source side, key, refill?) for each copy
        self.unsupported_keys = {LOCAL: 0, REMOTE: 0}

    def watch(self, limit=None):
        return set()

    def evicted_keys(self, side):
        return []

    def unwatch(self, watcher):
        pass

    def pending(self, key):
        return False

    def force(self, side, key, guard=None, origin=None, expect=None):
        self._on_copy(side, key, origin is not None)

    def unsupported(self, key, side, kind):
        self.unsupported_keys[side] += 1

    def was_evicted(self, side, key):
        return False  # the eviction flags recorded in the synced table still count


class LookingSynced(SyncedTable):
    """This site's synchronised state, read and never written."""

    async def store(self, found, local_generation):
        pass

    def record(self, items, local_generation=None):
        pass

    def evicted(self, side, keys):
        pass

    async def forget(self, entries):
        pass

    async def confirm(self, confirmations):
        pass

    async def site_name(self, wanted=None):
        return wanted or await self._store.command("GET", self.site_key)


def keys(n: int) -> str:
    return f"{n} key" if n == 1 else f"{n} keys"


def action(source: str, refill: bool) -> str:
    target = OTHER[source]
    if refill:
        return f"refill the {target} side (from the {source} side)"
    return f"copy to the {target} side (from the {source} side)"


class Plan:
    """What the dry run found a reconcile would do, and how it says it:
    a line per key as it is judged, or one JSON object at the end."""

    def __init__(self, out: TextIO, as_json: bool) -> None:
        self._out = out
        self._json = as_json
        self.copies = {LOCAL: 0, REMOTE: 0}  # by target side
        self.listed: list[dict] = []

    def copy(self, source: str, key: bytes, refill: bool) -> None:
        self.copies[OTHER[source]] += 1
        if not self._json:
            print(f"{short(key, 200)}: {action(source, refill)}", file=self._out)
        elif len(self.listed) < LISTED:
            self.listed.append({"key": short(key, 200), "action": "copy", "to": OTHER[source], "refill": refill})

    def result(self, run, notes: Notes, max_delete) -> int:
        deletions, held = {}, {}
        for target in (LOCAL, REMOTE):
            deletions[target] = run.deletions_found[target]
            held[target] = run.held_back(target)
            for key, origin, _ in run.deletions[target]:
                what = "held back by the deletion guard" if held[target] is not None else None
                if self._json:
                    if len(self.listed) < LISTED:
                        entry = {"key": short(key, 200), "action": "delete", "on": target, "refill": origin is not None}
                        self.listed.append({**entry, "held_back": held[target] is not None})
                else:
                    print(
                        f"{short(key, 200)}: delete on the {target} side" + (f" ({what})" if what else ""),
                        file=self._out,
                    )
        mode = describe(run.mode).removeprefix("; ")
        changes = sum(self.copies.values()) + sum(n for side, n in deletions.items() if held[side] is None)
        if self._json:
            report = {
                "compared": run.compared,
                "copy": self.copies,
                "delete": deletions,
                "held_back": {side: limit is not None for side, limit in held.items()},
                "unsupported": notes.unsupported_keys,
                "mode": mode,
                "keys": self.listed,
                "listed_all": len(self.listed) < LISTED,
            }
            print(json.dumps(report), file=self._out)
            return 1 if changes else 0
        if mode:
            print(f"{COMMAND}: {mode}", file=self._out)
        for target, limit in held.items():
            if limit is not None:
                print(
                    f"{COMMAND}: the deletion guard would hold back all {deletions[target]} deletions on the "
                    f"{target} side (--max-delete {max_delete} allows {limit} of its {run.sizes[target]} keys) "
                    "and copy the rest",
                    file=self._out,
                )
        skipped = sum(notes.unsupported_keys.values())
        if skipped:
            print(f"{COMMAND}: {skipped} keys of types redisrepl does not replicate are left alone", file=self._out)
        print(
            f"{run.compared} keys compared: a reconcile would copy {keys(self.copies[REMOTE])} to the remote side "
            f"and {self.copies[LOCAL]} to the local side, delete {deletions[REMOTE]} on the remote side "
            f"and {deletions[LOCAL]} on the local side" + ("" if changes else ": nothing to do"),
            file=self._out,
        )
        return 1 if changes else 0


async def dry_run(
    reactor: Reactor, config: Config, runtime: Runtime, out: TextIO = sys.stdout, as_json: bool = False
) -> int:
    """Judge every key as a reconcile would now; 0 if it would change
    nothing, 1 if it would, 2 if it cannot tell."""
    plan = Plan(out, as_json)
    notes = Notes(plan.copy)
    epochs = {side: SideEpoch(side) for side in (LOCAL, REMOTE)}
    try:
        async with looking(reactor, config, runtime, epochs) as (local_store, remote_store):
            synced = LookingSynced(local_store, config.names)
            comparison = for_config(config, notes, local_store, remote_store, synced, epochs, reactor, ReconcileStats())
            comparison.site = await synced.site_name(config.site_name)
            run = await comparison.judgement()
            await comparison.walk(run, reactor.seconds())
    except CannotCompare as e:
        return Report(out, as_json, COMMAND).error(str(e))
    return plan.result(run, notes, config.max_delete)


class DryRunOptions(Options):
    synopsis = "Usage: redisrepl reconcile --dry-run [the daemon's options] [--json]"
    optFlags = [
        *Options.optFlags,
        ["dry-run", None, "required: judge every key as a reconcile would, and write nothing"],
        ["json", None, "print one JSON object (compared, copy, delete, held_back, keys) instead of lines"],
    ]
    longdesc = (
        "What a reconcile would copy and delete now, by side, without writing anything: the "
        "daemon's own rules, this site's synchronised state and the --max-delete guard, for the "
        "options given (--rc, --winner, --mirror, --max-delete, --site). One line per key, then a "
        "summary. Exit status: 0 when a reconcile would change nothing, 1 when it would copy or "
        "delete, 2 when it cannot tell (a bad option included). The daemon reconciles by itself; "
        "only the dry run is a command. Progress lines go to stderr."
    )


def main(argv: list[str] | None = None) -> None:
    options = DryRunOptions()
    parse(options, argv, f"{COMMAND}")
    if not options["dry-run"]:
        print(
            f"{COMMAND}: error: only --dry-run is a command; the daemon reconciles by itself "
            "(at start, after any gap, and every --reconcile-interval)",
            file=sys.stderr,
        )
        raise SystemExit(2)
    # the walk's progress lines (every 50,000 keys) and warnings, on stderr
    globalLogBeginner.beginLoggingTo([logs.command_lines()], redirectStandardIO=False)
    logs.keep_from("info")
    config, runtime = options.config, options.runtime
    assert config is not None and runtime is not None  # set by parse
    react(lambda reactor: dry_run(reactor, config, runtime, as_json=bool(options["json"])))
