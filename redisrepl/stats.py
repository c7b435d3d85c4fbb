"""What the live path counts and reports: counters for the metrics, the
state of each side's link for the health check, and warnings once per key."""

from collections import Counter

import attrs
from twisted.logger import Logger

from redisrepl.errors import LinkError, ReplicationError
from redisrepl.sides import LOCAL, REMOTE, short

log = Logger()

#: Keys remembered as already reported (a warning per key, for so many keys at most).
REPORTED_KEYS = 10_000


def _per_side() -> dict[str, int]:
    return {LOCAL: 0, REMOTE: 0}


@attrs.define
class Stats:
    events: dict[str, int] = attrs.field(factory=_per_side)  # events taken, by side
    echoes: dict[str, int] = attrs.field(factory=_per_side)  # echoes dropped, by side they came from
    writes: dict[str, int] = attrs.field(factory=_per_side)  # keys written, by side written
    requests: dict[str, int] = attrs.field(factory=_per_side)  # write batches sent, by side written
    failures: Counter[tuple[str, str]] = attrs.field(factory=Counter)  # failed requests, by (side, kind)
    last_write: dict[str, float] = attrs.field(factory=dict)  # side -> time of its last successful write
    bytes_written: dict[str, int] = attrs.field(factory=_per_side)  # keys and values sent, by side written
    coalesced: int = 0
    unchanged: int = 0
    ignored: int = 0
    big_copies: int = 0  # big keys copied in chunks
    overflows: int = 0  # changes not queued: the queue was full
    unsupported: int = 0  # changes to keys of a type not replicated
    backlog_high: int = 0  # most keys waiting at once
    evicted: dict[str, int] = attrs.field(factory=_per_side)  # eviction events, by side
    voided: int = 0  # reconcile copies dropped: their source lost data since
    deferred: int = 0  # hub keys refilled by another site, left to the reconcile
    refills_refused: int = 0  # refills the hub refused: it held something as fresh


class Links:
    """Whether each side answered its last request, and why not."""

    def __init__(self, stats: Stats) -> None:
        self._stats = stats
        #: side -> why it could not be reached last time, None once it answers
        self.error: dict[str, str | None] = {LOCAL: None, REMOTE: None}

    def failed(self, side: str, error: Exception) -> None:
        kind = error.kind if isinstance(error, ReplicationError) else "error"
        self._stats.failures[side, kind] += 1
        if isinstance(error, LinkError):
            self.error[side] = str(error)

    def answered(self, side: str) -> None:
        self.error[side] = None


class KeyReports:
    """Warnings about keys, once per key."""

    def __init__(self, stats: Stats) -> None:
        self._stats = stats
        self.warned: set[bytes] = set()

    def unsupported(self, key: bytes, side: str, kind: str) -> None:
        """Count, and report once per key, a key of a type not replicated."""
        self._stats.unsupported += 1
        self.once(key, "{key} on the {side} side is a {kind}, which is not replicated", side=side, kind=kind)

    def once(self, key: bytes, format: str, **fields: object) -> None:
        """Log ``format`` (a twisted.logger format naming ``{key}`` and the
        ``fields``) the first time ``key`` is reported."""
        if key not in self.warned and len(self.warned) < REPORTED_KEYS:
            self.warned.add(key)
            log.warn(format, key=short(key), **fields)
