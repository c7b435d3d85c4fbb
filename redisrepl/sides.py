"""The two sides redisrepl keeps equal, and how keys are printed (pure)."""

from typing import Any

import attrs

LOCAL = "local"
REMOTE = "remote"
OTHER = {LOCAL: REMOTE, REMOTE: LOCAL}
#: Which sides a key changed on, as bits of a small int (a set per key would
#: cost ten times the memory in a queue of 100,000 keys).
BIT = {LOCAL: 1, REMOTE: 2}


@attrs.define
class Side:
    """One Redis as the router sees it: a store that reads and writes key
    states (``redisrepl.interfaces.IStateStore``), and the table of states
    redisrepl wrote there (``IExpectedEvents``)."""

    name: str
    store: Any
    expected: Any


def short(key: bytes, limit: int = 80) -> str:
    """A key as printed in logs: its bytes as text, non-printable ones
    escaped (\\xNN), cut when long."""
    text = repr(key)[2:-1]
    return text if len(text) <= limit else text[:limit] + f"...({len(key)} bytes)"
