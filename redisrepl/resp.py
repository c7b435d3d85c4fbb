"""Incremental parser for the Redis protocol (RESP2), as Webdis' ``.raw`` output speaks it.

Pure and reactor-free: feed it bytes in chunks of any size (chunk boundaries
need not match messages) and it hands back each complete reply.
"""

import attrs

#: Largest bulk string or array accepted; anything larger is a malformed stream.
MAX_BULK = 512 * 1024 * 1024
MAX_ARRAY = 64 * 1024 * 1024
MAX_LINE = 64 * 1024
MAX_DEPTH = 32


class ProtocolError(Exception):
    """The bytes are not the Redis protocol.

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


class _Incomplete(Exception):
    """More bytes are needed; ``need`` is how many the buffer must hold
    (counted from its start) before parsing can get further."""

    def __init__(self, need):
        self.need = need


def _integer(line):
    """A plain decimal integer (``-?[0-9]{1,19}``), else a ProtocolError."""
    if line.isdigit():                      # ASCII digits only, not empty
        if len(line) <= 19:
            return int(line)
    elif line[:1] == b"-" and line[1:].isdigit() and len(line) <= 20:
        return int(line)
    raise ProtocolError(f"bad integer {line[:40]!r}")


def _line_end(buf, pos):
    """Where the line starting at ``pos`` ends (its CR)."""
    end = buf.find(b"\r\n", pos, pos + MAX_LINE + 2)
    if end < 0:
        if len(buf) - pos > MAX_LINE:
            raise ProtocolError("line too long")
        raise _Incomplete(len(buf) + 1)
    return end


def _parse(buf, pos, depth):
    """The reply starting at ``pos`` of ``buf`` (bytes) and where it ends."""
    if depth > MAX_DEPTH:
        raise ProtocolError("arrays nested too deep")
    if pos >= len(buf):
        raise _Incomplete(pos + 1)
    kind = buf[pos]
    end = _line_end(buf, pos + 1)
    line = buf[pos + 1:end]
    pos = end + 2
    if kind == _BULK:
        length = _integer(line)
        if length == -1:
            return None, pos
        if not 0 <= length <= MAX_BULK:
            raise ProtocolError(f"bad bulk length {length}")
        end = pos + length
        if len(buf) < end + 2:
            raise _Incomplete(end + 2)
        if buf[end:end + 2] != b"\r\n":
            raise ProtocolError("bulk string not terminated by CRLF")
        return buf[pos:end], end + 2
    if kind == _ARRAY:
        count = _integer(line)
        if count == -1:
            return None, pos
        if not 0 <= count <= MAX_ARRAY:
            raise ProtocolError(f"bad array length {count}")
        if count and depth + 1 > MAX_DEPTH:
            raise ProtocolError("arrays nested too deep")
        items = []
        append = items.append
        size = len(buf)
        for _ in range(count):
            # bulk strings, by far the most common items, are parsed here
            # rather than with a call each; anything else recurses
            if pos < size and buf[pos] == _BULK:
                end = buf.find(b"\r\n", pos + 1, pos + MAX_LINE + 3)
                if end < 0:
                    _line_end(buf, pos + 1)     # raises the right error
                line = buf[pos + 1:end]
                if line.isdigit() and len(line) <= 19:
                    length = int(line)
                    if length > MAX_BULK:
                        raise ProtocolError(f"bad bulk length {length}")
                else:
                    length = _integer(line)
                    if length == -1:
                        append(None)
                        pos = end + 2
                        continue
                    if length < 0:
                        raise ProtocolError(f"bad bulk length {length}")
                start = end + 2
                end = start + length
                if size < end + 2:
                    raise _Incomplete(end + 2)
                if buf[end:end + 2] != b"\r\n":
                    raise ProtocolError("bulk string not terminated by CRLF")
                append(buf[start:end])
                pos = end + 2
            else:
                item, pos = _parse(buf, pos, depth + 1)
                append(item)
        return items, pos
    if kind == _SIMPLE:
        return line, pos
    if kind == _ERROR:
        return ErrorReply(line), pos
    if kind == _INT:
        return _integer(line), pos
    raise ProtocolError(f"unknown reply type {bytes([kind])!r}")


def _scan(buf, replies):
    """Parse the replies at the start of ``buf`` that take the common forms
    (arrays of bulk strings such as keyspace events and batch reads, bulk
    strings, integers, simple strings and errors) from one split of the
    buffer on CRLF, with a few passes of C a reply rather than a step per
    item; append them to ``replies`` and return where they end. Stops at
    the first reply of another form, one that is incomplete or one whose
    strings hold CRLF: _parse takes it from there, and decides as before.

    A reply is taken only if its lines re-spell it exactly (``*n``, then
    ``$<length of the value>`` before each value), so the bytes are
    precisely that reply and it is the one _parse would have returned."""
    if len(buf) > MAX_BULK:
        return 0
    parts = buf.split(b"\r\n")
    last = len(parts) - 1   # parts[last] follows the last CRLF: not a whole line
    append = replies.append
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
                if i + 1 >= last or head != _bulk_head(len(parts[i + 1])):
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
        values = parts[i + 2:stop:2]
        try:
            heads = list(map(_BULK_HEADS.__getitem__, map(len, values)))
        except IndexError:
            heads = [b"$%d" % len(v) for v in values]
        if parts[i + 1:stop:2] != heads:
            break
        append(values)
        i = stop
    # each line taken was followed by its CRLF
    return sum(map(len, parts[:i])) + 2 * i


#: The header lines of short arrays and bulk strings, spelled as _scan
#: requires them.
_ARRAY_HEADS = {b"*%d" % n: n for n in range(64)}
_BULK_HEADS = [b"$%d" % n for n in range(4096)]


def _bulk_head(length):
    return _BULK_HEADS[length] if length < len(_BULK_HEADS) else b"$%d" % length


_BULK, _ARRAY, _SIMPLE, _ERROR, _INT = b"$*+-:"


class RespParser:
    """Turns a byte stream into replies: ``bytes`` (simple and bulk strings),
    ``int``, ``None`` (null bulk or array), ``ErrorReply`` and ``list``."""

    def __init__(self):
        self._chunks = []   # bytes received and not yet parsed into replies
        self._size = 0      # their total length
        self._need = 0      # parsing gets no further before there are this many

    def feed(self, data):
        """Add bytes; return the list of replies now complete (possibly empty).

        Raises ProtocolError on malformed input, carrying the replies that
        came before it; the parser is then unusable.
        """
        if data:
            self._chunks.append(data)
            self._size += len(data)
        if self._size < self._need or not self._size:
            # a reply known to need more bytes (a large bulk string arriving
            # in pieces) is not parsed again until they are all here
            return []
        chunks = self._chunks
        buf = b"".join(chunks) if len(chunks) > 1 else bytes(chunks[0])
        replies = []
        pos, size, need = 0, len(buf), 0
        try:
            pos = _scan(buf, replies)
            while pos < size:
                reply, pos = _parse(buf, pos, 0)
                replies.append(reply)
        except _Incomplete as e:
            need = e.need - pos
        except ProtocolError as e:
            e.replies = replies
            self._keep(buf, pos, 0)
            raise
        self._keep(buf, pos, need)
        return replies

    def _keep(self, buf, pos, need):
        rest = buf[pos:] if pos else buf
        self._chunks = [rest] if rest else []
        self._size = len(rest)
        self._need = need

    @property
    def pending(self):
        """Bytes received that do not yet form a whole reply."""
        return self._size


def parse_one(data):
    """Parse a buffer holding exactly one reply (a whole ``.raw`` response body)."""
    parser = RespParser()
    replies = parser.feed(data)
    if len(replies) != 1 or parser.pending:
        raise ProtocolError(
            f"expected one reply, got {len(replies)} and {parser.pending} stray bytes")
    return replies[0]


def encode_command(*args):
    """Encode a command as a RESP array of bulk strings (used by tests and fakes)."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, str):
            arg = arg.encode()
        elif isinstance(arg, int):
            arg = b"%d" % arg
        out.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
    return b"".join(out)
