r"""The seams between the parts of redisrepl, as zope interfaces.

    sources --IChangeSink--> router --IStateStore--> stores (the writers)
                               |  \--IExpectedEvents (one table per side)
                               |
    reconcile --ILiveCopies--> router --IReconcileRequests--> reconcile

Each is implemented once in the daemon and once (or more) in the tests'
doubles; ``zope.interface.verify.verifyObject`` checks both.

mypy cannot check against a zope interface (not without a plugin): the
seams that type an attribute or an argument have a ``typing.Protocol`` twin
here too (``StateStore``, ``LiveCopies``, ``ReconcileRequests``), which every
implementation of the interface satisfies. The zope convention of interface
methods without ``self`` stays; mypy is told so where it objects.
"""

from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias

from zope.interface import Attribute, Interface

if TYPE_CHECKING:
    from redisrepl.epochs import Generation, SideEpoch
    from redisrepl.stores import CheckReply, ReadReply, WriteReply

#: Twisted's ``IReactorTime`` (the reactor; ``task.Clock`` in the tests): a
#: zope interface too, so no type to mypy.
Clock: TypeAlias = Any


class IStateStore(Interface):
    """One Redis, read and written a key state at a time (redisrepl.stores)."""

    epoch = Attribute("the side's SideEpoch: which generation of its data answered last")

    def read(keys):
        """Awaitable ReadReply: the states of ``keys``, their hub stamps and the generation."""

    def write(items, origins=None, expects=None):
        """Awaitable WriteReply: make each (key, state) of ``items`` hold there."""

    def check(heartbeat_key=b"", lifetime_ms=0, flag_key=b""):
        """Awaitable CheckReply: the side's generation and clock."""

    def command(*args, limit=None):
        """Awaitable reply of one Redis command (on the hub, one over
        ``limit`` bytes is refused)."""

    def run_script(script, keys, args, limit=None):
        """Awaitable reply, without the generation, of one of redisrepl's
        scripts (as ``command`` for ``limit``)."""

    def get(key, limit=None):
        """Awaitable value (or None) of one of redisrepl's own string keys,
        read so that another request's reply is refused."""

    def write_piece(key, offset, data, lifetime_ms):
        """Awaitable bool: append ``data`` to the string ``key`` (a big
        string's copy) if it holds ``offset`` bytes, else write nothing (False)."""


class IExpectedEvents(Interface):
    """What redisrepl wrote on one side, to tell its echoes from genuine changes
    (redisrepl.expected)."""

    def expect(key, state):
        """``key`` is about to be made to hold ``state``."""

    def is_echo(key, state):
        """Is ``state``, just read, what redisrepl wrote? (consumes the entry)"""

    def holds(key, state):
        """Does the side hold ``state`` as far as redisrepl knows?"""

    def has(key):
        """Is anything expected for ``key``?"""

    def forget(key):
        """Expect nothing more for ``key``."""

    def uncertain(key):
        """A write of ``key`` may or may not have happened."""

    def expect_events(key, events):
        """A big key's copy is about to cause ``events`` on ``key``."""

    def withdraw_events(key, count):
        """The last ``count`` events expected for ``key`` will not come."""

    def expect_provisionally(key, events):
        """A write that may be refused is about to cause ``events`` on ``key``."""

    def park(key, event):
        """Hold ``event`` until the provisional write of ``key`` is answered?"""

    def settle(key, applied):
        """That write was answered: the events held meanwhile, to take again."""

    def echo_event(key, event):
        """Is ``event`` on ``key`` one redisrepl caused? (consumes it)"""

    def forget_events():  # type: ignore[misc]
        """The side's stream reconnected: the events expected were lost."""


class IChangeSink(Interface):
    """What the event sources feed (the router)."""

    def changed(side, key, event=None):
        """``side`` announced a change to ``key`` (by an ``event`` of that name)."""

    def subscribed(side):
        """``side``'s events are (re)subscribed: those made while they were not are lost."""


class ILiveCopies(Interface):
    """What the reconcile needs of the live path (the router)."""

    backlog = Attribute("keys waiting to be copied")
    max_backlog = Attribute("the most keys that may wait")

    def watch(limit=None):
        """A set that collects every key the live path touches from now on
        (with ``limit``: a redisrepl.live.Recorder, bounded)."""

    def evicted_keys(side):
        """The keys remembered as evicted on ``side``."""

    def unwatch(watcher):
        """Stop filling ``watcher``."""

    def pending(key):
        """Is a copy of ``key`` queued, parked or under way?"""

    def force(side, key, guard=None, origin=None, expect=None):
        """Copy ``key`` from ``side`` whatever the expected-event tables remember."""

    def unsupported(key, side, kind):
        """Count and report once a key of a type that is not replicated."""

    def was_evicted(side, key):
        """Did ``side`` evict ``key`` (and nothing happened to it there since)?"""


class IReconcileRequests(Interface):
    """What the live path and the epochs ask of the reconcile."""

    def request(reason, delay=0.2):
        """Run a reconcile soon, for ``reason``."""

    def generation_changed(side, generation):
        """A reply showed that ``side`` lost or rolled back data."""


# -- the same seams, for mypy ----------------------------------------------------


class StateStore(Protocol):
    """``IStateStore``: one Redis, read and written a key state at a time."""

    @property
    def epoch(self) -> "SideEpoch | None": ...

    def read(self, keys: list[bytes]) -> "Awaitable[ReadReply]": ...

    def write(
        self,
        items: list[tuple[bytes, Any]],
        origins: dict[bytes, int] | None = None,
        expects: dict[bytes, Any] | None = None,
    ) -> "Awaitable[WriteReply]": ...

    def check(
        self, heartbeat_key: bytes = b"", lifetime_ms: int = 0, flag_key: bytes = b""
    ) -> "Awaitable[CheckReply]": ...

    def command(self, *args: Any, limit: int | None = None) -> Awaitable[Any]: ...

    def run_script(
        self, script: Any, keys: list[bytes], args: list[Any], limit: int | None = None
    ) -> Awaitable[Any]: ...

    def get(self, key: bytes, limit: int | None = None) -> Awaitable[bytes | None]: ...

    def write_piece(self, key: bytes, offset: int, data: bytes, lifetime_ms: int) -> Awaitable[bool]: ...


class LiveCopies(Protocol):
    """``ILiveCopies``: what the reconcile needs of the live path."""

    @property
    def backlog(self) -> int: ...

    @property
    def max_backlog(self) -> int: ...

    def watch(self, limit: int | None = None) -> set[bytes]: ...

    def evicted_keys(self, side: str) -> list[bytes]: ...

    def unwatch(self, watcher: set[bytes]) -> None: ...

    def pending(self, key: bytes) -> bool: ...

    def force(
        self, side: str, key: bytes, guard: bytes | None = None, origin: int | None = None, expect: object = ...
    ) -> None: ...

    def unsupported(self, key: bytes, side: str, kind: str) -> None: ...

    def was_evicted(self, side: str, key: bytes) -> bool: ...


class ReconcileRequests(Protocol):
    """``IReconcileRequests``: what the live path and the epochs ask of the reconcile."""

    def request(self, reason: str, delay: float = 0.2) -> None: ...

    def generation_changed(self, side: str, generation: "Generation") -> None: ...
