"""Log observers for twistd's ``--logger`` option.

    twistd --logger=redisrepl.logs.json -n redisrepl ...

writes one JSON object per line on standard output (for journald, Docker or
a log shipper). Fields stay fields: each of the event's fields under its
name (an error as ``{"type": "ReplicationError", "message": "...",
"side": "remote"}``, bytes as text, anything else JSON cannot carry as its
``str``), beside ``log_text`` (the message as the plain log shows it),
``log_format``, ``log_level``, ``log_namespace``, ``log_time`` and, for a
failure, ``log_failure`` (its traceback).
"""

import json as _json
import sys
from typing import Any

from twisted.logger import FileLogObserver, formatEvent


def field(value: Any) -> Any:
    """A log field as JSON can carry it: exceptions become their type and message."""
    if isinstance(value, BaseException):
        out = {"type": type(value).__name__, "message": str(value)}
        side = getattr(value, "side", None)
        if side is not None:
            out["side"] = side
        return out
    return value


def _unencodable(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    return str(value)


def event_as_json(event: dict) -> str:
    """One event as one line of JSON (see the module)."""
    out = {k: field(v) for k, v in event.items() if not k.startswith("log_") and k != "format"}
    out["log_text"] = formatEvent(event)
    out["log_format"] = event.get("log_format")
    level = event.get("log_level")
    out["log_level"] = getattr(level, "name", level)
    out["log_namespace"] = event.get("log_namespace")
    out["log_time"] = event.get("log_time")
    failure = event.get("log_failure")
    if failure is not None:
        out["log_failure"] = failure.getTraceback()
    return _json.dumps(out, default=_unencodable) + "\n"


def json() -> FileLogObserver:
    """One JSON object per line on standard output (an ``ILogObserver``)."""
    return FileLogObserver(sys.stdout, event_as_json)
