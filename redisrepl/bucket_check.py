"""The periodic check: confirm that both sides hold the same namespace by
bucket digests (redisrepl.buckets), without the hub digesting every key
for this site (docs/hub-scale.md).

A check compares the hub's table from a shared walk (redisrepl.shared_walk:
the last one published, if it began after this site started recording;
else one this site makes now, for every site) with a table this site folds
from its own Redis. Keys a live event touched since before that walk began
(a Recorder, bounded) may differ for good reasons: their buckets are left
out, as are those of keys remembered as evicted. Any other bucket that
differs means a divergence no event announced: the check answers with a
reason, and the reconciler walks the whole namespace as it always did.

A check writes nothing but the shared walk's own keys, and decides nothing
but "walk now" or "no need": whatever goes wrong in it can delay finding a
divergence (until the next check, or at most ``--full-walk-interval``),
never delete or copy anything.
"""

import os

import attrs
from twisted.logger import Logger

from redisrepl.buckets import BUCKETS, bucket_of
from redisrepl.errors import RefusedError, ReplicationError
from redisrepl.pace import DEFAULT_SHARE, Pace
from redisrepl.scan import LOOKAHEAD, Refused
from redisrepl.shared_walk import RENEW_EVERY, HubWalks, SharedWalkRefused, WalkInfo, fold
from redisrepl.sides import LOCAL, REMOTE

log = Logger()

#: Most buckets a check may leave to live events and still vouch for the
#: rest: past a quarter, a divergence would too likely hide in them.
MAX_EXCLUDED = BUCKETS // 4
#: Most keys a check remembers as touched by live events while it waits
#: for a walk (its memory's bound); far more than MAX_EXCLUDED buckets hold.
RECORD_LIMIT = 20_000


class _Wait:
    """No walk of the hub to compare with yet (another site is making one)."""

    def __repr__(self) -> str:
        return "WAIT"


WAIT = _Wait()
#: The check's answer when both sides hold the same namespace.
CONFIRMED = None


@attrs.define
class CheckStats:
    confirmed: int = 0  # checks that found both sides equal
    differed: int = 0  # checks that found buckets differing (a walk followed)
    inconclusive: int = 0  # checks that could not vouch (a walk followed)
    waited: int = 0  # checks that found another site walking the hub
    walks: int = 0  # shared walks of the hub this site made, for every site
    excluded: int = 0  # buckets the last check left to live events


class _GenerationChanged(Exception):
    """A side's generation changed during a check's walk (it stops there)."""


class BucketCheck:
    """One periodic check per call (see the module): CONFIRMED, WAIT, or
    the reason (a string) for a reconcile run now."""

    def __init__(
        self, live, local_store, remote_store, names, epochs, clock, interval, reconcile_stats, walk_share=DEFAULT_SHARE
    ):
        self._live = live
        self._walk_share = walk_share
        self._local = local_store
        self._remote = remote_store
        self._names = names
        self._epochs = epochs
        self._clock = clock
        self._walks = HubWalks(remote_store, names.meta)
        self._lease_ms = int(max(60.0, 2 * interval) * 1000)
        self._table_lifetime = int(max(120.0, 4 * interval))
        self._reconcile_stats = reconcile_stats  # refused keys are counted there
        self.stats = CheckStats()
        self._recorder = None  # keys touched since the hub time ``_since``
        self._since = None
        self._last_walk = None  # the id of the hub's walk compared last
        #: the hub refused the shared walk's commands: periodic reconciles walk
        self.off = False

    def stop(self) -> None:
        """Stop recording (the service stops)."""
        if self._recorder is not None:
            self._live.unwatch(self._recorder)
            self._recorder = None

    async def __call__(self):
        try:
            return await self._check()
        except SharedWalkRefused as e:
            self.off = True
            self.stop()
            log.warn(
                "the hub refused a command of the shared walk ({error}): periodic reconciles walk the "
                "whole namespace from now on (a Webdis ACL must allow SETEX, RENAME, PEXPIRE and DEL, "
                "and the proxy a 128 KiB body, for the cheaper check)",
                error=str(e),
            )
            return "the hub refused the shared walk"
        except RefusedError as e:
            # a passing refusal (out of memory, a failover): walk this time
            return self._inconclusive(f"the hub refused a command of the shared walk ({e})")

    def _changed(self, side, generation):
        """Has ``side`` a generation other than ``generation`` (known) now?"""
        after = self._epochs[side].current
        return generation is not None and (after is None or after.id != generation.id)

    def _inconclusive(self, reason):
        self.stats.inconclusive += 1
        return reason

    async def _check(self):
        started = self._clock.seconds()
        new = self._live.watch(RECORD_LIMIT)
        old, since = self._recorder, self._since
        if old is not None and (old.events_lost or old.full):
            # it can vouch for nothing any more: start afresh
            self._live.unwatch(old)
            old = since = None
        kept = None  # (recorder, since) to keep for the next check
        try:
            # every change made on the hub after ``now`` reaches ``new``: the
            # request was sent after it started recording
            now = (await self._remote.check()).now
            kept = (old, since) if old is not None else (new, now)
            generation = self._epochs[REMOTE].current
            info = await self._walks.latest()
            table = None
            if old is not None and info is not None and generation is not None:
                # a walk begun after ``old`` started recording, of the hub's
                # generation now, and not the one this site compared last
                if info.begin > since and info.generation == generation.id and info.id != self._last_walk:
                    table = await self._walks.table(info)
            recorder = old
            whose = "a walk another site made"
            if table is None:
                if not await self._walks.take_lease(os.urandom(8).hex().encode(), self._lease_ms):
                    self.stats.waited += 1
                    return WAIT
                recorder, whose = new, "a walk made now"
                walked = await self._walk_hub(now)
                if isinstance(walked, str):
                    return walked
                info, table = walked
            kept = (new, now)
            self._last_walk = info.id
            here = await self._fold_local()
            if isinstance(here, str):
                return here
            return self._compare(info, table, here, recorder, whose, now, started)
        finally:
            self._recorder, self._since = kept if kept is not None else (None, None)
            for recorder in (old, new):
                if recorder is not None and recorder is not self._recorder:
                    self._live.unwatch(recorder)

    async def _walk_hub(self, begin):
        """Walk the hub for every site and publish it: (info, table), or the
        reason this walk cannot be used."""
        generation = self._epochs[REMOTE].current
        steps = 0
        refused = Refused()
        renewed = self._clock.seconds()

        async def each_step():
            # a hub that lost data: stop now (the refill it calls for is not
            # to wait for the rest of a paced walk)
            if self._changed(REMOTE, generation):
                raise _GenerationChanged()
            # the lease: every RENEW_EVERY steps, and at least every third of
            # its life (a paced walk's steps may be far apart)
            nonlocal steps, renewed
            steps += 1
            if steps % RENEW_EVERY == 0 or self._clock.seconds() - renewed >= self._lease_ms / 3000:
                renewed = self._clock.seconds()
                await self._walks.renew_lease(self._lease_ms)

        pace = Pace(self._clock, self._walk_share)
        try:
            table = await fold(self._remote, self._names, LOOKAHEAD, refused, each_step, pace)
            end = (await self._remote.check()).now
        except _GenerationChanged:
            return self._inconclusive("the hub's generation changed during the check")
        finally:
            self._reconcile_stats.hub_seconds += pace.used
            try:
                await self._walks.release_lease()
            except ReplicationError:
                pass  # it expires by itself; the walk's own outcome is what counts
        self._reconcile_stats.refused_keys += refused.count
        after = self._epochs[REMOTE].current
        if generation is None or after is None or after.id != generation.id:
            return self._inconclusive("the hub's generation changed during the check")
        info = WalkInfo(os.urandom(8).hex().encode(), begin, end, generation.id, table.keys)
        await self._walks.publish(info, table, self._table_lifetime)
        self.stats.walks += 1
        log.info(
            "shared walk of the hub: {keys} keys digested in {steps} steps and {seconds:.2f}s "
            "({hub:.2f}s of the hub Redis' time, paced to {share:.0%} of it), published for every site",
            keys=table.keys,
            steps=steps,
            seconds=self._clock.seconds() - pace.began,
            hub=pace.used,
            share=pace.share,
        )
        return info, table

    async def _fold_local(self):
        generation = self._epochs[LOCAL].current
        refused = Refused()

        async def each_step():
            if self._changed(LOCAL, generation):
                raise _GenerationChanged()  # (as for the hub's walk)

        # paced too: at full speed the fold holds the local Redis and this
        # daemon for seconds, and live copies wait behind its steps
        try:
            table = await fold(
                self._local, self._names, refused=refused, each_step=each_step, pace=Pace(self._clock, self._walk_share)
            )
        except _GenerationChanged:
            table = None
        self._reconcile_stats.refused_keys += refused.count
        if table is None or self._changed(LOCAL, generation):
            return self._inconclusive("the local Redis's generation changed during the check")
        return table

    def _compare(self, info, hub, here, recorder, whose, now, started):
        if recorder.events_lost:
            return self._inconclusive("events may have been lost during the periodic check")
        if recorder.full:
            return self._inconclusive(f"more than {RECORD_LIMIT} keys changed during the periodic check")
        excluded = {bucket_of(key) for key in recorder}
        for side in (LOCAL, REMOTE):
            excluded.update(bucket_of(key) for key in self._live.evicted_keys(side))
        self.stats.excluded = len(excluded)
        if len(excluded) > MAX_EXCLUDED:
            return self._inconclusive(
                f"{len(excluded)} of {BUCKETS} buckets had keys changed or evicted during the periodic check"
            )
        differing = hub.differing(here, excluded)
        if differing:
            self.stats.differed += 1
            return (
                f"the periodic check found {len(differing)} of {BUCKETS} buckets differing "
                f"({hub.keys} keys on the hub, {here.keys} here)"
            )
        self.stats.confirmed += 1
        log.info(
            "reconcile (periodic) done: both sides hold the same namespace, by {whose} "
            "({age:.0f}s ago; {hub_keys} keys on the hub, {local_keys} here; {excluded} of {buckets} "
            "buckets left to live events), in {duration:.2f}s",
            whose=whose,
            age=max(0, now - info.end) / 1e6,
            hub_keys=hub.keys,
            local_keys=here.keys,
            excluded=len(excluded),
            buckets=BUCKETS,
            duration=self._clock.seconds() - started,
        )
        return CONFIRMED
