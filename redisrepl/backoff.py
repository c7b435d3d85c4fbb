"""Capped exponential backoff with jitter (pure)."""

import random as _random


class Backoff:
    """Delays of ``initial`` for the first ``quick`` attempts (a component
    that comes back after a short outage is used at once), then
    ``initial * factor**n``, capped at ``maximum`` (a long outage is not
    hammered); each scaled by a random factor in ``[1 - jitter, 1]`` so that
    many clients restarting together do not retry in lockstep."""

    def __init__(self, initial=0.5, maximum=30.0, factor=2.0, jitter=0.25, random=None, quick=0):
        self.initial = initial
        self.maximum = maximum
        self.factor = factor
        self.jitter = jitter
        self.quick = quick
        self._random = random or _random.Random()
        self.failures = 0

    def next_delay(self):
        """The delay before the next attempt; counts one more failure."""
        grown = max(0, self.failures - self.quick)
        base = min(self.maximum, self.initial * self.factor ** min(grown, 64))
        self.failures += 1
        return base * (1 - self.jitter * self._random.random())

    def reset(self):
        self.failures = 0


#: Reconnecting to a component that went away: every quarter second for
#: about ten seconds, then backing off up to ten seconds.
def reconnect_backoff():
    return Backoff(initial=0.25, maximum=10.0, quick=40)
