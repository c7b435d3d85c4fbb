"""The state of one key, read and written whole on either side (pure).

redisrepl replicates state, not commands: after a change it reads the key's
current state with the ``read`` script on the side that changed and makes
the other side equal with the ``write`` script (redisrepl/lua). Both take a
batch of keys, run atomically inside Redis, so the other side never sees half
a key, and are used unchanged on the local Redis (through txredisapi) and the
remote one (through Webdis). This module turns their replies into states and
states into their arguments.
"""

import hashlib

import attrs

NONE = "none"
#: The state of a key a read left for the next one (its reply was full).
LATER = "later"
STRING = "string"
HASH = "hash"
LIST = "list"
SET = "set"
ZSET = "zset"
STREAM = "stream"
SUPPORTED = (NONE, STRING, HASH, LIST, SET, ZSET, STREAM)
#: Types whose items come in pairs (field/value, member/score).
PAIRED = (HASH, ZSET)

#: Keys with more items than this are big keys (read and written in chunks,
#: by redisrepl.big_keys); ``--big-key-items``.
BIG_ITEMS = 10_000
#: Keys whose value takes more bytes than this are big keys too: a string
#: (copied in pieces), or a collection (copied in chunks).
BIG_BYTES = 8 * 1024 * 1024
#: A read stops adding keys to its reply once it holds this many bytes: the
#: other keys are read by the next one (``LATER``).
READ_BUDGET = 8 * 1024 * 1024
#: The digest of a string longer than this is the SHA1 of the SHA1s of its
#: pieces of this many bytes (so that it can be computed a piece per call).
DIGEST_PIECE = 1024 * 1024

#: Expiry times closer than this (seconds) count as the same expiry.
EXPIRY_TOLERANCE = 1.0


class StateError(Exception):
    """A the read script reply that does not describe a key."""


def items_of(kind, value):
    """The flat items of a value, as the read script gives and the write script takes them."""
    if value is None:
        return []
    if kind == STRING:
        return [value]
    if kind in PAIRED:
        return [x for pair in value for x in pair]
    if kind in (LIST, SET):
        return list(value)
    if kind == STREAM:
        flat = []
        for entry_id, fields in value:
            flat += (entry_id, b"%d" % len(fields), *fields)
        return flat
    return []


def value_of(kind, items):
    """The canonical value for flat items: the same value gives the same
    Python value whatever order Redis listed a hash's fields or a set's
    members in."""
    if kind == STRING:
        return items[0]
    if kind in PAIRED:
        return tuple(sorted(zip(items[0::2], items[1::2])))
    if kind == SET:
        return tuple(sorted(items))
    if kind == LIST:
        return tuple(items)
    if kind == STREAM:
        entries, i = [], 0
        while i < len(items):
            try:
                n = int(items[i + 1])
            except (IndexError, ValueError):
                raise StateError("stream entry without its field count") from None
            if n < 0 or i + 2 + n > len(items):
                raise StateError("stream entry runs past the reply")
            entries.append((items[i], tuple(items[i + 2 : i + 2 + n])))
            i += 2 + n
        return tuple(entries)
    return None


class _Compared:
    """States compared by content digest and expiry."""

    def same_as_digest(self, digest, expire_at, tolerance=EXPIRY_TOLERANCE):
        """Same content as a state known only by its digest and expiry
        (expiries within ``tolerance`` seconds)."""
        if self.digest != digest:
            return False
        if self.expire_at is None or expire_at is None:
            return self.expire_at is None and expire_at is None
        return abs(self.expire_at - expire_at) <= tolerance


@attrs.frozen
class KeyState(_Compared):
    """What a key holds: its type, its value and when it expires.

    ``value`` is bytes for a string, a sorted tuple of (field, value) pairs
    for a hash and of (member, score) pairs for a sorted set, a tuple of
    elements for a list (in order) and a set (sorted), None when the key is
    absent or of a type not replicated.
    ``expire_at`` is the absolute unix time (seconds) the key expires at, as
    its server says (PEXPIRETIME), or None.
    """

    kind: str
    value: object = None
    expire_at: float | None = None
    digest: bytes = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self):
        # the same digest the reconcile compares (computed once per state)
        object.__setattr__(self, "digest", content_digest(self) or b"")

    big = False

    @property
    def supported(self):
        return self.kind in SUPPORTED

    def same_as(self, other, tolerance=EXPIRY_TOLERANCE):
        """Same type and value, and expiries within ``tolerance`` of each other."""
        return self.same_as_digest(other.digest, other.expire_at, tolerance)

    def write_args(self, now):
        """ARGV for the write script; a key whose expiry has passed is written as absent."""
        pttl = 0  # here: the absolute expiry in unix ms, 0 for none
        if self.expire_at is not None:
            if self.expire_at <= now:
                return [NONE.encode(), b"0"]
            pttl = max(1, round(self.expire_at * 1000))
        if self.kind in SUPPORTED and self.kind != NONE:
            return [self.kind.encode(), b"%d" % pttl, *items_of(self.kind, self.value)]
        return [NONE.encode(), b"0"]


@attrs.frozen
class BigState(_Compared):
    """A big key as the read script describes it: its type, number of items and
    expiry, not its items (redisrepl.big_keys copies it in chunks).
    ``digest`` is its content digest, once a chunked copy has computed it."""

    kind: str
    count: int
    expire_at: float | None = None
    digest: bytes = b""
    supported = True
    big = True


def _text(item):
    if isinstance(item, bytes):
        return item.decode("ascii", "replace")
    raise StateError(f"expected a type name, got {item!r:.60}")


def from_reply(reply, now):
    """Turn a the read script reply into a KeyState read at time ``now``."""
    if not isinstance(reply, list) or len(reply) < 2:
        raise StateError(f"unexpected reply {reply!r:.80}")
    kind = _text(reply[0])
    try:
        pttl = int(reply[1])
    except (TypeError, ValueError):
        raise StateError(f"unexpected expiry {reply[1]!r:.40}") from None
    expire_at = pttl / 1000.0 if pttl >= 0 else None
    payload = reply[2:]
    if not all(isinstance(item, bytes) for item in payload):
        raise StateError("value items are not all strings")
    if kind == NONE:
        return ABSENT
    if kind == LATER:
        return NOT_READ
    if kind == "big":
        try:
            return BigState(_text(payload[0]), int(payload[1]), expire_at)
        except (IndexError, ValueError):
            raise StateError("big key reply without its type and size") from None
    if kind == STRING:
        if len(payload) != 1:
            raise StateError("string reply without a value")
        return KeyState(STRING, payload[0], expire_at)
    if kind in SUPPORTED:
        if (not payload and kind != STREAM) or (kind in PAIRED and len(payload) % 2):
            raise StateError(f"{kind} reply without its items")
        return KeyState(kind, value_of(kind, payload), expire_at)
    return KeyState(kind, None, expire_at)


_STRING_BYTES = STRING.encode()


def _all_plain_strings(reply, count):
    """Is ``reply`` ``count`` segments {string, -1, tag, 1, value} and nothing else?"""
    return (
        count > 0
        and len(reply) == 5 * count
        and reply[0::5].count(_STRING_BYTES) == count
        and reply[1::5].count(b"-1") == count
        and reply[3::5].count(b"1") == count
        and set(map(type, reply[4::5])) == {bytes}
    )


def split_reply(reply, count, now):
    """(states, tags) of ``count`` keys from one read script reply, in
    order: each key's state, and the hub's stamp of what it holds (an int,
    or None: see the prelude's ``after_tag``)."""
    if not isinstance(reply, list):
        raise StateError(f"unexpected reply {reply!r:.80}")
    if _all_plain_strings(reply, count):
        # the usual batch: strings without expiry, read in a few passes of C
        try:
            tags = [int(tag) if tag else None for tag in reply[2::5]]
        except (TypeError, ValueError):
            raise StateError("bad segment header") from None
        return [KeyState(STRING, value) for value in reply[4::5]], tags
    states, tags = [], []
    i = 0
    for _ in range(count):
        try:
            n = int(reply[i + 3])
            tag = int(reply[i + 2]) if reply[i + 2] else None
        except (IndexError, TypeError, ValueError):
            raise StateError(f"bad segment header at item {i}") from None
        if n < 0 or i + 4 + n > len(reply):
            raise StateError(f"segment at item {i} runs past the reply")
        if n == 1 and reply[i] == _STRING_BYTES and reply[i + 1] == b"-1" and isinstance(reply[i + 4], bytes):
            states.append(KeyState(STRING, reply[i + 4]))  # the common case, as from_reply reads it
        else:
            states.append(from_reply(reply[i : i + 2] + reply[i + 4 : i + 4 + n], now))
        tags.append(tag)
        i += 4 + n
    if i != len(reply):
        raise StateError(f"{len(reply) - i} stray items after {count} keys")
    return states, tags


def write_segment(kind, expiry, items, origin=b"", expect=b""):
    """One key's segment of the write script's ARGV (see redisrepl/lua/write.lua)."""
    return [kind, expiry, origin, expect, b"%d" % len(items), *items]


def batch_write_args(states, now, origins=None, expects=None):
    """ARGV for the write script writing ``states`` (one per key, in order);
    ``origins``, if given, holds for each state the stamp it is known since
    when it is a refill (b"" for a genuine change), ``expects`` the digest
    each key must still hold to be written (b"" for any, b"-" for none)."""
    args = []
    for i, key_state in enumerate(states):
        one = key_state.write_args(now)
        args += write_segment(one[0], one[1], one[2:], origins[i] if origins else b"", expects[i] if expects else b"")
    return args


def size(key_state):
    """Roughly how many bytes a state takes on the wire."""
    return sum(len(item) + 8 for item in items_of(key_state.kind, key_state.value)) + 16


#: Items (list elements, stream entries) per SHA1 in the digest of a list or
#: a stream (1000 in the Lua scripts too).
DIGEST_CHUNK = 1000
#: The first letter of the digest of each type (a string has none).
DIGEST_LETTER = {HASH: b"h", LIST: b"l", SET: b"m", ZSET: b"z", STREAM: b"t"}


class Digester:
    """content_digest() computed as the flat items of a value pass, in any
    number of pieces (as the read script or a chunked read gives them), holding
    none of them: the digest of a key of any size in constant memory."""

    def __init__(self, kind):
        self.kind = kind
        self._xor = 0  # hash, set, zset: XOR of the items' SHA1s
        self._outer = hashlib.sha1()  # list, stream: SHA1 of the chunks' SHA1s
        self._chunk = hashlib.sha1()
        self._in_chunk = 0
        self._pending = []  # an item (or stream entry) cut between pieces
        self._outer_pieces = 0  # string: whole pieces folded into _outer
        self._first = []  # string: the bytes of its first piece, while it is the only one

    def add(self, items):
        kind = self.kind
        if kind == SET:
            for member in items:
                self._xor ^= int.from_bytes(hashlib.sha1(member).digest(), "big")
        elif kind in PAIRED:
            items = self._pending + list(items)
            cut = len(items) - len(items) % 2
            self._pending = items[cut:]
            sha1, acc = hashlib.sha1, self._xor
            for name, value in zip(items[0:cut:2], items[1:cut:2]):
                acc ^= int.from_bytes(sha1(b"%d:" % len(name) + name + value).digest(), "big")
            self._xor = acc
        elif kind == LIST:
            for element in items:
                self._chunk.update(b"%d:" % len(element) + element)
                self._count_one()
        elif kind == STREAM:
            items = self._pending + list(items)
            i = 0
            while i + 2 <= len(items):
                n = int(items[i + 1])
                if i + 2 + n > len(items):
                    break
                self._chunk.update(b"%d:" % len(items[i]) + items[i])
                for x in items[i + 2 : i + 2 + n]:
                    self._chunk.update(b"%d:" % len(x) + x)
                self._chunk.update(b";")
                self._count_one()
                i += 2 + n
            self._pending = items[i:]
        elif kind == STRING:
            # the bytes of a string, in pieces of any size: SHA1s of its
            # DIGEST_PIECE-byte pieces, the first piece kept whole until it
            # is known whether the string is longer
            for data in items:
                self._string_bytes(data)

    def _string_bytes(self, data):
        while data:
            room = DIGEST_PIECE - self._in_chunk
            part, data = data[:room], data[room:]
            self._chunk.update(part)
            if self._outer_pieces == 0:
                self._first.append(part)
            self._in_chunk += len(part)
            if self._in_chunk == DIGEST_PIECE and data:
                self._outer.update(self._chunk.hexdigest().encode())
                self._chunk = hashlib.sha1()
                self._in_chunk = 0
                self._outer_pieces += 1
                self._first = []

    def _count_one(self):
        self._in_chunk += 1
        if self._in_chunk == DIGEST_CHUNK:
            self._outer.update(self._chunk.hexdigest().encode())
            self._chunk = hashlib.sha1()
            self._in_chunk = 0

    def add_xor(self, hexdigest):
        """Fold in the XOR (hex) of the items of a piece digested elsewhere."""
        self._xor ^= int(hexdigest, 16)

    def add_chunk(self, hexdigest):
        """Fold in the SHA1 (hex) of a whole chunk digested elsewhere (of a
        string: of a piece of DIGEST_PIECE bytes, the last one shorter)."""
        self._outer.update(hexdigest)
        self._outer_pieces += 1

    def digest(self):
        if self.kind == STRING:
            if self._outer_pieces == 0:
                # one piece at most: the SHA1 of the whole string
                return hashlib.sha1(b"s" + b"".join(self._first)).hexdigest().encode()
            outer = self._outer.copy()
            if self._in_chunk:
                outer.update(self._chunk.hexdigest().encode())
            return b"S" + outer.hexdigest().encode()
        if self.kind in (LIST, STREAM):
            outer = self._outer.copy()
            if self._in_chunk:
                outer.update(self._chunk.hexdigest().encode())
            return DIGEST_LETTER[self.kind] + outer.hexdigest().encode()
        return DIGEST_LETTER[self.kind] + b"%040x" % self._xor


def synced_digest(key_state):
    """What the reconcile compares for a state: its content digest and its
    absolute expiry (``digest@ms``), None if absent."""
    digest = key_state.digest or None
    if digest is None or key_state.expire_at is None:
        return digest
    return digest + b"@%d" % round(key_state.expire_at * 1000)


def content_digest(key_state):
    """The digest the digest_scan script computes for this state (bytes), None if absent."""
    kind = key_state.kind
    if kind == STRING and len(key_state.value) <= DIGEST_PIECE:  # the common case, kept short
        return hashlib.sha1(b"s" + key_state.value).hexdigest().encode()
    if kind == NONE:
        return None
    if kind not in SUPPORTED:
        return b"x"
    digester = Digester(kind)
    digester.add(items_of(kind, key_state.value))
    return digester.digest()


#: The state of a key that does not exist.
ABSENT = KeyState(NONE)
#: The state of a key a read did not read (its reply was full): read it again.
NOT_READ = KeyState(LATER)
