"""The reconcile's decision for one key (pure): which side's state both must take.

Inputs are digests (``digest@expiry``; None for an absent key), the key's
synchronised entry (redisrepl.synced) and the mode of the run. The rules,
in order:

1. **Equal** sides, or a type redisrepl does not replicate: nothing.
2. **Evictions** are not deletions: a side that evicted the key (its entry
   says so) is taken to hold the synchronised state.
3. **Refills of the hub.** After the hub lost data (its generation changed
   since this site confirmed it), a key whose synchronised state the hub
   held at a stamp it lost is refilled from the local side, not deleted
   or reverted here; and during the recovery window a key another site
   refilled with a state older than the one this site knows is refilled
   again, with this site's. A change or a deletion made here since is
   refilled as such, as known just after the state this site knew: the hub
   takes it over that state and older ones only. A key written on the hub
   since the loss is an edit like any other.
4. **One-way** (without ``--rc``): the local side asserts its keys, except
   where the hub changed since this site last synchronised them; it deletes
   on the hub only keys it synchronised and then deleted (``--mirror``:
   everything else too). After a loss of the local side, it is refilled
   from the hub.
5. **Two-way**: a three-way merge against the synchronised state; a key
   changed on both sides takes the winner's.
6. **No deletions in a run after a loss** of either side, but refills (a
   deletion the hub went back to before, or one made here since the state
   the hub went back to): any other deletion the run would make is left to
   the next run, made once the new generations are confirmed.
"""

import math

import attrs

from redisrepl.epochs import is_lost
from redisrepl.sides import LOCAL, REMOTE

#: The digest of a key of a type redisrepl does not replicate.
UNSUPPORTED = b"x"
#: The digest of a big key that changed type while it was digested in
#: chunks: not compared in this run (the event of that change is handled).
CHANGING = b"B"


@attrs.frozen
class Mode:
    """How a run decides. ``hub_lost``/``local_lost``: that side's generation
    changed since this site confirmed it; ``windows``: the stamps the hub
    lost (redisrepl.epochs.lost_windows); ``recovery_start``: the start of
    the hub's generation while its recovery window is open (the hub then
    tells, key by key, what was written since), else None."""

    two_way: bool = True
    winner: str = REMOTE
    mirror: bool = False
    hub_lost: bool = False
    local_lost: bool = False
    #: the local side went back to an older state of itself (a snapshot
    #: or a restart: it still holds this site's records, some trailing its
    #: data)
    local_rolled_back: bool = False
    windows: tuple = ()
    recovery_start: int | None = None

    @property
    def after_loss(self):
        return self.hub_lost or self.local_lost


@attrs.frozen
class Decision:
    """Copy the key from ``side`` (None: leave it). ``origin``: the copy is a
    refill of a state known since that stamp. ``deletes``: the copy deletes
    the key on the other side. ``stale``: see STALE."""

    side: str | None = None
    origin: int | None = None
    deletes: bool = False
    stale: bool = False


NOTHING = Decision()
#: Plain copies from each side (one each: a decision is a value).
_TAKE = {LOCAL: Decision(LOCAL), REMOTE: Decision(REMOTE)}
#: A local value older than the hub's deletion of it (the local side went
#: back in time): nothing is copied or deleted in this run; the value is
#: recorded as synchronised, so that the next run sees the hub's deletion
#: as the change (two-way: deleted here; one-way: left so on the hub).
STALE = Decision(stale=True)


def decide(local, remote, entry, mode, tag=None, recorded_later=False):
    """The Decision for one key; ``tag``: the hub's stamp of what it holds,
    if it was written since the hub's generation started (see the prelude);
    ``recorded_later``: this daemon recorded the key as synchronised later
    than the local side's record of it says (see ``_stale_here``)."""
    synced = entry.digest or None if entry is not None else None  # a tombstone: absent
    stand_in = False  # the local state is the record's, standing in for an evicted key
    if entry is not None and entry.evicted is not None:
        if entry.evicted == LOCAL and local is None:
            local, stand_in = synced, True
        elif entry.evicted == REMOTE and remote is None:
            remote = synced
    if local == remote or UNSUPPORTED in (local, remote):
        return NOTHING
    decision = _refill(local, remote, synced, entry, mode, tag)
    if decision is not None and stand_in:
        # the hub holds an older state of a key evicted here: nothing here
        # to refill it with (other sites do), and the older state is not
        # copied back over the eviction either
        return NOTHING
    if decision is None:
        if _stale_here(local, remote, entry, mode, recorded_later):
            # the hub's state is newer than this rolled-back value: it
            # refills this side; a deletion is recorded, not made (below)
            return _TAKE[REMOTE] if remote is not None else STALE
        side = _one_way(local, remote, synced, mode) if not mode.two_way else _two_way(local, remote, synced, mode)
        if side is None:
            return NOTHING
        decision = _TAKE[side]
    source = local if decision.side == LOCAL else remote
    if source is None:
        if mode.after_loss and decision.origin is None:
            return NOTHING
        return attrs.evolve(decision, deletes=True)
    return decision


def _stale_here(local, remote, entry, mode, recorded_later):
    """Is ``local`` older than what both sides held since? Told only when
    the local Redis went back to a snapshot of itself, or restarted
    (``local_rolled_back``: it still holds this site's records, so it was
    not wiped), and this daemon recorded the key as synchronised later than
    the local record of it (``recorded_later``): a snapshot can hold a value
    whose record is older, or none, since records trail copies; the value
    was there before that later copy, so it is older than it. Without that
    evidence (a daemon that was away, a key it did not copy since, a write
    it had not copied yet) the value is judged as always."""
    if not (mode.local_rolled_back and recorded_later) or mode.mirror:
        return False  # (a mirror's every key is its own)
    if local is None or CHANGING in (local, remote):
        return False
    return entry is None or entry.evicted is None  # (an evicted key is judged by its record)


def _refilled_older(known, mode, tag):
    """Does the hub hold a refill (made during its recovery window by a
    site that knew the key's state since ``tag``) older than a state this
    site knows since ``known``? The refilling site had not seen it, so its
    state was overtaken by it."""
    return mode.recovery_start is not None and tag < mode.recovery_start and known > tag


def _refill(local, remote, synced, entry, mode, tag):
    """A refill of the hub from the local side, or None: when the hub holds
    an older state than the one this site recorded (it lost what this site
    knew, or another site refilled a state this site knows to be older),
    with what this site holds. The refill carries the stamp its state is
    known since (``origin``): the record's; for a change or a deletion made
    here since, just after it (the hub takes it over a refill of the state
    it followed, and a site that knows a later state still refills over
    it; the next run merges the two as usual)."""
    if mode.recovery_start is None or entry is None:
        return None  # the hub no longer tells refills from edits, or this site knew nothing of the key
    changed = local != synced
    if changed and (CHANGING in (local, remote) or entry.stamp <= 0):
        return None  # a big key changing (its event is handled), or a record of unknown stamp
    known = entry.stamp + 1 if changed else entry.stamp
    if tag is not None:
        older = _refilled_older(known, mode, tag)  # (or an edit since the loss: merged as usual)
    else:
        older = mode.hub_lost and is_lost(entry.stamp, mode.windows)
    return Decision(LOCAL, origin=known) if older else None


def _one_way(local, remote, synced, mode):
    if mode.mirror:
        return LOCAL
    if mode.local_lost and remote is not None and remote != UNSUPPORTED:
        if local is None or (local == synced and remote != synced):
            return REMOTE  # the local side lost it: refill from the hub
    if CHANGING in (local, remote):
        return None
    if local is None:
        # delete on the hub only what this site wrote there and deleted since
        return LOCAL if synced is not None and remote == synced else None
    if synced is not None and local == synced and remote != synced:
        return None  # changed on the hub since: not reverted
    return LOCAL


def _two_way(local, remote, synced, mode):
    if CHANGING in (local, remote):
        return None
    if mode.local_lost and synced is None and local is not None:
        # the local side lost its record with its data: what it holds now
        # was written since (or is the refill, equal to the hub's)
        return LOCAL
    local_changed = local != synced
    remote_changed = remote != synced
    if local_changed and not remote_changed:
        return LOCAL
    if remote_changed and not local_changed:
        return REMOTE
    return mode.winner


@attrs.frozen
class DeleteLimit:
    """``--max-delete``: the most keys a run may delete on one side, as a
    share of that side's namespace (never fewer than ``floor`` keys), a
    count, or no limit."""

    percent: float | None = 10.0
    count: int | None = None
    floor: int = 100

    @classmethod
    def parse(cls, text):
        text = str(text).strip().lower()
        if text in ("all", "none", "unlimited"):
            return cls(None, None)
        if text.endswith("%"):
            percent = float(text[:-1])
            if not 0 <= percent <= 100:
                raise ValueError("a percentage between 0% and 100%")
            return cls(percent, None)
        count = int(text)
        if count < 0:
            raise ValueError("a number of keys, 0 or more")
        return cls(None, count)

    def limit(self, size):
        """The most deletions allowed on a side holding ``size`` keys (None: any)."""
        if self.count is not None:
            return self.count
        if self.percent is None:
            return None
        return max(self.floor, math.ceil(size * self.percent / 100))

    def __str__(self):
        if self.count is not None:
            return f"{self.count} keys"
        if self.percent is None:
            return "no limit"
        return f"{self.percent:g}% (at least {self.floor} keys)"


__all__ = ["CHANGING", "NOTHING", "STALE", "UNSUPPORTED", "DeleteLimit", "Decision", "Mode", "decide"]
