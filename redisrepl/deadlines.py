"""Timeouts of many operations on one timer.

Every command to the local Redis, every request to the hub and every idle
connection of the pool has a timeout. A DelayedCall each (armed, then
cancelled a moment later when the reply comes) costs a heap insertion, a
cancellation and the reactor's sorting of both; at a steady trickle that
was several of them per change. Here operations that share one timeout
share one timer:

- ``start(item)`` records when the item began; ``end(item)`` forgets it
  and says whether it was still running (False: it had expired).
- The timer is armed only when there is none, which is only when no item
  is running: for the deadline of the item starting. When it fires it
  expires every item past its deadline (``expire(item)``, oldest first)
  and is armed again for the oldest left, if any. Items that end before
  their deadline cost a dict entry, nothing more.

So each item still expires at its own deadline, and at a steady trickle of
short operations the timer fires about once per ``seconds`` instead of
being armed and cancelled for each. If the clock steps back, an item that
started after the step may wait until those started before it are due.
"""

from collections.abc import Callable, Hashable
from typing import Any

from twisted.logger import Logger

from redisrepl.interfaces import Clock

log = Logger()


class Deadlines:
    def __init__(self, clock: Clock, seconds: float, expire: Callable[[Any], object]):
        self._clock = clock
        self.seconds = seconds
        self._expire = expire
        self._started: dict[Hashable, float] = {}  # in order of start
        self._timer: Any = None

    def __len__(self) -> int:
        return len(self._started)

    def start(self, item: Hashable) -> None:
        """``item`` began now: expire it ``seconds`` from now unless it ends."""
        self._started.pop(item, None)  # (started again: its place is now the newest)
        self._started[item] = self._clock.seconds()
        if self._timer is None:
            self._timer = self._clock.callLater(self.seconds, self._fire)

    def end(self, item: Hashable) -> bool:
        """``item`` ended: False if it had expired (or never started)."""
        return self._started.pop(item, None) is not None

    def stop(self) -> None:
        """Forget every item and disarm the timer."""
        self._started.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _fire(self) -> None:
        self._timer = None
        now = self._clock.seconds()
        due = []
        for item, began in self._started.items():
            if began + self.seconds > now:
                # the oldest still running: the next firing is for it
                self._timer = self._clock.callLater(began + self.seconds - now, self._fire)
                break
            due.append(item)
        for item in due:
            del self._started[item]
        for item in due:
            try:
                self._expire(item)
            except Exception:
                log.failure("expiring {item!r}", item=item)
