"""One reconcile run, end to end: find each side's generation and what this
site confirmed of it, walk both namespaces (redisrepl.walk) judging every
key (redisrepl.judgement), forget stale records, make the deletions, and
confirm the generations once nothing the hub lost is left unjudged.

A run knows, from each side's generation (redisrepl.epochs), whether that
side lost or rolled back data since this site last confirmed it: the run is
then a refill (nothing deleted, nothing the hub lost reverted here), and it
confirms the new generations only once its refills are copied. Each reply
tells the side's generation, so a side that loses data during a run voids
it (at the next step, and at the latest before any deletion, which a run
makes only at its end).
"""

import attrs
from twisted.internet import task
from twisted.logger import Logger

from redisrepl import scripts
from redisrepl.config import Config
from redisrepl.epochs import SideEpoch, is_lost, lost_windows
from redisrepl.interfaces import Clock, LiveCopies, StateStore
from redisrepl.judgement import Judgement, Voided
from redisrepl.merge import DeleteLimit, Mode
from redisrepl.namespace import Namespace
from redisrepl.pace import DEFAULT_SHARE, Pace
from redisrepl.reconcile import Outcome, ReconcileStats
from redisrepl.scan import existing
from redisrepl.sides import LOCAL, REMOTE
from redisrepl.synced import SyncedEntry, SyncedTable
from redisrepl.walk import PROGRESS_EVERY, Walk

log = Logger()

__all__ = ["PROGRESS_EVERY", "Comparison", "Outcome", "describe", "for_config"]


@attrs.define
class Comparison:
    live: LiveCopies  # the router
    local_store: StateStore
    remote_store: StateStore
    synced: SyncedTable
    epochs: dict[str, SideEpoch]  # side -> its epoch
    names: Namespace
    clock: Clock
    stats: ReconcileStats
    two_way: bool
    winner: str = REMOTE
    mirror: bool = False
    max_delete: DeleteLimit = attrs.field(factory=DeleteLimit)
    wanted_site: bytes | None = None
    site: bytes | None = None  # this site's name, once known
    walk_share: float = DEFAULT_SHARE  # of the hub's time, for a periodic run's walk
    #: at most one walk at full speed this often (seconds; 0: no limit)
    full_speed_every: float = 0.0
    _full_speed_until: float = attrs.field(default=0.0, init=False)

    @property
    def stores(self) -> dict[str, StateStore]:
        return {LOCAL: self.local_store, REMOTE: self.remote_store}

    async def run(self, reason: str, paced: bool = False) -> Outcome:
        """One run; ``paced``: asked for by the schedule alone (its walk of
        the hub at the pace of --walk-share), not to repair or refill."""
        started = self.clock.seconds()
        again = []
        self.site = await self.synced.site_name(self.site or self.wanted_site)
        run = await self.judgement()
        mode = run.mode
        log.info("reconcile ({reason}): comparing the namespace on both sides{how}", reason=reason, how=describe(mode))
        run.watcher = self.live.watch()
        pace = self._pace(reason, paced and not mode.after_loss, started)
        try:
            await self.walk(run, started, pace)
            await self._forget_stale(run)
            await self._recheck(run)  # both sides as decided, just before deleting
            await run.delete()
            if mode.after_loss:
                # the new generations are confirmed only once what was lost
                # is back, or the next run would take its absence for a deletion
                await self._drained(run.forced)
                await self._recheck(run)
        except Voided as e:
            self.stats.voided += 1
            log.warn(
                "reconcile ({reason}) stopped: the {side} side lost or rolled back data during it; "
                "its deletions are not made, and a run in refill mode starts now",
                reason=reason,
                side=e.side,
            )
            return Outcome((f"voided: the {e.side} side's generation changed",))
        finally:
            self.live.unwatch(run.watcher)
            self.stats.hub_seconds += pace.used
        if run.unresolved:
            # keys the hub lost that the live path was busy with were not
            # judged: until a run has, the hub's generation is not confirmed
            # (its absence of them would look like deletions)
            log.info(
                "reconcile ({reason}): {n} keys the hub lost were being copied and are judged by another refill run",
                reason=reason,
                n=run.unresolved,
            )
            again.append("after a loss: keys not yet judged")
        elif mode.after_loss and (run.refills_held or run.refills_dropped):
            # deletions the hub lost, not made again: confirmed, its
            # generation would make the next run take their keys for new ones
            log.info(
                "reconcile ({reason}): {n} deletions that refill what the hub lost are not made yet; "
                "the hub's new generation is confirmed by the run that makes them",
                reason=reason,
                n=run.refills_held + run.refills_dropped,
            )
            if run.refills_dropped and not run.refills_held:
                # (none at once behind the guard: it would hold them again)
                again.append("after a loss: more refills than one run holds")
        else:
            await self._confirm(run.generations)
        if mode.after_loss and not run.refills_held:
            # the deletions this run held back are made by the next one, on
            # the generations it has just confirmed (refills held back wait
            # for the run the reopened stream asked for, or for the guard
            # to let them through: no run at once, that would hold them again)
            again.append("after a loss: deletions held back")
        if run.used_allowance and not run.deferred and not (mode.after_loss and run.refills_dropped):
            # (kept for the runs that make the deletions this one could not)
            await self.local_store.command("DEL", run.allow_key)
        duration = self.clock.seconds() - started
        self.stats.runs += 1
        self.stats.keys_compared += run.compared
        self.stats.keys_fixed += run.fixed
        self.stats.refilled += run.refilled
        self.stats.last_duration = duration
        self.stats.last_end = self.clock.seconds()
        log.info(
            "reconcile ({reason}) done: {compared} keys compared, {fixed} differed and are being "
            "copied, in {duration:.2f}s ({hub:.2f}s of the hub Redis' time{paced})",
            reason=reason,
            compared=run.compared,
            fixed=run.fixed,
            duration=duration,
            hub=pace.used,
            paced=f", paced to {pace.share:.0%} of it" if pace.share < 1 else "",
        )
        if pace.share >= 1:
            self._full_speed_until = self.clock.seconds() + self.full_speed_every
        return Outcome(tuple(again))

    def _pace(self, reason: str, paced: bool, started: float) -> Pace:
        """The pace of a run's walk of the hub: --walk-share for a run the
        schedule alone asked for; full speed (the pace only measures) for
        one that repairs or refills, unless one did less than
        ``full_speed_every`` ago (a flapping link or a Redis that keeps
        losing data cannot keep the hub busy)."""
        if paced:
            return Pace(self.clock, self.walk_share)
        if started < self._full_speed_until:
            log.info(
                "reconcile ({reason}): paced to {share:.0%} of the hub's time, as a walk at full speed "
                "ended less than {every:g}s ago",
                reason=reason,
                share=self.walk_share,
                every=self.full_speed_every,
            )
            return Pace(self.clock, self.walk_share)
        return Pace(self.clock, 1.0)

    async def walk(self, run: Judgement, started: float, pace: Pace | None = None) -> None:
        """Judge every key of both namespaces in ``run`` (redisrepl.walk),
        the hub's steps at ``pace``."""
        walk = Walk(
            self.local_store, self.remote_store, self.synced, self.epochs, self.names, self.clock, self.stats, pace
        )
        await walk.compare(run, started)

    async def judgement(self) -> Judgement:
        """A run's judgement: the generations it decides on, what this site
        confirmed of them, and so the mode of its decisions (redisrepl.merge)."""
        recorded = await self.synced.confirmed()
        # a local Redis that lost its generation yet still holds this site's
        # record of what it confirmed went back to a snapshot of itself (or
        # restarted); a wiped one holds no record
        rolled_back = LOCAL in recorded
        confirmed = self._confirmed(recorded)
        allow_key = self.names.allow_key
        checks = {
            side: await store.check(flag_key=allow_key if side == LOCAL else b"") for side, store in self.stores.items()
        }
        if LOCAL not in confirmed and self.site:
            # the local Redis lost this site's record: does the hub remember
            # this site (by its name) and which local generation it confirmed?
            recorded = await self.remote_store.get(self._site_record())
            if recorded:
                confirmed[LOCAL] = recorded
        return Judgement(
            self.live,
            self.synced,
            self.epochs,
            self.stats,
            self._room,
            self._mode(checks, confirmed, rolled_back),
            {side: check.generation.id for side, check in checks.items()},
            self.max_delete,
            allow_key,
            unlimited=checks[LOCAL].flagged,
            hub_now=checks[REMOTE].now,
        )

    def _confirmed(self, recorded):
        """{side: generation id} this site last confirmed: from memory (which
        outlives a wipe of the local Redis), else from the local Redis'
        record (``recorded``), else the first one this process saw (whatever
        it recorded since then is of that one or later)."""
        confirmed = dict(recorded)
        for side, epoch in self.epochs.items():
            if epoch.confirmed is not None:
                confirmed[side] = epoch.confirmed
            elif side in confirmed:
                epoch.confirmed = confirmed[side]
            elif epoch.first is not None:
                confirmed[side] = epoch.first
        return confirmed

    def _mode(self, checks, confirmed, rolled_back):
        remote = checks[REMOTE]
        hub_lost = REMOTE in confirmed and remote.generation.id != confirmed[REMOTE]
        local_lost = LOCAL in confirmed and checks[LOCAL].generation.id != confirmed[LOCAL]
        window_open = remote.now < remote.generation.start + scripts.RECOVERY_WINDOW * 1_000_000
        return Mode(
            two_way=self.two_way,
            winner=self.winner,
            mirror=self.mirror,
            hub_lost=hub_lost,
            local_lost=local_lost,
            local_rolled_back=local_lost and rolled_back,
            windows=tuple(lost_windows(remote.hist, confirmed.get(REMOTE))) if hub_lost else (),
            recovery_start=remote.generation.start if window_open else None,
        )

    async def _recheck(self, run):
        for side, store in self.stores.items():
            await store.check()
            run.check_generation(side)

    async def _confirm(self, generations):
        """This site has seen these generations through a whole run: losses
        before them are refilled."""
        await self.synced.confirm(generations)
        for side, gen_id in generations.items():
            self.epochs[side].confirmed = gen_id
        await self.remote_store.command("SET", self._site_record(), generations[LOCAL])

    def _site_record(self):
        return self.names.meta + b"site:" + self.site

    async def _forget_stale(self, run):
        """Drop the synchronised state of keys absent on both sides (deleted
        on both while the daemon was away), but the tombstones of deletions
        still within the recovery window. After a loss of the hub, a key it
        lost that was deleted here since gets a tombstone just after the
        state the hub lost: another site may refill that state later, and
        this site's deletion is then refilled over it (merge._refill)."""
        oldest = run.hub_now - scripts.RECOVERY_WINDOW * 1_000_000
        cursor = b"0"
        while True:
            reply = await self.synced.scan(cursor)
            cursor, keys, values = reply[0], reply[1][0::2], reply[1][1::2]
            if keys:
                # the hub is asked only about keys gone here: in a namespace
                # that did not change, none (no round trip per step)
                here = await existing(self.local_store, keys)
                gone = [(key, value) for key, value, (exists, _) in zip(keys, values, here) if not exists]
                there = await existing(self.remote_store, [key for key, _ in gone])
                stale, deleted = [], []
                for (key, value), (exists, _) in zip(gone, there):
                    fate = None if exists else _absent_record(run, key, SyncedEntry.decode(value), oldest)
                    if fate == 0:
                        stale += (key, value)
                    elif fate is not None:
                        deleted.append((key, b"", fate))
                if deleted:
                    # (refused by the record script if the local side lost its generation since)
                    await self.synced.store(deleted, run.generations[LOCAL])
                if stale:
                    # (a record made since it was read, say the tombstone of a
                    # deletion copied meanwhile, stays)
                    await self.synced.forget(stale)
            if cursor in (b"0", 0):
                return

    async def _drained(self, keys):
        """Wait until the router has copied ``keys`` (none queued or in flight)."""
        keys = set(keys)
        while keys:
            keys = {key for key in keys if self.live.pending(key)}
            if keys:
                await task.deferLater(self.clock, 0.1, lambda: None)

    async def _room(self):
        """Wait while the router's queue is more than half full: the fixes of
        a large reconcile go in as fast as they are copied, never overflowing."""
        while self.live.backlog >= self.live.max_backlog // 2:
            await task.deferLater(self.clock, 0.05, lambda: None)


def _absent_record(run, key, entry, oldest):
    """What becomes of this site's record of a key absent on both sides:
    kept (None), dropped (0), or made a tombstone at a stamp (the stamp).
    A tombstone is kept for the recovery window after it, and while the
    hub's is open (a site may still refill what it deleted). After a loss
    of the hub, a key it lost that was deleted here since (not evicted,
    not touched by the live path, no event lost) gets a tombstone just
    after the state the hub lost (see Comparison._forget_stale)."""
    mode = run.mode
    if entry.tombstone:
        window_open = mode.recovery_start is not None and entry.stamp < mode.recovery_start
        return None if entry.stamp > oldest or window_open else 0
    if not (mode.hub_lost and entry.evicted is None and entry.stamp > 0 and is_lost(entry.stamp, mode.windows)):
        return 0
    if key in run.watcher or getattr(run.watcher, "events_lost", False) or run.live.was_evicted(LOCAL, key):
        return 0
    return entry.stamp + 1


def for_config(
    config: Config,
    live: LiveCopies,
    local_store: StateStore,
    remote_store: StateStore,
    synced: SyncedTable,
    epochs: dict[str, SideEpoch],
    clock: Clock,
    stats: ReconcileStats,
) -> Comparison:
    """The comparison the options ask for (--rc, --winner, --mirror,
    --max-delete, --site), between these collaborators."""
    return Comparison(
        live,
        local_store,
        remote_store,
        synced,
        epochs,
        config.names,
        clock,
        stats,
        two_way=config.rc,
        winner=config.winner,
        mirror=config.mirror,
        max_delete=config.max_delete,
        wanted_site=config.site_name,
        walk_share=config.walk_share,
        full_speed_every=config.reconcile_interval,
    )


def describe(mode):
    parts = []
    if mode.hub_lost:
        parts.append(
            "the remote side lost or rolled back data since this site last confirmed it: "
            "refilling what it lost from the local side"
        )
    if mode.local_lost:
        parts.append(
            "the local side lost or rolled back data since this site last confirmed it"
            + ("" if mode.two_way else ": refilling it from the remote side")
        )
    if parts:
        parts.append("deleting nothing in this run but refills")
    return "".join("; " + part for part in parts)
