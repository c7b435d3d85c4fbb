"""The state of one key, read and written whole on either side (pure).

redisrepl replicates state, not commands: after a change it reads the key's
current state with READ_SCRIPT on the side that changed and makes the other
side equal with WRITE_SCRIPT. Both take a batch of keys, run atomically
inside Redis, so the other side never sees half a key, and are used unchanged
on the local Redis (through txredisapi) and the remote one (through Webdis).
"""

import hashlib

import attrs

NONE = "none"
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

#: Expiry times closer than this (seconds) count as the same expiry.
EXPIRY_TOLERANCE = 1.0

# Lua helpers shared by the scripts that read values (prepended to them).
LUA_HELPERS = b"""\
local COUNTERS = {hash = 'HLEN', list = 'LLEN', set = 'SCARD', zset = 'ZCARD', stream = 'XLEN'}
-- XRANGE entries as flat items: id, field count, field, value, ... each
local function flatten_entries(entries, items)
  for _, entry in ipairs(entries) do
    items[#items + 1] = entry[1]
    items[#items + 1] = tostring(#entry[2])
    for _, x in ipairs(entry[2]) do
      items[#items + 1] = x
    end
  end
  return items
end
-- one spelling of a score whatever the Redis version (7.2 prints 1.1 where
-- 7.0 prints 1.1000000000000001)
local function canonical_scores(flat)
  for i = 2, #flat, 2 do
    flat[i] = string.format('%.17g', tonumber(flat[i]))
  end
  return flat
end
-- the XOR of the SHA1s of the items of a set, or of the pairs of a hash or
-- a sorted set (its scores canonical), in hex
local function xor_digest(t, items)
  local acc = {0, 0, 0, 0, 0}
  local function xor_into(h)
    for i = 1, 5 do
      acc[i] = bit.bxor(acc[i], tonumber(string.sub(h, i * 8 - 7, i * 8), 16))
    end
  end
  if t == 'set' then
    for _, m in ipairs(items) do
      xor_into(redis.sha1hex(m))
    end
  else
    for i = 1, #items, 2 do
      xor_into(redis.sha1hex(#items[i] .. ':' .. items[i] .. items[i + 1]))
    end
  end
  local parts = {}
  for i = 1, 5 do
    parts[i] = string.format('%08x', acc[i] % 4294967296)
  end
  return table.concat(parts)
end
-- the SHA1 (hex) of one chunk of list elements or of flat stream entries
local function chunk_sha1(t, items)
  local parts = {}
  if t == 'list' then
    for i, e in ipairs(items) do
      parts[i] = #e .. ':' .. e
    end
  else
    local i = 1
    while i <= #items do
      local n = tonumber(items[i + 1])
      parts[#parts + 1] = #items[i] .. ':' .. items[i]
      for j = i + 2, i + 1 + n do
        parts[#parts + 1] = #items[j] .. ':' .. items[j]
      end
      parts[#parts + 1] = ';'
      i = i + 2 + n
    end
  end
  return redis.sha1hex(table.concat(parts))
end
-- the SHA1 of the SHA1s of the chunks of a list's elements or a stream's entries
local function chunked_sha1(t, all)
  local hexes = {}
  for first = 1, #all, 1000 do
    local chunk = {unpack(all, first, math.min(first + 999, #all))}
    if t == 'stream' then chunk = flatten_entries(chunk, {}) end
    hexes[#hexes + 1] = chunk_sha1(t, chunk)
  end
  return redis.sha1hex(table.concat(hexes))
end
-- content_digest() of key k; 'B' and its type for a key of more than big
-- items; 'x' for a type not replicated; nil if absent
local function key_digest(k, big)
  local t = redis.call('TYPE', k)['ok']
  if COUNTERS[t] and redis.call(COUNTERS[t], k) > big then
    return 'B' .. t
  elseif t == 'string' then
    return redis.sha1hex('s' .. redis.call('GET', k))
  elseif t == 'hash' then
    return 'h' .. xor_digest(t, redis.call('HGETALL', k))
  elseif t == 'set' then
    return 'm' .. xor_digest(t, redis.call('SMEMBERS', k))
  elseif t == 'zset' then
    return 'z' .. xor_digest(t, canonical_scores(redis.call('ZRANGE', k, 0, -1, 'WITHSCORES')))
  elseif t == 'list' then
    return 'l' .. chunked_sha1(t, redis.call('LRANGE', k, 0, -1))
  elseif t == 'stream' then
    return 't' .. chunked_sha1(t, redis.call('XRANGE', k, '-', '+'))
  elseif t ~= 'none' then
    return 'x'
  end
  return nil
end
"""


# Both scripts take many keys at once (one round trip for a batch).
#
# READ_SCRIPT reply: a flat array with, for each key in KEYS, a segment
# {type, pttl, n, item1..itemn}: the value of a string (n = 1), the
# field/value pairs of a hash, the elements of a list (in order) or a set,
# the member/score pairs of a sorted set, and for a stream, each entry as
# {id, 2n, field1, value1, ... fieldn, valuen}. The expiry is the absolute time in
# unix ms (PEXPIRETIME, Redis 7), -1 without an expiry. Flat because
# Webdis' raw output drops nested arrays and nil elements; it also turns
# integers inside arrays into bulk strings, hence tostring().
# A key with more items than ARGV[1] (a big key) is not read: its segment is
# {'big', pttl, 2, type, item count}, and redisrepl.big_keys copies it in chunks.
READ_SCRIPT_BODY = LUA_HELPERS + b"""\
local big = tonumber(ARGV[1] or '10000')
local r = {}
local n = 0
for _, k in ipairs(KEYS) do
  local t = redis.call('TYPE', k)['ok']
  local items = {}
  local pttl = '-2'
  if t ~= 'none' then
    pttl = tostring(redis.call('PEXPIRETIME', k))
    local count = COUNTERS[t] and redis.call(COUNTERS[t], k) or 0
    if count > big then
      -- too big to read in one piece: its header only (big_keys copies it)
      items = {t, tostring(count)}
      t = 'big'
    elseif t == 'string' then
      items = {redis.call('GET', k)}
    elseif t == 'hash' then
      items = redis.call('HGETALL', k)
    elseif t == 'list' then
      items = redis.call('LRANGE', k, 0, -1)
    elseif t == 'set' then
      items = redis.call('SMEMBERS', k)
    elseif t == 'zset' then
      items = canonical_scores(redis.call('ZRANGE', k, 0, -1, 'WITHSCORES'))
    elseif t == 'stream' then
      items = flatten_entries(redis.call('XRANGE', k, '-', '+'), {})
    end
  end
  r[n + 1] = t
  r[n + 2] = pttl
  r[n + 3] = tostring(#items)
  n = n + 3
  for j = 1, #items do
    r[n + j] = items[j]
  end
  n = n + #items
end
return r
"""

# WRITE_SCRIPT ARGV: for each key in KEYS, a segment {type, expiry, n,
# item1..itemn}; the expiry as an absolute unix time in ms (PEXPIREAT: the
# same instant on both sides), 0 for none. The type 'none' deletes. Chunks
# of a big key go to a temporary key: a type with '=' in front ('=hash')
# replaces what the key holds, one with '+' in front adds to it, and for both
# the expiry is relative (ms from now, PEXPIRE: by the server's clock).
WRITE_SCRIPT_BODY = b"""\
local function chunked(cmd, k, list, first, last)
  local i = first
  while i <= last do
    local j = math.min(i + 3999, last)
    redis.call(cmd, k, unpack(list, i, j))
    i = j + 1
  end
end
local function expire(k, at, temporary)
  if at > 0 then
    redis.call(temporary and 'PEXPIRE' or 'PEXPIREAT', k, at)
  end
end
local a = 1
for _, k in ipairs(KEYS) do
  local kind = ARGV[a]
  local pttl = tonumber(ARGV[a + 1])
  local first = a + 3
  a = first + tonumber(ARGV[a + 2])
  local mode = string.sub(kind, 1, 1)
  local temporary = mode == '+' or mode == '='
  if temporary then
    kind = string.sub(kind, 2)
  end
  if mode ~= '+' and ({hash = 1, list = 1, set = 1, zset = 1, stream = 1})[kind] then
    redis.call('DEL', k)
  end
  if kind == 'none' then
    redis.call('DEL', k)
  elseif kind == 'string' then
    redis.call('SET', k, ARGV[first])
    expire(k, pttl, temporary)
  elseif kind == 'hash' or kind == 'list' or kind == 'set' then
    local cmd = ({hash = 'HSET', list = 'RPUSH', set = 'SADD'})[kind]
    chunked(cmd, k, ARGV, first, a - 1)
    expire(k, pttl, temporary)
  elseif kind == 'zset' then
    local pairs_ = {}
    for i = first, a - 1, 2 do
      pairs_[#pairs_ + 1] = ARGV[i + 1]
      pairs_[#pairs_ + 1] = ARGV[i]
    end
    chunked('ZADD', k, pairs_, 1, #pairs_)
    expire(k, pttl, temporary)
  elseif kind == 'stream' then
    local i = first
    while i < a do
      local n = tonumber(ARGV[i + 1])
      redis.call('XADD', k, ARGV[i], unpack(ARGV, i + 2, i + 1 + n))
      i = i + 2 + n
    end
    if first == a and not temporary then
      -- an empty stream still exists: create it and take its only entry away
      redis.call('XADD', k, '0-1', '_', '_')
      redis.call('XDEL', k, '0-1')
    end
    expire(k, pttl, temporary)
  else
    return redis.error_reply('ERR redisrepl cannot write a key of type ' .. kind)
  end
end
return #KEYS
"""


@attrs.frozen
class Script:
    """A Lua script and its SHA1, for EVALSHA."""

    body: bytes
    sha: bytes = attrs.field(init=False)

    def __attrs_post_init__(self):
        object.__setattr__(self, "sha", hashlib.sha1(self.body).hexdigest().encode())


READ_SCRIPT = Script(READ_SCRIPT_BODY)
WRITE_SCRIPT = Script(WRITE_SCRIPT_BODY)


class StateError(Exception):
    """A READ_SCRIPT reply that does not describe a key."""


def items_of(kind, value):
    """The flat items of a value, as READ_SCRIPT gives and WRITE_SCRIPT takes them."""
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
            entries.append((items[i], tuple(items[i + 2:i + 2 + n])))
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
        """ARGV for WRITE_SCRIPT; a key whose expiry has passed is written as absent."""
        pttl = 0   # here: the absolute expiry in unix ms, 0 for none
        if self.expire_at is not None:
            if self.expire_at <= now:
                return [NONE.encode(), b"0"]
            pttl = max(1, round(self.expire_at * 1000))
        if self.kind in SUPPORTED and self.kind != NONE:
            return [self.kind.encode(), b"%d" % pttl, *items_of(self.kind, self.value)]
        return [NONE.encode(), b"0"]



@attrs.frozen
class BigState(_Compared):
    """A big key as READ_SCRIPT describes it: its type, number of items and
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
    """Turn a READ_SCRIPT reply into a KeyState read at time ``now``."""
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


def split_reply(reply, count, now):
    """The states of ``count`` keys from one READ_SCRIPT reply, in order."""
    if not isinstance(reply, list):
        raise StateError(f"unexpected reply {reply!r:.80}")
    states = []
    i = 0
    for _ in range(count):
        try:
            n = int(reply[i + 2])
        except (IndexError, TypeError, ValueError):
            raise StateError(f"bad segment header at item {i}") from None
        if n < 0 or i + 3 + n > len(reply):
            raise StateError(f"segment at item {i} runs past the reply")
        states.append(from_reply(reply[i:i + 2] + reply[i + 3:i + 3 + n], now))
        i += 3 + n
    if i != len(reply):
        raise StateError(f"{len(reply) - i} stray items after {count} keys")
    return states


def batch_write_args(states, now):
    """ARGV for WRITE_SCRIPT writing ``states`` (one per key, in order)."""
    args = []
    for key_state in states:
        one = key_state.write_args(now)
        args += one[:2]
        args.append(b"%d" % (len(one) - 2))
        args += one[2:]
    return args


def size(key_state):
    """Roughly how many bytes a state takes on the wire."""
    return sum(len(item) + 8 for item in items_of(key_state.kind, key_state.value)) + 16


# -- digests computed inside Redis, for the reconcile -------------------------
#
# DIGEST_SCAN_SCRIPT runs one SCAN step and answers, flat,
# {next_cursor, key1, digest1, expiry1, ...} for the keys of the step (the
# expiry as PEXPIRETIME answers it: absolute unix ms, -1 for none)
# outside the reserved prefix (ARGV: cursor, match pattern, count, reserved
# prefix, most items a key may have to be digested). A digest is
# content_digest() of the key computed in Redis, 'x' for a type redisrepl
# does not replicate, 'B' and the type for a big key, one with more items than
# the limit (digested in one call, it would block the server: about 0.4 s per
# 100,000 items; redisrepl.big_keys digests it a chunk per call instead). Its
# first letter tells the type (none for a string: 40 hex digits). The digest
# of a hash, a set or a sorted set does not depend on the order of its items
# (nor on Lua's locale-dependent string order): it is the XOR of the SHA1s of
# its items. That of a list or a stream is the SHA1 of the SHA1s (in hex) of
# its items taken DIGEST_CHUNK at a time, so that it can be computed a chunk
# per call too.
DIGEST_SCAN_SCRIPT_BODY = LUA_HELPERS + b"""\
local res = redis.call('SCAN', ARGV[1], 'MATCH', ARGV[2], 'COUNT', ARGV[3])
local reserved = ARGV[4]
local big = tonumber(ARGV[5] or '10000')
local out = {res[1]}
for _, k in ipairs(res[2]) do
  if reserved == '' or string.sub(k, 1, #reserved) ~= reserved then
    local d = key_digest(k, big)
    if d then
      out[#out + 1] = k
      out[#out + 1] = d
      out[#out + 1] = tostring(redis.call('PEXPIRETIME', k))
    end
  end
end
return out
"""

DIGEST_SCAN_SCRIPT = Script(DIGEST_SCAN_SCRIPT_BODY)

#: One SCAN step (ARGV: cursor, match pattern, count, reserved prefix),
#: flat: {next cursor, key, ...}, without the keys under the reserved prefix.
KEY_SCAN_SCRIPT = Script(b"""\
local res = redis.call('SCAN', ARGV[1], 'MATCH', ARGV[2], 'COUNT', ARGV[3])
local reserved = ARGV[4]
local out = {res[1]}
for _, k in ipairs(res[2]) do
  if reserved == '' or string.sub(k, 1, #reserved) ~= reserved then
    out[#out + 1] = k
  end
end
return out
""")

#: The digests of the keys of KEYS (ARGV: most items a key may have to be
#: digested), flat {digest, expiry} for each: as DIGEST_SCAN_SCRIPT gives
#: them, '' and -2 for an absent key.
DIGEST_KEYS_SCRIPT = Script(LUA_HELPERS + b"""\
local big = tonumber(ARGV[1] or '10000')
local out = {}
for i, k in ipairs(KEYS) do
  local d = key_digest(k, big)
  out[2 * i - 1] = d or ''
  out[2 * i] = d and tostring(redis.call('PEXPIRETIME', k)) or '-2'
end
return out
""")


#: Items (list elements, stream entries) per SHA1 in the digest of a list or
#: a stream (1000 in the Lua scripts too).
DIGEST_CHUNK = 1000
#: The first letter of the digest of each type (a string has none).
DIGEST_LETTER = {HASH: b"h", LIST: b"l", SET: b"m", ZSET: b"z", STREAM: b"t"}


class Digester:
    """content_digest() computed as the flat items of a value pass, in any
    number of pieces (as READ_SCRIPT or a chunked read gives them), holding
    none of them: the digest of a key of any size in constant memory."""

    def __init__(self, kind):
        self.kind = kind
        self._xor = 0                     # hash, set, zset: XOR of the items' SHA1s
        self._outer = hashlib.sha1()      # list, stream: SHA1 of the chunks' SHA1s
        self._chunk = hashlib.sha1()
        self._in_chunk = 0
        self._pending = []                # an item (or stream entry) cut between pieces

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
                for x in items[i + 2:i + 2 + n]:
                    self._chunk.update(b"%d:" % len(x) + x)
                self._chunk.update(b";")
                self._count_one()
                i += 2 + n
            self._pending = items[i:]
        elif kind == STRING:
            self._chunk.update(b"s" + b"".join(items))

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
        """Fold in the SHA1 (hex) of a whole chunk digested elsewhere."""
        self._outer.update(hexdigest)

    def digest(self):
        if self.kind == STRING:
            return self._chunk.hexdigest().encode()
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
    """The digest DIGEST_SCAN_SCRIPT computes for this state (bytes), None if absent."""
    kind = key_state.kind
    if kind == STRING:   # the common case, kept short
        return hashlib.sha1(b"s" + key_state.value).hexdigest().encode()
    if kind == NONE:
        return None
    if kind not in SUPPORTED:
        return b"x"
    digester = Digester(kind)
    digester.add(items_of(kind, key_state.value))
    return digester.digest()


#: {"0" or "1" for each key of KEYS}: which keys exist (flat, as strings, for Webdis).
EXISTS_SCRIPT = Script(b"""\
local r = {}
for i, k in ipairs(KEYS) do
  r[i] = tostring(redis.call('EXISTS', k))
end
return r
""")


#: The state of a key that does not exist.
ABSENT = KeyState(NONE)
