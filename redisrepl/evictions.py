"""Keys a side evicted: not deletions of shared data (the key stays evicted
there, is kept on the other side, and no reconcile deletes or refills it)."""

from collections import OrderedDict

from twisted.logger import Logger

from redisrepl.sides import LOCAL, REMOTE, short

log = Logger()

#: Keys remembered per side as evicted there (their pending copies are not deletions).
EVICTED_MEMORY = 100_000
#: Seconds between two log lines about evictions on a side.
EVICTION_REPORT_EVERY = 60.0


class Evictions:
    def __init__(self, clock, synced=None):
        self._clock = clock
        self._synced = synced  # flags the synchronised states (redisrepl.synced)
        self._evicted = {LOCAL: OrderedDict(), REMOTE: OrderedDict()}  # key -> None
        self._to_flag = {LOCAL: [], REMOTE: []}
        self._report = {LOCAL: None, REMOTE: None}  # (time of the last line, count since)

    def evicted(self, side: str, key: bytes) -> None:
        """``side`` evicted ``key``: remember it, flag it (at the end of this
        reactor turn, with the others), and say so now and then."""
        evicted = self._evicted[side]
        evicted[key] = None
        if len(evicted) > EVICTED_MEMORY:
            evicted.popitem(last=False)
        pending = self._to_flag[side]
        pending.append(key)
        if len(pending) == 1:
            self._clock.callLater(0, self._flag, side)
        self._tell(side, key)

    def was_evicted(self, side: str, key: bytes) -> bool:
        return key in self._evicted[side]

    def keys(self, side: str) -> list[bytes]:
        """The keys remembered as evicted on ``side`` (at most ``EVICTED_MEMORY``)."""
        return list(self._evicted[side])

    def cleared(self, side: str, key: bytes) -> None:
        """Something happened to ``key`` on ``side``: it is no longer just evicted."""
        self._evicted[side].pop(key, None)

    def written(self, side: str, keys) -> None:
        """``keys`` were just recorded as copied to ``side``: those evicted
        there before the record was written are flagged again after it."""
        evicted = [key for key in keys if key in self._evicted[side]]
        if evicted and self._synced is not None:
            self._synced.evicted(side, evicted)

    def _flag(self, side: str) -> None:
        keys, self._to_flag[side] = self._to_flag[side], []
        if keys and self._synced is not None:
            self._synced.evicted(side, keys)

    def _tell(self, side: str, key: bytes) -> None:
        last, count = self._report[side] or (None, 0)
        now = self._clock.seconds()
        if last is None:
            log.warn(
                "the {side} Redis evicted {key}: evictions are not replicated as deletions (the key "
                "stays evicted there and is kept on the other side); set its maxmemory-policy to "
                "noeviction to keep every key",
                side=side,
                key=short(key),
            )
            self._report[side] = (now, 0)
        elif now - last >= EVICTION_REPORT_EVERY:
            log.warn(
                "the {side} Redis evicted {n} keys in the last {seconds:.0f}s (kept on the other side)",
                side=side,
                n=count + 1,
                seconds=now - last,
            )
            self._report[side] = (now, 0)
        else:
            self._report[side] = (last, count + 1)
