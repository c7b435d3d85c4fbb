"""How a Redis command is spelled for Webdis (pure; no I/O).

Webdis reads a command as ``CMD/arg1/arg2`` (in the URL path or a POST body):
``%XX`` is decoded, ``+`` turns into a space, ``/`` separates arguments, ``?``
starts a query string and a known suffix such as ``.raw`` on the last argument
picks the output format. Escaping every byte outside ``[A-Za-z0-9_:-]`` keeps
any argument, binary or not, byte-exact.
"""

import string
from collections.abc import Iterable, Sequence
from typing import Any

_SAFE = frozenset((string.ascii_letters + string.digits + "_-:").encode())
_SAFE_BYTES = bytes(sorted(_SAFE))
_ESCAPES = [bytes([b]) if b in _SAFE else b"%%%02X" % b for b in range(256)]
_escape_byte = _ESCAPES.__getitem__
#: Arguments this long with something to escape are escaped byte for
#: byte, in C: a little longer on the wire (3 bytes a byte), far cheaper
#: than choosing (54 ms a MB). One with nothing to escape goes as it is.
LONG_ARGUMENT = 64


def _as_bytes(arg: bytes | str | int) -> bytes:
    if isinstance(arg, str):
        return arg.encode("utf-8")
    if isinstance(arg, int):
        return b"%d" % arg
    return arg


def _escaped(arg: bytes) -> bytes:
    """``arg``, which has something to escape, escaped (every byte of a long one)."""
    if len(arg) >= LONG_ARGUMENT:
        return b"%" + arg.hex("%").encode("ascii")
    return b"".join(map(_escape_byte, arg))


def escape(arg: bytes | str | int) -> str:
    """Percent-escape one argument (bytes, str as UTF-8, int in decimal) for a Webdis path."""
    return command_bytes([arg], fmt=b"").decode("ascii")


def unescape(text: str | bytes) -> bytes:
    """Inverse of escape(), as Webdis decodes an argument (for tests and fakes)."""
    out = bytearray()
    data = text.encode("ascii") if isinstance(text, str) else text
    i = 0
    while i < len(data):
        c = data[i]
        if c == ord("%") and _ishex(data[i + 1 : i + 3]):
            out.append(int(data[i + 1 : i + 3], 16))
            i += 3
            continue
        out.append(ord(" ") if c == ord("+") else c)
        i += 1
    return bytes(out)


def _ishex(pair: bytes) -> bool:
    return len(pair) == 2 and all(chr(c) in string.hexdigits for c in pair)


#: Arguments looked at together for something to escape (a batch write
#: carries thousands, a few of which need escaping).
_TOGETHER = 32


def _joined(parts: Sequence[bytes]) -> bytes:
    """``parts`` escaped as needed, joined by slashes. Nothing to escape in
    a run of them (no byte left but the slashes between them) is found so
    in C at once; only the runs with something are looked at one by one."""
    if len(parts) > _TOGETHER:
        runs = []
        for at in range(0, len(parts), _TOGETHER):
            run = parts[at : at + _TOGETHER]
            path = b"/".join(run)
            runs.append(path if len(path.translate(None, _SAFE_BYTES)) == len(run) - 1 else _joined(run))
        return b"/".join(runs)
    return b"/".join([_escaped(a) if a.translate(None, _SAFE_BYTES) else a for a in parts])


def command_bytes(args: Iterable[bytes | str | int], db: int | None = None, fmt: bytes = b"raw") -> bytes:
    """``[db/]CMD/arg/...[.fmt]`` for the given command, without a leading
    slash, as the bytes of a request.

    The format suffix goes on the last argument, where Webdis looks for it;
    an escaped dot (``%2E``) is never taken for one. (On the path of every
    write: a command with nothing to escape is found so in C and taken as it
    is, whatever the length of its arguments; else runs of arguments with
    nothing to escape are, and the others are escaped one by one.)
    """
    given: Sequence[Any] = args if isinstance(args, list | tuple) else list(args)
    try:
        path = b"/".join(given)
        parts: Sequence[bytes] = given
    except TypeError:  # not all bytes
        parts = [_as_bytes(arg) for arg in given]
        path = b"/".join(parts)
    if len(path.translate(None, _SAFE_BYTES)) != len(parts) - 1:
        path = _joined(parts)
    if db is not None:
        path = b"%d/" % int(db) + path
    if fmt:
        path += b"." + fmt
    return path


def command_path(args: Iterable[bytes | str | int], db: int | None = None, fmt: str | None = "raw") -> str:
    """command_bytes() as text."""
    return command_bytes(args, db, fmt.encode("ascii") if fmt else b"").decode("ascii")


def prefix_pattern(prefix: bytes | str) -> bytes:
    """A glob (for PSUBSCRIBE or SCAN MATCH) matching every string that starts
    with ``prefix``: its glob characters are escaped so they match themselves."""
    if isinstance(prefix, str):
        prefix = prefix.encode("utf-8")
    escaped = bytearray()
    for b in prefix:
        if b in b"*?[]\\":
            escaped += b"\\"
        escaped.append(b)
    return bytes(escaped) + b"*"


def keyspace_pattern(db: int, namespace: bytes | str) -> bytes:
    """The keyspace-notification pattern for every key starting with ``namespace``."""
    return b"__keyspace@%d__:" % db + prefix_pattern(namespace)


_KEYSPACE_PREFIXES: dict[int, bytes] = {}


def keyspace_key(channel: bytes, db: int) -> bytes | None:
    """The key named by a keyspace channel, or None if it is not one for ``db``."""
    prefix = _KEYSPACE_PREFIXES.get(db)
    if prefix is None:  # once per database: this runs for every event
        prefix = _KEYSPACE_PREFIXES[db] = b"__keyspace@%d__:" % db
    if not channel.startswith(prefix):
        return None
    return channel[len(prefix) :]
