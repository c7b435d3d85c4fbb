"""The copies: read a batch of keys where they changed, classify each state
(redisrepl.classify), write what must cross to the other side in one
request, and record what both sides now hold.

Before writing a state to a side, the copier records it in that side's
expected-event table, with the events the write will cause there
(redisrepl.echoes), so that its echo is dropped when that side announces
it, without reading the key again. A big key (read as a header only) is handed back to the router, which
copies it in chunks beside the batches (``copy_big``, through
redisrepl.big_keys).
"""

from collections.abc import Awaitable, Callable, Collection
from typing import TypeVar

import attrs
from twisted.logger import Logger

from redisrepl.big_keys import EXPIRY_MARGIN, BigCopier, KeyChanged
from redisrepl.classify import LocalEvents, Reading, Verdict, classify
from redisrepl.echoes import announce, settle
from redisrepl.errors import RefusedError, ReplicationError
from redisrepl.evictions import Evictions
from redisrepl.interfaces import Clock, ReconcileRequests
from redisrepl.live import ANYTHING, Forced, ForcedCopies, Watchers
from redisrepl.sides import LOCAL, REMOTE, Side, short
from redisrepl.state import ABSENT, BigState, KeyState, size
from redisrepl.stats import KeyReports, Links, Stats
from redisrepl.synced import SyncedTable

log = Logger()

#: A key state as read: whole, or a big key's header.
State = KeyState | BigState
_T = TypeVar("_T")


@attrs.frozen
class BigCopy:
    """A big key to copy in chunks: its header as read, and where its stamp comes from."""

    key: bytes
    header: BigState
    forced: Forced | None
    as_of: int | None


@attrs.frozen
class Batch:
    """What a batch's copy leaves to the router: keys to read again (the
    reply was full, or a big key changed under its copy), big keys to copy."""

    later: list[bytes] = attrs.field(factory=list)
    bigs: list[BigCopy] = attrs.field(factory=list)


@attrs.define
class Copier:
    clock: Clock
    sides: dict[str, Side]  # side name -> Side
    stats: Stats
    links: Links
    reports: KeyReports
    forced: ForcedCopies
    watchers: Watchers
    evictions: Evictions
    local_events: LocalEvents
    reconcile: ReconcileRequests
    synced: SyncedTable | None = None  # what both sides hold
    big: BigCopier | None = None
    #: takes again an event held while a provisional write was answered
    #: (the router's ``changed``)
    replay: Callable[[str, bytes, bytes], None] | None = None

    async def copy(self, source: str, target: str, keys: list[bytes]) -> Batch:
        src, dst = self.sides[source], self.sides[target]
        # what the reconcile asked of these keys, as it stands when the copy
        # starts (a copy from the other side is not this one)
        forced_now = self.forced.of(keys, source)
        try:
            reply = await src.store.read(keys)
        except ReplicationError as e:
            self.links.failed(source, e)
            raise
        self.links.answered(source)
        generation = reply.generation
        epoch = src.store.epoch
        reading = Reading(
            source, generation, untrusted=generation is not None and epoch is not None and not epoch.trusts(generation)
        )
        items: list[tuple[bytes, State]] = []
        origins: dict[bytes, int] = {}
        expects: dict[bytes, object] = {}
        stamps: dict[bytes, int] = {}
        batch = Batch()
        for key, state, tag in zip(keys, reply.states, reply.tags):
            forced = forced_now.get(key)
            verdict = classify(
                reading,
                key,
                state,
                tag,
                forced,
                evicted=self.evictions.was_evicted(source, key),
                events=self.local_events,
                src_expected=src.expected,
                dst_expected=dst.expected,
            )
            if verdict is Verdict.COPY:
                items.append((key, state))
                if source == REMOTE and generation is not None:
                    stamps[key] = generation.as_of(tag)
                if forced is not None and forced.origin is not None:
                    origins[key] = forced.origin
                if forced is not None and forced.expect is not ANYTHING:
                    expects[key] = forced.expect
            elif verdict is Verdict.BIG:
                as_of = generation.as_of(tag) if source == REMOTE and generation is not None else None
                batch.bigs.append(BigCopy(key, state, forced, as_of))
            else:
                self._settle(verdict, source, key, state)
                if verdict is Verdict.LATER:
                    batch.later.append(key)
        if items:
            local_gen = generation.id if source == LOCAL and generation is not None else None
            await self.write(target, items, origins, stamps, expects, local_gen)
        return batch

    def _settle(self, verdict: Verdict, source: str, key: bytes, state: State) -> None:
        """Count a state that is not copied, and ask the reconcile when it must judge."""
        if verdict is Verdict.VOID:
            self.forced.drop(key)
            self.stats.voided += 1
            self.reconcile.request(f"the {source} side's data changed generation")
        elif verdict is Verdict.ECHO:
            self.stats.echoes[source] += 1
        elif verdict in (Verdict.EVICTED, Verdict.THERE, Verdict.UNEXPLAINED):
            self.stats.unchanged += 1
        elif verdict is Verdict.LOST:
            self.stats.deferred += 1
            self.reconcile.request(f"the {source} side lost or rolled back data")
        elif verdict is Verdict.REFILLED:
            self.stats.deferred += 1
            self.reconcile.request("a key refilled by another site")
        elif verdict is Verdict.UNSUPPORTED:
            self.reports.unsupported(key, source, state.kind)

    async def write(
        self,
        target: str,
        items: list[tuple[bytes, State]],
        origins: dict[bytes, int] | None = None,
        read_stamps: dict[bytes, int] | None = None,
        expects: dict[bytes, object] | None = None,
        local_gen: bytes | None = None,
    ) -> None:
        """Write ``items`` to ``target``; ``origins`` marks refills,
        ``expects`` copies made only if the target still holds what the
        reconcile saw, and ``read_stamps`` are the stamps the hub's states
        read from it are as of."""
        dst = self.sides[target]
        refusable = set(origins or ()) | set(expects or ())  # their events wait for the reply
        announced, provisional = announce(dst.expected, items, refusable, self.clock.seconds())
        try:
            wrote = await dst.store.write(items, origins or None, expects or None)
        except Exception as e:
            # maybe written, maybe not: its echo may still come (then told by
            # its content), but it must not count as known to be there
            for key, _ in items:
                dst.expected.uncertain(key)
            for key, count in announced:
                dst.expected.withdraw_events(key, count)
            settle(dst.expected, target, provisional, frozenset(provisional), self.replay)
            self.links.failed(target, e)
            if isinstance(e, RefusedError) and e.kind == "http_413" and len(items) == 1:
                # a refusal of this one key's size: say which and how big
                key, state = items[0]
                raise RefusedError(f"{e}; {short(key)} takes {size(state)} bytes", e.kind, target) from None
            raise
        settle(dst.expected, target, provisional, wrote.skipped, self.replay)
        self.stats.bytes_written[target] += wrote.sent
        if wrote.skipped:
            self.refused(target, wrote.skipped)
            items = [(key, state) for key, state in items if key not in wrote.skipped]
        written = wrote.generation.stamp if target == REMOTE and wrote.generation is not None else 0
        if target == LOCAL and wrote.generation is not None:
            local_gen = wrote.generation.id
        origins, read_stamps = origins or {}, read_stamps or {}
        self.written(
            target,
            [(key, state, origins.get(key, read_stamps.get(key, written))) for key, state in items],
            1,
            local_gen,
        )
        self.evictions.written(target, [key for key, _ in items])

    def refused(self, target: str, keys: Collection[bytes]) -> None:
        """Copies the target did not take: refills of keys that hold
        something as fresh already, or reconcile copies of keys that changed
        there since (their events bring them back)."""
        for key in keys:
            self.sides[target].expected.forget(key)
        self.stats.refills_refused += len(keys)
        self.reconcile.request("copies refused by the target")

    def written(
        self, target: str, items: list[tuple[bytes, State, int]], requests: int, local_gen: bytes | None = None
    ) -> None:
        """``items`` (key, state, stamp) are on both sides now (copied while
        the local side was of generation ``local_gen``)."""
        self.links.answered(target)
        self.stats.requests[target] += requests
        self.stats.writes[target] += len(items)
        self.stats.last_write[target] = self.clock.seconds()
        self.watchers.touched_all([key for key, _, _ in items])
        if self.synced is not None and items:
            self.synced.record(items, local_gen)

    async def copy_big(self, source: str, target: str, big: BigCopy) -> Batch:
        """Copy one big key in chunks; a key that changed type or went away
        meanwhile is left to be read again."""
        src, dst = self.sides[source], self.sides[target]
        key, header = big.key, big.header
        origin = big.forced.origin if big.forced is not None else None
        assert self.big is not None  # big keys are handed to this copier only with a BigCopier
        try:
            if src.expected.has(key):
                # maybe what redisrepl wrote there: compare contents (digested
                # there, a chunk per call: far cheaper than copying it back)
                digest = await self._counted(target, self.big.digest(src, key, header.kind))
                if src.expected.is_echo(key, attrs.evolve(header, digest=digest)):
                    self.stats.echoes[source] += 1
                    return Batch()
            if header.expire_at is not None and header.expire_at - self.clock.seconds() < EXPIRY_MARGIN:
                # expiring: gone by the time it would be copied
                await self.write(target, [(key, ABSENT)])
                return Batch()
            copy = await self._counted(target, self.big.copy(src, dst, key, header, origin))
        except KeyChanged:
            return Batch(later=[key])
        if copy.refused:
            self.refused(target, [key])
        elif copy.state is None:
            self.stats.unchanged += 1
        else:
            self.stats.big_copies += 1
            self.stats.bytes_written[target] += copy.sent
            stamp = origin if origin is not None else (big.as_of if big.as_of is not None else copy.stamp)
            self.written(target, [(key, copy.state, stamp)], copy.requests, copy.local_generation)
        return Batch()

    async def _counted(self, target: str, awaitable: Awaitable[_T]) -> _T:
        """Count a failure of a big-key step against the side it came from."""
        try:
            return await awaitable
        except ReplicationError as e:
            self.links.failed(e.side or target, e)
            raise
