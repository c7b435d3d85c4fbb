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

Big keys (copied in chunks by redisrepl.big_keys) are costly to read back
and compare, so their echoes are first recognised by their events: the copy
records the exact events its last step causes (``expect_events``), and
``echo_event`` drops each of them once, in any order (Webdis reverses events
that reach it together). Any other event is genuine. The events of one copy
come together (one script causes them), so none of somebody else's can come
between them. A big key's content is recorded too, as for any key, and
compared (digested a chunk at a time) when its events come late or not at
all.

A write that may be refused (a refill, a copy the reconcile makes only if
the key still holds what it saw) announces its events provisionally: until
its reply says whether it was made, events on that key are held, not
judged (a refused write causes no event, and somebody else's event in its
place must not be taken for its echo). The reply settles them: made, they
are echoes as above; refused or lost, each held event is genuine.
"""

from collections import OrderedDict, deque

#: Seconds an expectation is kept when no echo arrives.
DEFAULT_LIFETIME = 30.0
#: Most entries kept; the oldest go first (memory stays bounded at any rate).
DEFAULT_CAPACITY = 100_000
_NEVER = float("inf")
#: Most events held for one key while a write that may be refused is
#: answered; past it, events go their usual way (read, compared).
MAX_PARKED = 64


class ExpectedEvents:
    """Per-side table of key -> state redisrepl wrote, with expiry."""

    def __init__(self, clock, lifetime=DEFAULT_LIFETIME, capacity=DEFAULT_CAPACITY, events=True):
        self._clock = clock
        self.lifetime = lifetime
        self.capacity = capacity
        #: False for a side whose events redisrepl does not listen to (the
        #: remote in one-way mode): no event is expected there
        self.events = events
        # key -> (digest, expire_at, deadline, known to be there), oldest
        # first; no values kept
        self._entries = OrderedDict()
        # big keys: key -> deque of (deadline, event name) still to come
        self._events = OrderedDict()
        # no entry (no key's last event) is past its deadline before these
        # times (at most the earliest deadline: purges look no sooner)
        self._purge_at = _NEVER
        self._events_purge_at = _NEVER
        # key -> events that came while a write announced provisionally
        # (one that may be refused) was not answered yet
        self._parked = {}

    def __len__(self):
        self._purge()
        return len(self._entries)

    def expect(self, key, state):
        """Record that ``key`` is about to be made to hold ``state``."""
        entries = self._entries
        entries.pop(key, None)
        deadline = self._clock.seconds() + self.lifetime
        entries[key] = (state.digest, state.expire_at, deadline, True)
        if deadline < self._purge_at:
            self._purge_at = deadline
        self._purge()

    def has(self, key):
        """Is a state redisrepl wrote to ``key`` here still remembered?"""
        return self._entry(key) is not None

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
        entry = self._entry(key)
        return entry is not None and entry[3] and state.same_as_digest(entry[0], entry[1])

    def is_echo(self, key, state):
        """True if ``state``, just read from this side, is what redisrepl wrote there."""
        entry = self._entry(key)
        if entry is None:
            return False
        if state.same_as_digest(entry[0], entry[1]):
            return True
        del self._entries[key]
        return False

    def expect_events(self, key, events):
        """Record that redisrepl is about to cause ``events`` (names) on
        ``key`` here, on top of those of earlier copies whose events have not
        come yet."""
        if not self.events or not events:
            return
        now = self._clock.seconds()
        deadline = now + self.lifetime
        table = self._events
        queue = table.pop(key, None)
        if queue is None:
            queue = deque()
        for event in events:
            queue.append((deadline, event))
        table[key] = queue  # newest last
        if deadline < self._events_purge_at:
            self._events_purge_at = deadline
        # the oldest go when they are all past their time, or the table is full
        if now < self._events_purge_at and len(table) <= self.capacity:
            return  # (none is past its time: the first key's were the first to end)
        while table:
            oldest_key, oldest = next(iter(table.items()))
            if len(table) <= self.capacity and oldest[-1][0] > now:
                self._events_purge_at = oldest[-1][0]
                break
            del table[oldest_key]
        else:
            self._events_purge_at = _NEVER

    def expect_provisionally(self, key, events):
        """Like ``expect_events``, for a write that may be refused (a refill,
        a copy made only over what the reconcile saw): until ``settle``, an
        event on ``key`` is held (``park``), neither echo nor genuine, since
        a refused write causes none and somebody else's would look the same."""
        if not self.events:
            return
        self.expect_events(key, events)
        # (one write of a key is in flight at a time; were there two, the
        # events held for the first are kept, and both are withdrawn if
        # the first is refused)
        self._parked.setdefault(key, [0, []])[0] += len(events)

    def park(self, key, event):
        """Hold ``event`` if a provisional write of ``key`` is not answered
        yet (True). Past MAX_PARKED events, the write's own events are
        withdrawn (its echo is then told by its content) and events go their
        usual way."""
        parked = self._parked.get(key)
        if parked is None:
            return False
        count, events = parked
        if len(events) >= MAX_PARKED:
            if count:
                self.withdraw_events(key, count)
                parked[0] = 0
            return False
        events.append(event)
        return True

    def settle(self, key, applied):
        """The provisional write of ``key`` was answered: ``applied``, its
        events are expected as any; else (refused, or its reply lost) they
        are withdrawn. Returns the events held meanwhile, to be taken again
        in order (now told echo or genuine)."""
        parked = self._parked.pop(key, None)
        if parked is None:
            return []
        count, events = parked
        if not applied and count:
            self.withdraw_events(key, count)
        return events

    def withdraw_events(self, key, count):
        """The last ``count`` events expected for ``key`` will not come."""
        queue = self._events.get(key)
        for _ in range(min(count, len(queue or ()))):
            queue.pop()
        if queue is not None and not queue:
            del self._events[key]

    def forget_events(self):
        """Events were lost (the stream broke): expect none of those announced."""
        self._events.clear()

    def echo_event(self, key, event):
        """True if ``event`` on ``key`` here is one redisrepl said it would
        cause (each expected event is an echo once). Not necessarily in
        order: Webdis reverses the order of events that reach it together."""
        queue = self._events.get(key)
        if queue is None:
            return False
        now = self._clock.seconds()
        while queue and queue[0][0] <= now:
            queue.popleft()
        if queue and queue[0][1] == event:  # (the usual case: the next one expected)
            queue.popleft()
            if not queue:
                del self._events[key]
            return True
        found = False
        for i, (_, name) in enumerate(queue):
            if name == event:
                del queue[i]
                found = True
                break
        if not queue:
            del self._events[key]
        return found

    def _entry(self, key):
        """``key``'s entry if it is still remembered (its deadline not passed), else None."""
        now = self._purge()
        entry = self._entries.get(key)
        if entry is not None and entry[2] <= now:
            # (past its deadline, yet not the oldest: the clock stepped back since)
            del self._entries[key]
            return None
        return entry

    def _purge(self):
        """Drop the oldest entries past the capacity or their deadline; the time now."""
        entries = self._entries
        while len(entries) > self.capacity:
            entries.popitem(last=False)
        now = self._clock.seconds()
        if now < self._purge_at:
            return now  # none is past its deadline (the first entry's is the earliest)
        while entries:
            key = next(iter(entries))
            deadline = entries[key][2]
            if deadline > now:
                self._purge_at = deadline
                return now
            del entries[key]
        self._purge_at = _NEVER
        return now
