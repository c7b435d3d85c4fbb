"""How fast a periodic walk may ask for its SCAN steps.

One hub serves many sites, and its Redis runs one command at a time: a
walk at full speed (four ranges at once, redisrepl.scan) keeps it busy
for as long as the walk lasts, and every site's live copies queue behind
it. A periodic walk (the shared walk of the bucket check, a periodic full
walk, one a check asked for) is paced to take at most ``share`` of the
hub Redis' time, counted from the walk's start:

- each digest_scan step says how long it ran on the server (its own
  ``TIME`` before and after: what the walk costs the hub, not the round
  trip), counted as at most its round trip as the daemon saw it: so what
  a hub claims is bounded: claiming that every step took its whole round
  trip makes a walk of ``parts`` ranges at once last about
  ``parts / share`` times as long as unpaced;
- a range's next step is sent once the steps' total is at most ``share``
  of the time since the walk began (``Pace.then``): with ``share`` 0.25,
  a walk that costs the hub 10 s takes at least 40 s. A share of 1 only
  measures: it never waits.

If the clock steps back, the walk's start moves back with it (the time
the walk has taken so far stays what it was).

A periodic check's fold of the local Redis is paced the same way, by the
local Redis' time: at full speed it holds that Redis and this daemon for
seconds, and the live copies wait behind its steps (at 150,000 keys, p99
of a live copy 58 ms during checks, 32 ms paced; docs/benchmarks.md).

Walks for any other reason (start-up, a reconnect, a side that lost data,
an overflowing queue, a retry) repair or fill and are not paced, at most
one an interval (redisrepl.comparison: a flapping link or a Redis that
keeps losing data cannot keep the hub busy).
"""

from collections.abc import Callable
from typing import Any

from twisted.internet import task
from twisted.internet.defer import Deferred

from redisrepl.interfaces import Clock

#: The share of the hub Redis' time a periodic walk may take, and of the
#: local Redis' time a periodic check's fold (--walk-share).
DEFAULT_SHARE = 0.25


class Pace:
    def __init__(self, clock: Clock, share: float = DEFAULT_SHARE):
        if not 0 < share <= 1:
            raise ValueError(f"a walk's share of the hub must be in (0, 1], not {share}")
        self._clock = clock
        self.share = share
        self.began = self._last = clock.seconds()
        #: seconds of the hub's time the walk's steps took
        self.used = 0.0
        #: seconds the walk waited for the pace
        self.waited = 0.0

    def now(self) -> float:
        now = self._clock.seconds()
        if now < self._last:
            self.began -= self._last - now  # the clock stepped back
        self._last = now
        return now

    def spent(self, seconds: float, sent: float) -> None:
        """A step sent at ``sent`` ran ``seconds`` on the server."""
        self.used += max(0.0, min(seconds, self.now() - sent))

    def delay(self) -> float:
        """Seconds the next step must wait."""
        if self.share >= 1:
            return 0.0
        return max(0.0, self.used / self.share - (self.now() - self.began))

    def then(self, ask: Callable[..., Deferred[Any]], *args: Any) -> Deferred[Any]:
        """``ask(*args)`` once the pace allows (at once if it does now);
        cancelling the result before then cancels the wait."""
        delay = self.delay()
        if delay <= 0:
            return ask(*args)
        self.waited += delay
        return task.deferLater(self._clock, delay, ask, *args)
