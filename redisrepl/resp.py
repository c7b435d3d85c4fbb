"""Incremental parser for the Redis protocol (RESP2), as Webdis' ``.raw`` output speaks it.

Pure and reactor-free: feed it bytes in chunks of any size (chunk boundaries
need not match messages) and it hands back each complete reply.

It is linear: every byte is looked at a bounded number of times, whatever
the chunking. An array in progress is kept as it is built (the items
already parsed are not parsed again), and a bulk string known to need more
bytes is not looked at again before they are all here.
"""

import attrs

#: Largest bulk string or array accepted; anything larger is a malformed stream.
MAX_BULK = 512 * 1024 * 1024
MAX_ARRAY = 64 * 1024 * 1024
MAX_LINE = 64 * 1024
MAX_DEPTH = 32


class ProtocolError(Exception):
    """The bytes are not the Redis protocol (or break a limit of the parser).

    ``replies`` holds the replies completed before the bad bytes, in the
    same ``feed`` call: they are good and must not be lost.
    """

    replies = ()


@attrs.frozen
class ErrorReply:
    """A ``-ERR ...`` reply: the server refused a command."""

    message: bytes

    def __str__(self):
        return self.message.decode("utf-8", "replace")


def _integer(line):
    """A plain decimal integer (``-?[0-9]{1,19}``), else a ProtocolError."""
    if line.isdigit():  # ASCII digits only, not empty
        if len(line) <= 19:
            return int(line)
    elif line[:1] == b"-" and line[1:].isdigit() and len(line) <= 20:
        return int(line)
    raise ProtocolError(f"bad integer {line[:40]!r}")


_BULK, _ARRAY, _SIMPLE, _ERROR, _INT = b"$*+-:"

#: The header lines of short arrays and bulk strings, spelled as the fast
#: paths require them.
_ARRAY_HEADS = {b"*%d" % n: n for n in range(64)}
_BULK_HEADS = [b"$%d" % n for n in range(4096)]


def _bulk_head(length):
    return _BULK_HEADS[length] if length < len(_BULK_HEADS) else b"$%d" % length


def _scan(buf, replies, max_bulk=MAX_BULK, max_reply=None):
    """Parse the replies at the start of ``buf`` (bytes) that take the common
    forms (arrays of bulk strings such as keyspace events and batch reads,
    bulk strings, integers, simple strings and errors) from one split of the
    buffer on CRLF, with a few passes of C a reply rather than a step per
    item; append them to ``replies`` and return where they end. Stops at
    the first reply of another form, one that is incomplete or one whose
    strings hold CRLF: the item-by-item parser takes it from there, and
    decides as it would have.

    A reply is taken only if its lines re-spell it exactly (``*n``, then
    ``$<length of the value>`` before each value), so the bytes are
    precisely that reply and it is the one the item-by-item parser would
    have returned."""
    parts = buf.split(b"\r\n")
    last = len(parts) - 1  # parts[last] follows the last CRLF: not a whole line
    append = replies.append
    # no value can be longer than the buffer: checked only if it could pass
    long_values = len(buf) > max_bulk
    i = 0
    while i < last:
        head = parts[i]
        count = _ARRAY_HEADS.get(head)
        if count is None:
            kind = head[:1]
            if kind == b"*":
                count = head[1:]
                if not count.isdigit() or len(count) > 19:
                    break
                count = int(count)
            elif len(head) > MAX_LINE + 1:
                break
            elif kind == b"$":
                if (
                    i + 1 >= last
                    or len(parts[i + 1]) > max_bulk
                    or head != _bulk_head(len(parts[i + 1]))
                    or (max_reply is not None and len(parts[i + 1]) + len(head) + 4 > max_reply)
                ):
                    break
                append(parts[i + 1])
                i += 2
                continue
            elif kind == b":":
                value = head[1:]
                if not value.isdigit() or len(value) > 19:
                    break
                append(int(value))
                i += 1
                continue
            elif kind == b"+":
                append(head[1:])
                i += 1
                continue
            elif kind == b"-":
                append(ErrorReply(head[1:]))
                i += 1
                continue
            else:
                break
        stop = i + 1 + 2 * count
        if stop > last:
            break
        values = parts[i + 2 : stop : 2]
        if long_values and values and max(map(len, values)) > max_bulk:
            break
        try:
            heads = list(map(_BULK_HEADS.__getitem__, map(len, values)))
        except IndexError:
            heads = [b"$%d" % len(v) for v in values]
        if parts[i + 1 : stop : 2] != heads:
            break
        if max_reply is not None and sum(map(len, parts[i:stop])) + 2 * (stop - i) > max_reply:
            break  # the item-by-item parser says why
        append(values)
        i = stop
    # each line taken was followed by its CRLF: what is left is the lines
    # from i on, with the CRLFs between them (usually only the last part)
    return len(buf) - sum(map(len, parts[i:])) - 2 * (last - i)


def _scan_items(buf, pos, items, most, max_bulk):
    """Take up to ``most`` bulk strings (or nulls) from ``buf`` (a bytearray) at
    ``pos`` into ``items``; return how many bytes they took. Stops at
    anything else, or at one not yet whole (taken item by item). Looks only
    at the bytes of the items it takes: an array of a large reply costs its
    own size, not the size of what follows it."""
    size = len(buf)
    start = pos
    append = items.append
    while most and pos < size and buf[pos] == _BULK:
        if buf[pos + 1 : pos + 5] == b"-1\r\n":  # a null (HMGET of absent fields)
            append(None)
            pos += 5
            most -= 1
            continue
        end = buf.find(b"\r\n", pos + 1, pos + 22)
        if end < 0:
            break
        digits = bytes(buf[pos + 1 : end])
        if not digits.isdigit():
            break
        length = int(digits)
        stop = end + 2 + length
        if length > max_bulk or stop + 2 > size or buf[stop] != 13 or buf[stop + 1] != 10:
            break
        append(bytes(buf[end + 2 : stop]))
        pos = stop + 2
        most -= 1
    return pos - start


_PMESSAGE_LINES = 9  # *4, $8, pmessage, $n, pattern, $n, channel, $n, message
#: Up to so many events, one step each (cheaper than the columns' passes).
_FEW_EVENTS = 8


def _first_other(column, line):
    """The index of the first item of ``column`` that is not ``line``, or its length."""
    if column.count(line) == len(column):
        return len(column)
    return next(i for i, item in enumerate(column) if item != line)


def _first_misspelt(heads, values):
    """The index of the first of ``heads`` that is not ``$<length of its value>``, or their count."""
    try:
        spelt = list(map(_BULK_HEADS.__getitem__, map(len, values)))
    except IndexError:
        spelt = [_bulk_head(len(value)) for value in values]
    if spelt == heads:
        return len(heads)
    return next(i for i, (head, right) in enumerate(zip(heads, spelt)) if head != right)


def scan_pmessages(data, pattern):
    """The ``pmessage`` replies of ``pattern`` at the start of ``data`` (bytes),
    as a Redis server sends a subscriber its events: [(channel, message)] in
    order, and the bytes they take. Stops at anything else, at one not yet
    whole, or at one whose strings hold CRLF (the caller's parser takes it
    from there). Every reply taken is spelled exactly (each string's length
    as its header says), so it is what the parser would have made of it; a
    burst costs a few passes of C (column by column), not a step per event,
    and a few events (a steady trickle) a step each."""
    lead = [b"*4", b"$8", b"pmessage", _bulk_head(len(pattern)), pattern]
    parts = data.split(b"\r\n")
    count = (len(parts) - 1) // _PMESSAGE_LINES
    if count <= _FEW_EVENTS:
        events = []
        at = 0
        for _ in range(count):
            channel, message = parts[at + 6], parts[at + 8]
            if (
                parts[at : at + 5] != lead
                or parts[at + 5] != _bulk_head(len(channel))
                or parts[at + 7] != _bulk_head(len(message))
            ):
                break
            events.append((channel, message))
            at += _PMESSAGE_LINES
        return events, sum(map(len, parts[:at])) + 2 * at
    end = count * _PMESSAGE_LINES
    for row, line in enumerate(lead):
        count = min(count, _first_other(parts[row:end:_PMESSAGE_LINES], line))
        end = count * _PMESSAGE_LINES
    if not count:
        return [], 0
    channels = parts[6:end:_PMESSAGE_LINES]
    count = min(count, _first_misspelt(parts[5:end:_PMESSAGE_LINES], channels))
    end = count * _PMESSAGE_LINES
    messages = parts[8:end:_PMESSAGE_LINES]
    count = min(count, _first_misspelt(parts[7:end:_PMESSAGE_LINES], messages))
    end = count * _PMESSAGE_LINES
    return list(zip(channels[:count], messages[:count])), sum(map(len, parts[:end])) + 2 * end


def pmessage_begins(data, pattern):
    """Could ``data`` be the start of a ``pmessage`` reply of ``pattern`` (more bytes to come)?"""
    lines = data.split(b"\r\n")
    whole, partial = lines[:-1], lines[-1]
    if len(whole) >= _PMESSAGE_LINES:
        return False
    layout = [b"*4", b"$8", b"pmessage", _bulk_head(len(pattern)), pattern]
    length = 0  # of the string the last header announced
    for row, line in enumerate(whole):
        if row < len(layout):
            if line != layout[row]:
                return False
        elif row % 2:  # a header: $<length>
            if line[:1] != b"$" or not line[1:].isdigit() or len(line) > 20:
                return False
            length = int(line[1:])
        elif len(line) != length:
            return False
    # the line begun: as far as it goes, what that row must be
    row = len(whole)
    begun = partial[:-1] if partial.endswith(b"\r") else partial
    if row < len(layout):
        return layout[row].startswith(begun)
    if row % 2:
        return begun[:1] in (b"", b"$") and (len(begun) < 2 or begun[1:].isdigit()) and len(begun) <= 20
    return len(partial) <= length or (len(partial) == length + 1 and partial.endswith(b"\r"))


class RespParser:
    """Turns a byte stream into replies: ``bytes`` (simple and bulk strings),
    ``int``, ``None`` (null bulk or array), ``ErrorReply`` and ``list``.

    ``max_bulk`` bounds a bulk string, ``max_reply`` (if given) the bytes of
    one reply: a stream that breaks either is malformed, found out before
    the bytes of the whole reply are held."""

    def __init__(self, max_bulk=MAX_BULK, max_reply=None):
        self.max_bulk = max_bulk
        self.max_reply = max_reply
        self._buf = bytearray()  # bytes received and not yet taken into replies
        self._stack = []  # arrays being built: [items, items still to come]
        self._taken = 0  # bytes of the unfinished reply already taken off _buf
        self._need = 0  # _buf must hold this many bytes before parsing gets further
        self._broken = False

    def feed(self, data):
        """Add bytes; return the list of replies now complete (possibly empty).

        Raises ProtocolError on malformed input, carrying the replies that
        came before it; the parser is then unusable.
        """
        if self._broken:
            raise ProtocolError("the parser met malformed input before")
        buf = self._buf
        replies = []
        fast = True
        if not buf and not self._stack and len(data) > 2:
            # nothing pending (the usual case): whole replies straight from
            # ``data``; only what is left of it is kept
            taken = _scan(data, replies, self.max_bulk, self.max_reply)
            if taken == len(data):
                return replies
            data = data[taken:]
            fast = False
        if data:
            buf += data
        pos = 0
        try:
            if len(buf) >= self._need and buf:
                # (a reply known to need more bytes, such as a large bulk
                # string arriving in pieces, is not looked at again before
                # they are all here)
                self._need = 0
                pos = self._parse(buf, replies, fast)
                if self._need:
                    self._need -= pos  # counted from the start of what is kept
            self._limit(len(buf) - pos)
        except ProtocolError as e:
            self._broken = True
            e.replies = replies
            raise
        finally:
            if pos:
                del buf[:pos]
        return replies

    def _limit(self, more=0):
        if self.max_reply is not None and self._taken + more > self.max_reply:
            raise ProtocolError(f"a reply of more than {self.max_reply} bytes")

    def _parse(self, buf, replies, fast=True):
        """Take every complete reply, and every complete item of an array in
        progress, off the start of ``buf``; return how many bytes they took.
        ``fast``: the one-split fast path is worth trying at its start."""
        size = len(buf)
        pos = 0
        stack = self._stack
        max_bulk = self.max_bulk
        while pos < size:
            if not stack and fast:
                fast = False
                taken = _scan(bytes(buf[pos:]) if pos else bytes(buf), replies, max_bulk, self.max_reply)
                if taken:
                    pos += taken
                    continue
            if stack and buf[pos] == _BULK and stack[-1][1] > 1:
                # bulk strings of the array being built, in one pass (all but
                # its last item: that one completes it, below)
                top = stack[-1]
                before = len(top[0])
                taken = _scan_items(buf, pos, top[0], top[1] - 1, max_bulk)
                if taken:
                    top[1] -= len(top[0]) - before
                    pos += taken
                    self._taken += taken
                    self._limit()
                    continue
            kind = buf[pos]
            end = buf.find(b"\r\n", pos + 1, pos + MAX_LINE + 3)
            if end < 0:
                if size - pos - 1 > MAX_LINE:
                    raise ProtocolError("line too long")
                self._need = size + 1
                break
            line = bytes(buf[pos + 1 : end])
            after = end + 2
            if kind == _BULK:
                length = _integer(line)
                if length == -1:
                    value = None
                else:
                    if not 0 <= length <= max_bulk:
                        raise ProtocolError(f"bad bulk length {length}")
                    stop = after + length
                    if size < stop + 2:
                        self._need = stop + 2
                        self._limit(stop + 2 - pos)
                        break
                    if buf[stop : stop + 2] != b"\r\n":
                        raise ProtocolError("bulk string not terminated by CRLF")
                    value = bytes(buf[after:stop])
                    after = stop + 2
            elif kind == _ARRAY:
                count = _integer(line)
                if count == -1:
                    value = None
                elif not 0 <= count <= MAX_ARRAY:
                    raise ProtocolError(f"bad array length {count}")
                elif count == 0:
                    value = []
                else:
                    if len(stack) + 1 > MAX_DEPTH:
                        raise ProtocolError("arrays nested too deep")
                    stack.append([[], count])
                    self._taken += after - pos
                    pos = after
                    continue
            elif kind == _SIMPLE:
                value = line
            elif kind == _ERROR:
                value = ErrorReply(line)
            elif kind == _INT:
                value = _integer(line)
            else:
                raise ProtocolError(f"unknown reply type {bytes([kind])!r}")
            self._taken += after - pos
            self._limit()
            pos = after
            if self._deliver(value, replies):
                fast = True
        return pos

    def _deliver(self, value, replies):
        """Put ``value`` where it belongs; True if it completed a reply."""
        stack = self._stack
        while stack:
            top = stack[-1]
            top[0].append(value)
            top[1] -= 1
            if top[1]:
                return False
            stack.pop()
            value = top[0]
        replies.append(value)
        self._taken = 0
        return True

    @property
    def pending(self):
        """Bytes received that do not yet form a whole reply."""
        return self._taken + len(self._buf)


def parse_one(data):
    """Parse a buffer holding exactly one reply (a whole ``.raw`` response body)."""
    parser = RespParser()
    replies = parser.feed(data)
    if len(replies) != 1 or parser.pending:
        raise ProtocolError(f"expected one reply, got {len(replies)} and {parser.pending} stray bytes")
    return replies[0]


def encode_command(*args):
    """Encode a command as a RESP array of bulk strings: bytes as they are,
    ``str`` in UTF-8, ``int`` in decimal."""
    try:
        return encode_bulks(args)
    except TypeError:
        return encode_bulks([_spelled(arg) for arg in args])


def _spelled(arg):
    if isinstance(arg, str):
        return arg.encode()
    if isinstance(arg, int):
        return b"%d" % arg
    return arg


_BYTES = {bytes}


def encode_bulks(args):
    """A RESP array of the bulk strings ``args`` (bytes, each: anything
    else raises TypeError), built in a few passes of C however many there
    are (a batch write carries thousands)."""
    if not set(map(type, args)) <= _BYTES:
        # (join would take a bytearray, and a buffer of wider items whose
        # len() is not its bytes: exactly bytes, so that no header lies)
        raise TypeError("bulk strings are bytes")
    try:
        heads = list(map(_BULK_HEADS.__getitem__, map(len, args)))
    except IndexError:
        heads = [_bulk_head(len(arg)) for arg in args]
    if not heads:
        return b"*0\r\n"
    parts = [b""] * (2 * len(heads))
    parts[0::2] = heads
    parts[1::2] = args
    return b"*%d\r\n" % len(heads) + b"\r\n".join(parts) + b"\r\n"
