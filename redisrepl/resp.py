"""Incremental parser for the Redis protocol (RESP2), as Webdis' ``.raw`` output speaks it.

Pure and reactor-free: feed it bytes in chunks of any size (chunk boundaries
need not match messages) and it hands back each complete reply.
"""

import re

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


_INTEGER = re.compile(rb"-?[0-9]{1,19}")


@attrs.frozen
class ErrorReply:
    """A ``-ERR ...`` reply: the server refused a command."""

    message: bytes

    def __str__(self):
        return self.message.decode("utf-8", "replace")


class _Incomplete(Exception):
    pass


class RespParser:
    """Turns a byte stream into replies: ``bytes`` (simple and bulk strings),
    ``int``, ``None`` (null bulk or array), ``ErrorReply`` and ``list``."""

    def __init__(self):
        self._buffer = bytearray()

    def feed(self, data):
        """Add bytes; return the list of replies now complete (possibly empty).

        Raises ProtocolError on malformed input, carrying the replies that
        came before it; the parser is then unusable.
        """
        self._buffer += data
        replies = []
        while self._buffer:
            try:
                reply, end = self._parse(0, 0)
            except _Incomplete:
                break
            except ProtocolError as e:
                e.replies = replies
                raise
            del self._buffer[:end]
            replies.append(reply)
        return replies

    @property
    def pending(self):
        """Bytes received that do not yet form a whole reply."""
        return len(self._buffer)

    def _line(self, pos):
        end = self._buffer.find(b"\r\n", pos, pos + MAX_LINE + 2)
        if end < 0:
            if len(self._buffer) - pos > MAX_LINE:
                raise ProtocolError("line too long")
            raise _Incomplete()
        return bytes(self._buffer[pos:end]), end + 2

    def _integer(self, line):
        if not _INTEGER.fullmatch(line):
            raise ProtocolError(f"bad integer {line[:40]!r}")
        return int(line)

    def _parse(self, pos, depth):
        if depth > MAX_DEPTH:
            raise ProtocolError("arrays nested too deep")
        if pos >= len(self._buffer):
            raise _Incomplete()
        kind = self._buffer[pos:pos + 1]
        line, pos = self._line(pos + 1)
        if kind == b"+":
            return line, pos
        if kind == b"-":
            return ErrorReply(line), pos
        if kind == b":":
            return self._integer(line), pos
        if kind == b"$":
            length = self._integer(line)
            if length == -1:
                return None, pos
            if not 0 <= length <= MAX_BULK:
                raise ProtocolError(f"bad bulk length {length}")
            end = pos + length
            if len(self._buffer) < end + 2:
                raise _Incomplete()
            if self._buffer[end:end + 2] != b"\r\n":
                raise ProtocolError("bulk string not terminated by CRLF")
            return bytes(self._buffer[pos:end]), end + 2
        if kind == b"*":
            count = self._integer(line)
            if count == -1:
                return None, pos
            if not 0 <= count <= MAX_ARRAY:
                raise ProtocolError(f"bad array length {count}")
            items = []
            for _ in range(count):
                item, pos = self._parse(pos, depth + 1)
                items.append(item)
            return items, pos
        raise ProtocolError(f"unknown reply type {bytes(kind)!r}")


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
