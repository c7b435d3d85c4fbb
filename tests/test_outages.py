"""The log of an outage (redisrepl.outages) on a task.Clock: a line when it
starts, when its cause changes, a summary a minute, a line when it ends;
each retry only at debug."""

from twisted.internet.task import Clock
from twisted.logger import Logger, LogLevel, formatEvent

from redisrepl.outages import Outage


def outage(summary_every=60.0):
    clock, seen = Clock(), []
    log = Logger(namespace="redisrepl.test", observer=seen.append)
    return clock, Outage(clock, log, "copies", summary_every), seen


def lines(seen, least=LogLevel.info):
    return [formatEvent(e) for e in seen if e["log_level"] >= least]


def test_an_hour_of_retries_says_a_line_a_minute_not_a_line_a_retry():
    clock, o, seen = outage()
    for _ in range(720):  # every 5 s for an hour
        o.failed(ConnectionRefusedError("connection refused"), retry_in=5.0)
        clock.advance(5)
    said = lines(seen)
    assert said[0] == "copies: connection refused; retrying with backoff"
    assert 55 <= len(said) <= 62
    assert all("still failing since" in line for line in said[1:])
    assert said[-1].endswith("retries): connection refused")
    assert len([e for e in seen if e["log_level"] == LogLevel.debug]) == 720  # each retry, at debug
    o.recovered()
    assert lines(seen)[-1] == "copies: back after 3600.0s (719 retries)"


def test_a_new_cause_is_said_at_once_and_a_recovery_ends_the_outage():
    clock, o, seen = outage()
    o.recovered()  # nothing had failed: nothing to say
    assert seen == []
    o.failed("connection refused")
    clock.advance(1)
    o.failed("HTTP 502 from the proxy")
    clock.advance(1)
    o.recovered()
    o.failed("timeout")  # a new outage
    assert lines(seen) == [
        "copies: connection refused; retrying with backoff",
        "copies: still failing, now: HTTP 502 from the proxy",
        "copies: back after 2.0s (1 retries)",
        "copies: timeout; retrying with backoff",
    ]
