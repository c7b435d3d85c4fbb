"""Generations: how redisrepl tells a lost or rolled-back Redis from edits (pure).

Every script redisrepl runs keeps an epoch in the Redis it runs on
(``<namespace>__redisrepl__:epoch``, see ``redisrepl/lua/prelude.lua``) and
ends its reply with that side's **generation**: an id, a stamp and the
generation's start. A generation ends when its Redis loses it (FLUSHDB,
FLUSHALL, a restart without persistence) or is not the server that made it
(a restart, from whatever snapshot, or a failover): the next script then
starts a new one, and records which stamps were lost in between.

The stamp is a hybrid clock in microseconds that every write on the hub
bumps. Each synchronised state redisrepl records carries the stamp at which
the hub held it, so after a loss of the hub a site knows, key by key,
whether the hub lost what it knew (its stamp is in a lost window) or the hub
simply holds something newer (edits it has not seen yet).

This site remembers, for each side, the last generation a reconcile
confirmed (in the local Redis, ``<namespace>__redisrepl__:seen``). A side
whose generation is not the confirmed one has lost or rolled back data
since: the reconcile runs in refill mode until it confirms the new one.
"""

import attrs


@attrs.frozen
class Generation:
    """One side's generation as a script's reply ends with it."""

    id: bytes
    stamp: int  # the hub's stamp of this call (after its writes)
    start: int  # the stamp at which the generation started
    base: int = 0  # the stamp a state read in this call is as of, if the hub has no record of its key

    def as_of(self, tag):
        """The stamp a state read in this call is known as of: the hub's
        record of its key (``tag``), else ``base`` (a state the hub restored
        is only as new as what it restored)."""
        return tag if tag is not None else self.base


def parse_hist(hist):
    """[(id, n0, s0)] of a generations' record ``id:n0:s0;...``, oldest first."""
    records = []
    for part in hist.split(b";"):
        fields = part.split(b":")
        if len(fields) != 3:
            continue
        try:
            records.append((fields[0], int(fields[1]), int(fields[2])))
        except ValueError:
            continue
    return records


def lost_windows(hist, confirmed):
    """The stamps lost since generation ``confirmed``: [(n0, s0)], each an
    open interval. Every generation after the confirmed one lost what lay
    between what it loaded (n0) and its start (s0). If the confirmed one is
    not in the record (it was wiped with the data, or is too old), all
    stamps before the first generation known are lost too."""
    records = parse_hist(hist)
    ids = [record[0] for record in records]
    if confirmed in ids:
        later = records[ids.index(confirmed) + 1 :]
        return [(n0, s0) for _, n0, s0 in later]
    windows = [(n0, s0) for _, n0, s0 in records]
    if records:
        windows.insert(0, (0, records[0][2]))
    return windows


def is_lost(stamp, windows):
    """Was a state held at ``stamp`` lost in one of the ``windows``?"""
    return any(low < stamp < high for low, high in windows)


class SideEpoch:
    """What this site knows of one side's generation: the last one seen in
    a reply, and the one a reconcile last confirmed. ``listener(side,
    generation)`` is called when a reply shows a generation that is neither
    (once per new generation)."""

    def __init__(self, side, listener=None):
        self.side = side
        self.current = None  # Generation, from the last reply
        self.first = None  # generation id of the first reply this process saw
        self.confirmed = None  # generation id, once loaded or confirmed
        self._listener = listener

    def observe(self, generation):
        previous, self.current = self.current, generation
        if self.first is None:
            self.first = generation.id
        if previous is not None and previous.id == generation.id:
            return
        changed = (previous is not None) or (self.confirmed is not None and generation.id != self.confirmed)
        if changed and generation.id != self.confirmed and self._listener is not None:
            self._listener(self.side, generation)

    @property
    def trusted(self):
        """The generation whose answers are taken as they are: the confirmed
        one, else the first this process saw (None: none seen yet)."""
        return self.confirmed if self.confirmed is not None else self.first

    def trusts(self, generation):
        return self.trusted is None or generation.id == self.trusted

    @property
    def changed(self):
        """Has this side's generation changed since the last confirmed one?"""
        return self.confirmed is not None and self.current is not None and self.current.id != self.confirmed
