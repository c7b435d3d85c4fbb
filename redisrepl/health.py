"""Is redisrepl working? The answer behind ``/healthz``.

Healthy means: the local subscription is up, the hub answers (with ``--rc``:
the remote event stream is up and its heartbeat came back recently; without:
a periodic ``PING`` through the hub succeeds), and the last request to each
side did not fail for want of a link.
"""

from twisted.application.internet import TimerService
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from redisrepl.errors import ReplicationError
from redisrepl.router import LOCAL, REMOTE

log = Logger()


class HubProbe(TimerService):
    """Without ``--rc`` nothing else talks to the hub while idle: ``PING`` it
    every ``interval`` seconds so that health reflects the link."""

    def __init__(self, client, interval, clock):
        super().__init__(interval, self._probe)
        self.clock = clock
        self._client = client
        self.error = "not checked yet"

    def _probe(self):
        d = Deferred.fromCoroutine(self._client.command("PING"))
        d.addCallbacks(self._ok, self._failed)
        return d

    def _ok(self, _):
        self.error = None

    def _failed(self, failure):
        failure.trap(ReplicationError)
        self.error = str(failure.value)


class Health:
    def __init__(self, clock, router, local_source, remote_source=None, probe=None, max_lag=15.0):
        self._clock = clock
        self._router = router
        self._local = local_source
        self._remote = remote_source
        self._probe = probe
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
        if self._probe is not None and self._probe.error is not None:
            found.append(f"hub: {self._probe.error}")
        for side in (LOCAL, REMOTE):
            if self._router.link_error[side] is not None:
                found.append(f"{side}: {self._router.link_error[side]}")
        return found
