"""Keyspace-notification flags: turn on what redisrepl needs, keep what was there.

A Redis restart resets ``notify-keyspace-events`` to its configured value
(empty by default), so both sources call ``ensure`` on every (re)connect.
"""

from twisted.logger import Logger

from redisrepl.errors import RefusedError

log = Logger()

#: K: keyspace channel (key in the channel name); g: del, expire, rename...;
#: $: strings; l: lists; s: sets; h: hashes; z: sorted sets; t: streams;
#: x: expired; e: evicted.
NEEDED = "Kg$lshztxe"
#: What "A" stands for in the flags.
ALL_CLASSES = "g$lshzxetd"


class NotifyConfigError(Exception):
    """The flags are missing and CONFIG SET was refused."""


class NotifyUnknown(Exception):
    """CONFIG GET was refused: whether the flags are on cannot be told."""


def missing(current, needed=NEEDED):
    """The flags of ``needed`` that ``current`` does not already turn on."""
    have = set(current)
    if "A" in have:
        have |= set(ALL_CLASSES)
    return "".join(f for f in needed if f not in have)


def merged(current, needed=NEEDED):
    """``current`` plus the missing flags: nothing the user set is dropped."""
    return current + missing(current, needed)


async def ensure(command, where, needed=NEEDED):
    """Make sure ``needed`` flags are on, via ``command(*args)``.

    Returns the flags that had to be added ("" if none). Raises
    NotifyConfigError, naming the flags to set by hand, when they are missing
    and CONFIG SET is refused; NotifyUnknown when CONFIG GET is refused.
    """
    try:
        reply = await command("CONFIG", "GET", "notify-keyspace-events")
        current = reply[1].decode("ascii") if isinstance(reply, list) and len(reply) == 2 else None
    except RefusedError as e:
        raise NotifyUnknown(
            f"{where}: CONFIG GET notify-keyspace-events was refused ({e}), so redisrepl "
            f"cannot check it: make sure notify-keyspace-events includes '{needed}' in its redis.conf"
        ) from None
    if current is None:
        raise NotifyConfigError(f"{where}: unexpected reply to CONFIG GET: {reply!r:.80}")
    add = missing(current, needed)
    if not add:
        return ""
    try:
        await command("CONFIG", "SET", "notify-keyspace-events", merged(current, needed))
    except RefusedError as e:
        raise NotifyConfigError(
            f"{where}: notify-keyspace-events is '{current}' and CONFIG SET was refused ({e}); "
            f"add '{add}' to notify-keyspace-events in its redis.conf"
        ) from None
    return add


#: Said when the policy may evict redisrepl's own keys as readily as any other.
OWN_KEYS_EVICTED = (
    "; this policy may evict redisrepl's own keys too (its epoch, its synchronised states), "
    "which looks like a loss: the site then refills from the hub, deleting nothing, and may "
    "refill again while it evicts (allkeys-lfu or a volatile-* policy keeps them)"
)


async def warn_if_evicting(command, where):
    """Say at start if ``where`` may evict keys: evictions are not
    replicated as deletions, so an evicted key stays evicted there and is
    kept on the other side."""
    try:
        policy = await command("CONFIG", "GET", "maxmemory-policy")
        limit = await command("CONFIG", "GET", "maxmemory")
    except RefusedError:
        return
    if not (isinstance(policy, list) and len(policy) == 2 and isinstance(limit, list) and len(limit) == 2):
        return
    name = policy[1].decode("ascii", "replace")
    if name != "noeviction" and limit[1] not in (b"0", 0):
        log.warn(
            "{where} may evict keys (maxmemory {limit}, maxmemory-policy {policy}): evicted keys "
            "are not deleted on the other side; they stay evicted here and kept there{own}",
            where=where,
            limit=limit[1].decode("ascii", "replace"),
            policy=name,
            own=OWN_KEYS_EVICTED if name in ("allkeys-lru", "allkeys-random") else "",
        )
