"""How many batches may be in flight at once: a window that follows the
round trip and the backlog (pure, apart from the clock).

Across a WAN a batch holds its slot for a round trip: with ``base`` slots
and a round trip of R seconds, at most ``base / R`` batches a second go
out, and keys arriving faster wait for a slot (at 40 ms and 4 slots, a
trickle of 200 keys a second waits half a round trip on average). What is
needed is the bandwidth-delay product: the rate of batches times the
round trip. Neither is known in advance and both change, so the window is
measured the way TCP's congestion window is, by its use:

- **Grow** by one slot each time work is ready and every slot is busy (a
  key is waiting for a slot, not for its turn), up to ``cap``. On
  loopback a batch comes back within a millisecond or two and a trickle
  never meets a full window: the window stays at ``base``.
- **Shrink** once per ``interval`` to one more than the most batches that
  were in flight during it (to ``base`` after an interval with none sent;
  never below ``base``), so that a window grown for a burst or a slow
  phase is given back, and a steady trickle keeps the slots it uses plus
  one to spare.

Every slot is a pooled connection to the hub. The pool is opened to
``base`` connections at start and keeps every connection it opened (up to
``cap`` and the watchdog's and the reconcile's) until it has been idle for a while
(redisrepl.connections): a slot the window gives back keeps its
connection, so growing again later costs no TLS handshake.
"""

from redisrepl.interfaces import Clock

#: Seconds between shrinks: long enough that a steady trickle does not
#: lose a slot it needs between two of its peaks.
SHRINK_INTERVAL = 10.0


class Window:
    def __init__(
        self,
        clock: Clock,
        base: int,
        cap: int,
        interval: float = SHRINK_INTERVAL,
    ) -> None:
        if not 1 <= base <= cap:
            raise ValueError(f"a window needs 1 <= base <= cap, not {base} and {cap}")
        self._clock = clock
        self.base = base
        self.cap = cap
        #: batches allowed in flight now
        self.size = base
        self._interval = interval
        self._since = clock.seconds()
        self._peak = 0  # most batches in flight since _since
        self._last_sent = self._since

    def allows(self, in_flight: int) -> bool:
        """May another batch go out, with ``in_flight`` under way?"""
        self._shrink_when_due()
        return in_flight < self.size

    def full(self) -> bool:
        """Work is ready and every slot is busy: one more slot, if the cap
        allows. True if the window grew."""
        if self.size >= self.cap:
            return False
        self.size += 1
        return True

    def sent(self, in_flight: int) -> None:
        """A batch went out; ``in_flight`` are under way now."""
        self._last_sent = self._clock.seconds()
        if in_flight > self._peak:
            self._peak = in_flight

    def _shrink_when_due(self) -> None:
        now = self._clock.seconds()
        if now - self._since < self._interval:
            return
        if now - self._last_sent >= self._interval:
            self.size = self.base  # nothing went out for a whole interval
        else:
            self.size = max(self.base, min(self.size, self._peak + 1))
        self._since = now
        self._peak = 0
