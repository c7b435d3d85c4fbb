"""What to do with a key state read from its source (pure).

The router reads a batch of keys where they changed; each state read is
classified against what the reconcile asked for, the side's generation
(did it lose or roll back data?), evictions, and the two sides'
expected-event tables: an echo of redisrepl's own write, already on the
other side, a state that may be a loss rather than a change, a big key, or
a copy to make.
"""

import enum

import attrs

from redisrepl.epochs import Generation
from redisrepl.expected import ExpectedEvents
from redisrepl.live import Forced
from redisrepl.sides import LOCAL, REMOTE
from redisrepl.state import ABSENT, NOT_READ, BigState, KeyState

#: Keyspace events that say the key is gone (a container emptied also says del).
DELETING_EVENTS = frozenset((b"del", b"expired", b"rename_from", b"move_from"))


class Verdict(enum.Enum):
    LATER = "later"  # the reply was full: read it again in the next batch
    VOID = "void"  # the reconcile's copy, but the source lost data since it decided
    EVICTED = "evicted"  # absent because evicted there: not a deletion
    UNEXPLAINED = "unexplained"  # absent, but no event that deletes came yet: that event decides
    ECHO = "echo"  # what redisrepl wrote there itself
    LOST = "lost"  # the source lost data and this may be the loss: the reconcile judges
    REFILLED = "refilled"  # another site refilled it on the hub: the reconcile judges
    BIG = "big"  # copied in chunks, beside the batches
    THERE = "there"  # the other side holds it already
    UNSUPPORTED = "unsupported"  # a type not replicated
    COPY = "copy"


@attrs.frozen
class Reading:
    """What is known of one read reply as a whole."""

    source: str
    generation: Generation | None
    untrusted: bool  # the source's generation is not one this site confirmed


def classify(
    reading: Reading,
    key: bytes,
    state: KeyState | BigState,
    tag: int | None,
    forced: Forced | None,
    *,
    evicted: bool,
    events: "LocalEvents",
    src_expected: ExpectedEvents,
    dst_expected: ExpectedEvents,
) -> Verdict:
    """The verdict on ``state`` of ``key`` (``tag``: the hub's stamp of it),
    ``forced`` the reconcile's request for it from this source (or None);
    ``events`` the local side's (whether an absence is explained, a state
    made since a loss)."""
    generation = reading.generation
    if state is NOT_READ:
        return Verdict.LATER
    if forced is not None and forced.guard is not None and (generation is None or generation.id != forced.guard):
        # the source lost or rolled back data since the reconcile decided:
        # what it holds now is no reason to delete or revert
        return Verdict.VOID
    if state is ABSENT and evicted:
        return Verdict.EVICTED
    if state is ABSENT and forced is None and not events.absence_explained(reading.source, key):
        # the key's latest event wrote it, yet it is gone: the event that
        # took it away (an eviction, an expiry) is still on its way, and an
        # eviction is no deletion to copy. Its event decides (a deletion or
        # an expiry queues the key again).
        return Verdict.UNEXPLAINED
    if reading.untrusted and forced is None and not events.made_since_loss(reading.source, key, state, tag, generation):
        # the source lost or rolled back data since this site last confirmed
        # it: what it holds now may be the loss, not a change
        if not state.big and src_expected.is_echo(key, state):
            return Verdict.ECHO
        return Verdict.LOST
    if (
        reading.source == REMOTE
        and forced is None
        and tag is not None
        and generation is not None
        and tag < generation.start
        and not (state.big or src_expected.is_echo(key, state))
    ):
        # refilled by another site after the hub lost data: whether its state
        # or ours is the fresher is the reconcile's to judge
        return Verdict.REFILLED
    if state.big:
        return Verdict.BIG
    if src_expected.is_echo(key, state):
        return Verdict.ECHO
    if dst_expected.holds(key, state):
        # already there, as far as redisrepl knows (and if the target changed
        # meanwhile, its change is newer and must not be overwritten: its
        # event brings it back)
        return Verdict.THERE
    if not state.supported:
        return Verdict.UNSUPPORTED
    return Verdict.COPY


class LocalEvents:
    """The local side's events, numbered: one that came after the latest
    local (re)subscription was made after any restart of the local Redis."""

    def __init__(self) -> None:
        self._seen = 0
        #: key -> (number, name) of its latest event, while it waits
        self._latest: dict[bytes, tuple[int, bytes | None]] = {}
        self._subscribed = 0  # number of the last event before the latest subscription

    def event(self, key: bytes, name: bytes | None) -> None:
        self._seen += 1
        self._latest[key] = (self._seen, name)

    def subscribed(self) -> None:
        self._subscribed = self._seen

    def copied(self, key: bytes) -> None:
        """``key`` waits no more: its event is history."""
        self._latest.pop(key, None)

    def absence_explained(self, source: str, key: bytes) -> bool:
        """May an absence of ``key`` read on ``source`` be copied? Not on the
        local side while the key's latest event is one that writes it."""
        if source != LOCAL:
            return True
        latest = self._latest.get(key)
        return latest is None or latest[1] is None or latest[1] in DELETING_EVENTS

    def made_since_loss(
        self, source: str, key: bytes, state: KeyState | BigState, tag: int | None, generation: Generation | None
    ) -> bool:
        """Was this state, read from a side whose generation is not trusted
        (it lost or rolled back data), written there since? On the hub, its
        record of the key says so. On the local side, the key's latest event
        must have come since the latest local subscription (a restart ends
        the subscription), and agree with the state: present, or gone after
        an event that deletes (an absence after a ``set`` is the loss: after
        a wipe, whatever is present was written since)."""
        if source != LOCAL:
            assert generation is not None  # asked only of a reading with an untrusted generation
            return tag is not None and tag >= generation.start
        number, event = self._latest.get(key, (0, None))
        if number <= self._subscribed:
            return False
        return state is not ABSENT or event in DELETING_EVENTS
