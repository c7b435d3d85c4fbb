"""Capped exponential backoff with jitter (pure)."""

import random as _random


class Backoff:
    """Delays of ``initial * factor**n`` seconds, capped at ``maximum``, each
    scaled by a random factor in ``[1 - jitter, 1]`` so that many clients
    restarting together do not retry in lockstep."""

    def __init__(self, initial=0.5, maximum=30.0, factor=2.0, jitter=0.25, random=None):
        self.initial = initial
        self.maximum = maximum
        self.factor = factor
        self.jitter = jitter
        self._random = random or _random.Random()
        self.failures = 0

    def next_delay(self):
        """The delay before the next attempt; counts one more failure."""
        base = min(self.maximum, self.initial * self.factor ** min(self.failures, 64))
        self.failures += 1
        return base * (1 - self.jitter * self._random.random())

    def reset(self):
        self.failures = 0
