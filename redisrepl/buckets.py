"""Bucket digests of a namespace: a fixed-size summary of every key's state,
for telling that two sides hold the same thing without comparing them key
by key (pure; redisrepl.bucket_check uses it, docs/hub-scale.md says why).

A key falls in one of ``BUCKETS`` buckets by its name alone (CRC-32), so a
key a live event touched names its bucket whatever it holds. A bucket's
digest is the sum, modulo 2**64, of a 64-bit hash of each of its keys'
name and digest (digest@expiry, as redisrepl.scan gives it). A sum, not an
XOR: a key that a SCAN lists twice counts twice and makes its bucket
differ (a false alarm, which costs a walk), where an XOR would cancel it
out and could hide the key.
"""

import hashlib
import sys
import zlib
from array import array
from collections.abc import Iterable

#: Buckets of a table: 2**14, so that a steady trickle over a thousand keys
#: leaves about 6 % of them to the live events of a check, and a table is
#: 128 KiB.
BUCKETS = 1 << 14
_MASK = BUCKETS - 1
#: Bytes of one bucket's digest in a table's bytes.
DIGEST_BYTES = 8
TABLE_BYTES = BUCKETS * DIGEST_BYTES
_MOD = 1 << 64


def bucket_of(key: bytes) -> int:
    """The bucket ``key`` falls in."""
    return zlib.crc32(key) & _MASK


class Buckets:
    """A table of bucket digests, filled key by key."""

    __slots__ = ("_sums", "keys")

    def __init__(self, sums: list[int] | None = None, keys: int = 0) -> None:
        self._sums = sums if sums is not None else [0] * BUCKETS
        self.keys = keys  # keys added

    def add(self, key: bytes, digest: bytes) -> None:
        self.add_all(((key, digest),))

    def add_all(self, items: Iterable[tuple[bytes, bytes]]) -> None:
        """Add each (key, digest) of ``items`` (a walk's step at a time, in
        one loop): its bucket's sum grows by the first 8 bytes, little-endian,
        of SHA1(key, 0, digest)."""
        sums, crc32, sha1, from_bytes = self._sums, zlib.crc32, hashlib.sha1, int.from_bytes
        added = 0
        for key, digest in items:
            bucket = crc32(key) & _MASK  # (bucket_of)
            term = from_bytes(sha1(key + b"\0" + digest).digest()[:DIGEST_BYTES], "little")
            sums[bucket] = (sums[bucket] + term) % _MOD
            added += 1
        self.keys += added

    def to_bytes(self) -> bytes:
        table = array("Q", self._sums)
        if sys.byteorder != "little":  # pragma: no cover - the same bytes on every machine
            table.byteswap()
        return table.tobytes()

    @classmethod
    def from_bytes(cls, data: bytes, keys: int = 0) -> "Buckets":
        """The table whose ``to_bytes`` is ``data``; ValueError if it cannot be one."""
        if len(data) != TABLE_BYTES:
            raise ValueError(f"a table of bucket digests is {TABLE_BYTES} bytes, not {len(data)}")
        table = array("Q")
        table.frombytes(data)
        if sys.byteorder != "little":  # pragma: no cover
            table.byteswap()
        return cls(table.tolist(), keys)

    def differing(self, other: "Buckets", excluded: set[int] = frozenset()) -> list[int]:  # type: ignore[assignment]
        """The buckets, outside ``excluded``, whose digests differ from ``other``'s."""
        return [
            bucket
            for bucket, (mine, theirs) in enumerate(zip(self._sums, other._sums))
            if mine != theirs and bucket not in excluded
        ]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Buckets) and self._sums == other._sums

    __hash__ = None  # type: ignore[assignment]
