"""One reconcile run's judgement of each key: which side both must take
(``redisrepl.merge.decide``), the copies it asks of the live path, the
states found equal (recorded), and the deletions, held to the end of the run
and made only within ``--max-delete``.
"""

import attrs
from twisted.logger import Logger

from redisrepl.epochs import is_lost
from redisrepl.live import ANYTHING
from redisrepl.merge import CHANGING, UNSUPPORTED, Mode, decide
from redisrepl.sides import LOCAL, OTHER, REMOTE, short

log = Logger()

#: At most this many keys listed when the deletion guard stops a run.
GUARD_SAMPLE = 5


class Voided(Exception):
    """A side's generation changed during the run: its decisions no longer hold."""

    def __init__(self, side):
        super().__init__(side)
        self.side = side


def _per_side():
    return {LOCAL: 0, REMOTE: 0}


def _expectable(digest):
    """What a reconcile copy expects the target to hold still: the digest the
    run saw there (None: absent); anything when that digest says nothing
    (a big key that was changing, a type not replicated)."""
    if digest in (CHANGING, UNSUPPORTED):
        return ANYTHING
    return digest


@attrs.define
class Judgement:
    """One reconcile run: its decisions, its updates of the synced table, its counts."""

    live: object  # redisrepl.interfaces.ILiveCopies (the router)
    synced: object  # redisrepl.synced.SyncedTable
    epochs: dict  # side -> redisrepl.epochs.SideEpoch
    stats: object  # redisrepl.reconcile.ReconcileStats
    room: object  # async (): wait until the live path has room for more copies
    mode: Mode
    generations: dict  # side -> generation id the run decides on
    max_delete: object  # redisrepl.merge.DeleteLimit
    allow_key: bytes  # the local key that lets a mass deletion through
    unlimited: bool = False  # allow-mass-delete was set: this run may delete any number
    hub_now: int = 0  # the hub's stamp when the run began
    used_allowance: bool = attrs.field(init=False)
    watcher: set = attrs.field(factory=set)
    forced: list = attrs.field(factory=list)  # keys copied by this run (kept only after a loss)
    deletions: dict = attrs.field(factory=lambda: {LOCAL: [], REMOTE: []})  # to delete at the end
    deletions_found: dict = attrs.field(factory=_per_side)
    sizes: dict = attrs.field(factory=_per_side)  # keys of the namespace on each side
    compared: int = 0
    fixed: int = 0
    refilled: int = 0
    unresolved: int = 0  # keys the hub lost, left to the live path in this run
    #: deletions that refill what the hub lost, not made in this run (the
    #: guard held them back, or events were lost while it looked)
    refills_held: int = 0
    #: such deletions past what one run holds (--max-backlog): the next run's
    refills_dropped: int = 0
    #: deletions left to the next run as events were lost while this one looked
    deferred: bool = False
    _sets: list = attrs.field(factory=list)

    def __attrs_post_init__(self):
        self.used_allowance = self.unlimited

    def check_generation(self, side):
        current = self.epochs[side].current
        if current is not None and current.id != self.generations[side]:
            raise Voided(side)

    async def judge(self, key, here, there, entry, tag):
        self.compared += 1
        live = self.live
        if key in self.watcher or live.pending(key):
            # a live event (or an earlier fix) is being handled: it wins; but
            # if the hub lost this key, the run cannot vouch for it
            if self.mode.hub_lost and entry is not None and is_lost(entry.stamp, self.mode.windows):
                self.unresolved += 1
            return
        if here == UNSUPPORTED:
            live.unsupported(key, LOCAL, "module type")
        if there == UNSUPPORTED:
            live.unsupported(key, REMOTE, "module type")
        if entry is not None and entry.evicted is None:
            for side in (LOCAL, REMOTE):
                if live.was_evicted(side, key):  # its flag may not be recorded yet
                    entry = attrs.evolve(entry, evicted=side)
        later = self.mode.local_rolled_back and self.synced.recorded_after(key, entry.stamp if entry else 0)
        decision = decide(here, there, entry, self.mode, tag, later)
        if decision.side is None:
            if decision.stale:
                # a value of the local snapshot the hub deleted since (see
                # merge.STALE): recorded as the state both sides had, stamp
                # unknown, for the next run to judge the deletion by
                self._sets.append((key, here, 0))
                return
            if (
                here == there
                and here not in (UNSUPPORTED, CHANGING)
                and (entry is None or entry.digest != here or entry.evicted is not None)
            ):
                # equal on both sides but not as recorded (changed the same way on both)
                self._sets.append((key, here, tag))
            return
        self.fixed += 1
        seen = there if decision.side == LOCAL else here
        if decision.deletes:
            target = OTHER[decision.side]
            self.deletions_found[target] += 1
            log.debug("reconcile: {key} to delete on the {target} side", key=short(key), target=target)
            if len(self.deletions[target]) < live.max_backlog:
                self.deletions[target].append((key, decision.origin, _expectable(seen)))
            elif decision.origin is not None:
                self.refills_dropped += 1
            return
        if decision.origin is not None:
            self.refilled += 1
        log.debug("reconcile: {key} differs; taking the {side} side", key=short(key), side=decision.side)
        await self._copy(decision.side, key, decision.origin, _expectable(seen))

    async def _copy(self, source, key, origin, expect):
        await self.room()
        self.live.force(source, key, guard=self.generations[source], origin=origin, expect=expect)
        if self.mode.after_loss:
            self.forced.append(key)

    async def flush(self, generation):
        """Record the states found equal, as of the hub's record of each
        (``generation``: the hub's, as the step read them)."""
        sets, self._sets = self._sets, []
        # (not a key changed since it was judged: its record would be stale)
        sets = [item for item in sets if item[0] not in self.watcher]
        if sets:
            await self.synced.store(
                [(key, digest, generation.as_of(tag)) for key, digest, tag in sets], self.generations[LOCAL]
            )

    def held_back(self, target):
        """The limit of deletions on ``target`` if this run found more (the
        mass-deletion guard holds them all back), else None."""
        limit = None if self.unlimited else self.max_delete.limit(self.sizes[target])
        return limit if limit is not None and self.deletions_found[target] > limit else None

    async def delete(self):
        """Make the deletions decided, side by side, unless more than the
        limit: then none on that side (the mass-deletion guard)."""
        for target in (LOCAL, REMOTE):
            found, keys = self.deletions_found[target], self.deletions[target]
            limit = self.held_back(target)
            if limit is not None or (keys and getattr(self.watcher, "events_lost", False)):
                self.refills_held += sum(1 for _, origin, _ in keys if origin is not None)
            if limit is not None:
                self.stats.guard_tripped[target] = found
                self.stats.blocked[target] = found
                log.error(
                    "reconcile: {n} keys of the {side} side's {size} would be deleted, more than "
                    "--max-delete allows ({limit}: {rule}); none deleted there, everything else "
                    "copied. Among them: {sample}. If these deletions are wanted, set "
                    "{allow} in the local Redis (redis-cli SET ... 1) to let the next run through",
                    n=found,
                    side=target,
                    size=self.sizes[target],
                    limit=limit,
                    rule=str(self.max_delete),
                    sample=", ".join(short(key) for key, _, _ in keys[:GUARD_SAMPLE]),
                    allow=short(self.allow_key, 200),
                )
                continue
            self.stats.guard_tripped.pop(target, None)
            self.stats.blocked[target] = 0
            if keys and getattr(self.watcher, "events_lost", False):
                # a stream was subscribed again while this run looked: a
                # change it missed (a refill by another site, say) may be
                # what it takes for a deletion. The next run (requested by
                # the new subscription) judges these keys again.
                log.warn(
                    "reconcile: events were lost while it looked (a stream was reopened); "
                    "its {n} deletions on the {side} side wait for the next run",
                    n=len(keys),
                    side=target,
                )
                self.deferred = True
                continue
            source = OTHER[target]
            for key, origin, expect in keys:
                if key in self.watcher or self.live.pending(key):
                    continue
                await self._copy(source, key, origin, expect)
                if origin is not None:
                    self.refilled += 1
            self.stats.deleted[target] += len(keys)
            if keys:
                log.info("reconcile: deleting {n} keys on the {side} side", n=len(keys), side=target)
