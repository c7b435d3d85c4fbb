"""How a Redis command is spelled for Webdis (pure; no I/O).

Webdis reads a command as ``CMD/arg1/arg2`` (in the URL path or a POST body):
``%XX`` is decoded, ``+`` turns into a space, ``/`` separates arguments, ``?``
starts a query string and a known suffix such as ``.raw`` on the last argument
picks the output format. Escaping every byte outside ``[A-Za-z0-9_-]`` keeps
any argument, binary or not, byte-exact.
"""

import string
from collections.abc import Iterable

_SAFE = frozenset((string.ascii_letters + string.digits + "_-").encode())
_SAFE_BYTES = bytes(sorted(_SAFE))
_ESCAPES = [chr(b) if b in _SAFE else "%%%02X" % b for b in range(256)]
#: Arguments this long are escaped byte for byte, in C: a little longer
#: on the wire (3 bytes a byte), far cheaper than choosing (54 ms a MB).
LONG_ARGUMENT = 64


def escape(arg: bytes | str | int) -> str:
    """Percent-escape one argument (bytes or str) for a Webdis path."""
    if isinstance(arg, str):
        arg = arg.encode("utf-8")
    elif isinstance(arg, int):
        arg = b"%d" % arg
    if len(arg) >= LONG_ARGUMENT:
        return "%" + arg.hex("%")
    if not arg.translate(None, _SAFE_BYTES):
        return arg.decode("ascii")  # nothing to escape (found in C)
    return "".join(map(_ESCAPES.__getitem__, arg))


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


def command_path(args: Iterable[bytes | str | int], db: int | None = None, fmt: str = "raw") -> str:
    """``[db/]CMD/arg/...[.fmt]`` for the given command, without a leading slash.

    The format suffix goes on the last argument, where Webdis looks for it;
    an escaped dot (``%2E``) is never taken for one.
    """
    parts = [escape(a) for a in args]
    if db is not None:
        parts.insert(0, str(int(db)))
    path = "/".join(parts)
    if fmt:
        path += "." + fmt
    return path


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
