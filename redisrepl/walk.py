"""The walk of one reconcile run: both namespaces, one SCAN step of each
side at a time (redisrepl.scan), every key handed to the run's judgement
(redisrepl.judgement), with a progress line every ``PROGRESS_EVERY`` keys.

Memory stays bounded whatever the size of the namespace: first every remote
key, against its local digest read then; then the keys that only the local
side has. The run's generations are checked after each reply, so a side
that loses data during the walk voids the run at the next step.

Round trips to the hub overlap: the remote phase walks the hub's keyspace
in ``LOOKAHEAD`` ranges at once, each asking its next SCAN step as soon as
its cursor is known, and the local phase asks the hub about up to
``LOOKAHEAD`` steps of local keys at once, so a walk across a WAN does not
wait on one round trip at a time.
"""

from collections.abc import Callable
from contextlib import aclosing

import attrs
from twisted.logger import Logger

from redisrepl.epochs import SideEpoch
from redisrepl.interfaces import Clock, StateStore
from redisrepl.judgement import Judgement
from redisrepl.namespace import Namespace
from redisrepl.pace import Pace
from redisrepl.reconcile import ReconcileStats
from redisrepl.scan import LOOKAHEAD, Refused, digests_of, existing_ahead, scan_keys, scan_steps
from redisrepl.sides import LOCAL, REMOTE, short
from redisrepl.synced import SyncedTable

# a part of the reconcile run, logged under the comparison's name as it always was
log = Logger(namespace="redisrepl.comparison")

#: A progress line every so many keys scanned.
PROGRESS_EVERY = 50_000


@attrs.define
class Walk:
    """Both namespaces walked once, every key judged (see the module)."""

    local_store: StateStore
    remote_store: StateStore
    synced: SyncedTable
    epochs: dict[str, SideEpoch]  # side -> its epoch
    names: Namespace
    clock: Clock
    stats: ReconcileStats
    pace: Pace | None = None  # of the hub's steps (redisrepl.pace)

    async def compare(self, run: Judgement, started: float) -> None:
        """Judge every key of both namespaces in ``run`` (begun at ``started``)."""
        refused = Refused()
        report = progress(self.clock, "remote", started, run)
        on_local_big = big_progress(LOCAL)
        remote_steps = scan_steps(
            self.remote_store, self.names, on_big=big_progress(REMOTE), refused=refused, parts=LOOKAHEAD, pace=self.pace
        )
        async with aclosing(remote_steps) as steps:
            async for step in steps:
                run.check_generation(REMOTE)
                run.sizes[REMOTE] += len(step)
                keys = [key for key, _, _ in step]
                here = await digests_of(self.local_store, keys, on_local_big)
                run.check_generation(LOCAL)
                entries = await self.synced.get(keys)
                for (key, there, tag), mine, entry in zip(step, here, entries):
                    await run.judge(key, mine, there, entry, tag)
                await run.flush(self.epochs[REMOTE].current)
                report(run.compared, step.done)
        report = progress(self.clock, "local", started, run)
        scanned = 0
        local_keys = scan_keys(self.local_store, self.names, refused=refused)
        async with aclosing(existing_ahead(local_keys, self.remote_store, LOOKAHEAD)) as local_steps:
            async for keys, there in local_steps:
                run.check_generation(LOCAL)
                run.check_generation(REMOTE)
                scanned += len(keys)
                run.sizes[LOCAL] += len(keys)
                only_here = [(key, tag) for key, (exists, tag) in zip(keys, there) if not exists]
                keys_here = [key for key, _ in only_here]
                here = await digests_of(self.local_store, keys_here, on_local_big)
                entries = await self.synced.get(keys_here)
                for (key, tag), mine, entry in zip(only_here, here, entries):
                    await run.judge(key, mine, None, entry, tag)
                await run.flush(self.epochs[REMOTE].current)
                report(scanned, keys.done)
        if refused.count:
            self.stats.refused_keys += refused.count
            log.error("reconcile: {n} keys listed outside the namespace were refused", n=refused.count)


def progress(clock: Clock, side: str, started: float, run: Judgement) -> Callable[[int, float | None], None]:
    """A function of the keys scanned so far on ``side`` (and how far
    through its keyspace, 0 to 1, if known) that logs a progress line each
    time they pass another ``PROGRESS_EVERY``."""
    state_ = {"next": PROGRESS_EVERY}

    def report(scanned: int, done: float | None = None) -> None:
        if scanned >= state_["next"]:
            state_["next"] += PROGRESS_EVERY
            elapsed = max(clock.seconds() - started, 1e-6)
            log.info(
                "reconcile: {n} keys scanned on the {side} side{where} ({rate:.0f} keys/s), "
                "{fixed} of {compared} compared so far differ and are being copied",
                n=scanned,
                side=side,
                where="" if done is None else f", about {done:.0%} of its keyspace",
                done=done,
                rate=scanned / elapsed,
                fixed=run.fixed,
                compared=run.compared,
            )

    return report


def big_progress(side: str) -> Callable[[bytes, str], None]:
    """A line for each big key of ``side`` digested a chunk at a time."""

    def report(key: bytes, kind: str) -> None:
        log.info(
            "reconcile: digesting the big {kind} {key} on the {side} side, a chunk at a time",
            kind=kind,
            key=short(key),
            side=side,
        )

    return report
