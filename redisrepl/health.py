"""Is redisrepl working? The answer behind ``/healthz``.

Healthy means: the local subscription is up, the hub answers (with ``--rc``:
the remote event stream is up and its heartbeat came back recently; without:
the watchdog's periodic check of the hub succeeds), the last request to each
side did not fail for want of a link, and no reconcile is holding back a
mass deletion.
"""

from twisted.logger import Logger

from redisrepl.sides import LOCAL, REMOTE

log = Logger()


class Health:
    def __init__(self, clock, router, local_source, remote_source=None, watchdog=None, reconciler=None, max_lag=15.0):
        self._clock = clock
        self._router = router
        self._local = local_source
        self._remote = remote_source
        self._watchdog = watchdog
        self._reconciler = reconciler
        self.max_lag = max_lag

    def problems(self):
        """The reasons redisrepl is not healthy; empty when it is."""
        found = []
        if not self._local.up:
            found.append("local Redis: not subscribed")
        if self._remote is not None:
            if not self._remote.up:
                found.append("remote event stream: down")
            else:
                seen = self._remote.last_heartbeat_seen
                if seen is None or self._clock.seconds() - seen > self.max_lag:
                    found.append(f"remote event stream: no heartbeat within {self.max_lag:.0f}s")
        elif self._watchdog is not None and self._watchdog.error[REMOTE] is not None:
            found.append(f"hub: {self._watchdog.error[REMOTE]}")
        if self._reconciler is not None:
            for side, n in sorted(self._reconciler.guard_tripped.items()):
                found.append(f"reconcile: {n} deletions on the {side} side held back by --max-delete")
        for side in (LOCAL, REMOTE):
            if self._router.link_error[side] is not None:
                found.append(f"{side}: {self._router.link_error[side]}")
        return found
