"""Expected-event tables: how redisrepl tells its own echoes from genuine writes.

Before redisrepl writes a state to one side it records that state here. When
that side then announces a change to the key, the router reads the key and
asks ``is_echo``: only if the key still holds exactly what redisrepl wrote
(same type, same value, same expiry within a tolerance) is the event dropped.
Anything else is a genuine change: the entry is discarded at once, so a later
write of the old content is not mistaken for an echo either. Entries expire
(and the oldest go when the table is full), so the table stays small and an
echo that never arrives costs nothing; an echo that arrives after its entry
is gone costs one redundant write, never a loop.

The same table tells the router when a state is already on a side (it wrote
it there and has seen nothing else since), so a key that changes back and
forth faster than it is copied is not written again with the same state.
"""

from collections import OrderedDict

#: Seconds an expectation is kept when no echo arrives.
DEFAULT_LIFETIME = 30.0
#: Most entries kept; the oldest go first (memory stays bounded at any rate).
DEFAULT_CAPACITY = 100_000


class ExpectedEvents:
    """Per-side table of key -> state redisrepl wrote, with expiry."""

    def __init__(self, clock, lifetime=DEFAULT_LIFETIME, capacity=DEFAULT_CAPACITY):
        self._clock = clock
        self.lifetime = lifetime
        self.capacity = capacity
        # key -> (digest, expire_at, deadline, known to be there), oldest
        # first; no values kept
        self._entries = OrderedDict()

    def __len__(self):
        self._purge()
        return len(self._entries)

    def expect(self, key, state):
        """Record that ``key`` is about to be made to hold ``state``."""
        self._entries.pop(key, None)
        self._entries[key] = (state.digest, state.expire_at, self._clock.seconds() + self.lifetime, True)
        self._purge()

    def forget(self, key):
        self._entries.pop(key, None)

    def uncertain(self, key):
        """The write of the expected state failed: it may or may not have
        landed. Its echo is still recognised, but the state no longer counts
        as known to be there (``holds`` is False)."""
        entry = self._entries.get(key)
        if entry is not None:
            self._entries[key] = entry[:3] + (False,)

    def holds(self, key, state):
        """True if redisrepl wrote ``state`` to ``key`` here and has seen no
        other state there since: writing it again would change nothing."""
        self._purge()
        entry = self._entries.get(key)
        return entry is not None and entry[3] and state.same_as_digest(entry[0], entry[1])

    def is_echo(self, key, state):
        """True if ``state``, just read from this side, is what redisrepl wrote there."""
        self._purge()
        entry = self._entries.get(key)
        if entry is None:
            return False
        if state.same_as_digest(entry[0], entry[1]):
            return True
        del self._entries[key]
        return False

    def _purge(self):
        entries = self._entries
        while len(entries) > self.capacity:
            entries.popitem(last=False)
        now = self._clock.seconds()
        while entries:
            key = next(iter(entries))
            if entries[key][2] > now:    # its deadline
                break
            del entries[key]
