"""The JSON log observer keeps fields as fields."""

import io
import json

import pytest
from twisted.logger import FileLogObserver, Logger, LogPublisher

from redisrepl import logs
from redisrepl.errors import ReplicationError


def emit(**kwargs):
    out = io.StringIO()
    log = Logger(observer=LogPublisher(FileLogObserver(out, logs.event_as_json)), namespace="redisrepl.test")
    return log, out, kwargs


def lines(out):
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_an_error_is_its_type_message_and_side_and_the_text_is_the_plain_message():
    log, out, _ = emit()
    log.warn(
        "check of the {side} side failed: {error}", side="remote", error=ReplicationError("no answer", side="remote")
    )
    [event] = lines(out)
    assert event["error"] == {"type": "ReplicationError", "message": "no answer", "side": "remote"}
    assert event["side"] == "remote"
    assert event["log_text"] == "check of the remote side failed: no answer"
    assert event["log_format"] == "check of the {side} side failed: {error}"
    assert event["log_level"] == "warn" and event["log_namespace"] == "redisrepl.test"
    assert isinstance(event["log_time"], float)


def test_numbers_stay_numbers_bytes_become_text_and_other_objects_their_str():
    log, out, _ = emit()
    log.info("{n} keys, {key}, {thing}", n=3, key=b"a\xff", thing=object)
    [event] = lines(out)
    assert event["n"] == 3
    assert event["key"] == "a\\xff"
    assert event["thing"] == str(object)


def test_a_failure_carries_its_traceback():
    log, out, _ = emit()
    try:
        {}["missing"]
    except KeyError:
        log.failure("while copying {key}", key="k")
    [event] = lines(out)
    assert event["log_level"] == "critical"
    assert "KeyError" in event["log_failure"] and "missing" in event["log_failure"]
    assert event["log_text"] == "while copying k"


def test_keep_from_drops_redisrepls_lines_below_the_level():
    import types

    seen = []
    module = types.ModuleType("redisrepl.example")
    module.log = Logger(namespace="redisrepl.example")
    other = types.ModuleType("somebody.else")
    other.log = Logger(namespace="somebody.else")
    publisher = LogPublisher(seen.append)
    count = logs.keep_from("info", publisher, {"redisrepl.example": module, "somebody.else": other})
    assert count == 1
    module.log.debug("a line per key {key}", key="k")
    module.log.info("a run done")
    module.log.error("a failure")
    assert [e["log_format"] for e in seen] == ["a run done", "a failure"]
    assert other.log.observer is not publisher  # not redisrepl's: left alone
    # below the level, a call builds no event at all
    module.log.emit = lambda *a, **k: seen.append("emitted")
    module.log.debug("a line per key {key}", key="k")
    assert seen[-1] != "emitted"
    module.log.warn("still kept")
    assert seen[-1] == "emitted"


def test_the_rotated_log_keeps_a_bounded_number_of_files(tmp_path, monkeypatch):
    path = tmp_path / "redisrepl.log"
    monkeypatch.setenv(logs.LOGFILE_ENV, str(path))
    monkeypatch.setenv(logs.LOG_FILES_ENV, "3")
    monkeypatch.setattr(logs, "LOG_BYTES", 300)
    observer = logs.rotated()
    log = Logger(namespace="redisrepl.example", observer=observer)
    for i in range(100):
        log.info("line {i} of a long outage", i=i)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["redisrepl.log", "redisrepl.log.1", "redisrepl.log.2", "redisrepl.log.3"]
    assert "line 99 of a long outage" in path.read_text()


@pytest.mark.parametrize("env, expect", [({}, "REDISREPL_LOGFILE"), ({"REDISREPL_LOG_FILES": "0"}, "must be")])
def test_the_rotated_log_says_what_it_misses(monkeypatch, tmp_path, env, expect):
    monkeypatch.delenv(logs.LOGFILE_ENV, raising=False)
    if env:
        monkeypatch.setenv(logs.LOGFILE_ENV, str(tmp_path / "x.log"))
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as e:
        logs.rotated()
    assert expect in str(e.value)


def test_journal_lines_carry_their_priority_and_no_timestamp():
    out = io.StringIO()
    log = Logger(namespace="redisrepl.example", observer=FileLogObserver(out, logs.journal_line))
    log.warn("copies, remote side: {cause}; retrying with backoff", cause="connection refused")
    log.info("back")
    try:
        raise ValueError("boom")
    except ValueError:
        log.failure("unexpected")
    lines = out.getvalue().splitlines()
    assert lines[0] == "<4>[redisrepl.example] copies, remote side: connection refused; retrying with backoff"
    assert lines[1] == "<6>[redisrepl.example] back"
    assert lines[2] == "<2>[redisrepl.example] unexpected"
    assert len(lines) > 4 and all(line.startswith("<2>[redisrepl.example] ") for line in lines[2:])
    assert "ValueError: boom" in out.getvalue()


def test_a_commands_lines_are_redisrepls_and_others_warnings_only():
    out = io.StringIO()
    observer = logs.command_lines(out)
    Logger(namespace="redisrepl.walk", observer=observer).info("reconcile: {n} keys scanned", n=50000)
    Logger(namespace="twisted.internet.base", observer=observer).info("Main loop terminated.")
    Logger(namespace="txredisapi", observer=observer).warn("connection lost")
    assert out.getvalue().splitlines() == ["reconcile: 50000 keys scanned", "connection lost"]
