"""Log observers for twistd's ``--logger`` option.

    twistd --logger=redisrepl.logs.rotated redisrepl ...

writes twistd's usual text lines to the file named by $REDISREPL_LOGFILE,
rotated at 10 MB and keeping $REDISREPL_LOG_FILES (10) old files: the disk
it takes is bounded (twistd's own ``--logfile`` rotates at 1 MB and keeps
every old file). contrib/redisrepl.init uses it.

    twistd --logger=redisrepl.logs.journal -n redisrepl ...

writes the text lines for systemd's journal on standard output: no
timestamp (the journal adds its own), the logger's name, and each line
prefixed with its syslog priority (``<4>`` a warning, ``<3>`` an error:
sd-daemon(3)), so that ``journalctl -p warning`` finds the warnings.
contrib/redisrepl.service uses it.

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
import os
import sys
from collections.abc import Mapping
from typing import Any

from twisted.logger import (
    FileLogObserver,
    FilteringLogObserver,
    Logger,
    LogLevel,
    LogLevelFilterPredicate,
    formatEvent,
    globalLogPublisher,
    textFileLogObserver,
)
from twisted.python.logfile import LogFile


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


#: Where ``rotated`` writes, and how many old files it keeps (twistd calls a
#: --logger factory without arguments: they come from the environment).
LOGFILE_ENV = "REDISREPL_LOGFILE"
LOG_FILES_ENV = "REDISREPL_LOG_FILES"
#: The size at which ``rotated`` starts a new file.
LOG_BYTES = 10_000_000


def rotated() -> FileLogObserver:
    """Text lines to $REDISREPL_LOGFILE, rotated at LOG_BYTES, keeping
    $REDISREPL_LOG_FILES old files (default 10; see the module)."""
    path = os.environ.get(LOGFILE_ENV)
    if not path:
        raise SystemExit(f"redisrepl: error: --logger=redisrepl.logs.rotated needs ${LOGFILE_ENV} (the log file)")
    keep = os.environ.get(LOG_FILES_ENV, "10")
    if not keep.isdigit() or int(keep) < 1:
        raise SystemExit(
            f"redisrepl: error: ${LOG_FILES_ENV} must be a whole number of files (1 or more), not {keep!r}"
        )
    logfile = LogFile.fromFullPath(path, rotateLength=LOG_BYTES, maxRotatedFiles=int(keep))
    return textFileLogObserver(logfile)


#: syslog priorities of twisted.logger's levels (sd-daemon(3) prefixes).
PRIORITIES = {LogLevel.debug: 7, LogLevel.info: 6, LogLevel.warn: 4, LogLevel.error: 3, LogLevel.critical: 2}


def journal_line(event: dict) -> str:
    """One event as journald takes it: every line of it prefixed with its
    priority, ``[namespace] text``, no timestamp."""
    text = formatEvent(event)
    failure = event.get("log_failure")
    if failure is not None:
        text = f"{text}\n{failure.getTraceback()}"
    prefix = f"<{PRIORITIES.get(event.get('log_level'), 6)}>[{event.get('log_namespace', '-')}] "
    return "".join(prefix + line + "\n" for line in text.splitlines() or [""])


def journal() -> FileLogObserver:
    """Text lines for systemd's journal on standard output (an ``ILogObserver``)."""
    return FileLogObserver(sys.stdout, journal_line)


def json() -> FileLogObserver:
    """One JSON object per line on standard output (an ``ILogObserver``)."""
    return FileLogObserver(sys.stdout, event_as_json)


def command_lines(out: Any = None) -> Any:
    """For the one-shot commands (``redisrepl reconcile --dry-run``): plain
    lines on stderr of redisrepl's info and above, and of anything else
    only warnings and above (not the reactor's own comings and goings)."""
    text = FileLogObserver(out or sys.stderr, lambda event: f"{formatEvent(event)}\n")

    def observe(event: dict) -> None:
        level = event.get("log_level", LogLevel.info)
        if level >= LogLevel.warn or str(event.get("log_namespace", "")).startswith("redisrepl"):
            text(event)

    return observe


def keep_from(level: str, publisher: Any = globalLogPublisher, modules: Mapping[str, Any] | None = None) -> int:
    """Drop redisrepl's log lines below ``level`` (``--log-level``: debug,
    info, warn, error, critical) before they reach ``publisher``: the
    ``log`` of every loaded module of redisrepl (``modules``, default
    ``sys.modules``) emits through a filter. Returns how many loggers."""
    least = LogLevel.levelWithName(level)
    predicate: Any = LogLevelFilterPredicate(defaultLogLevel=least)
    filtered: Any = FilteringLogObserver(publisher, [predicate])
    # the levels below: their calls do nothing at all (a line per key of a
    # large reconcile would otherwise build its event only to be dropped)
    silenced = [name for name in LEVEL_METHODS if LogLevel.levelWithName(name) < least]
    count = 0
    for name, module in list((sys.modules if modules is None else modules).items()):
        if name == "redisrepl" or name.startswith("redisrepl."):
            log = getattr(module, "log", None)
            if isinstance(log, Logger):
                log.observer = filtered
                for method in silenced:
                    setattr(log, method, _dropped)
                count += 1
    return count


#: Logger's methods by level name, least severe first.
LEVEL_METHODS = ("debug", "info", "warn", "error", "critical")


def _dropped(*args: Any, **kwargs: Any) -> None:
    """A log call below the level in force."""
