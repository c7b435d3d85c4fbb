"""Running it as a service: metrics and health, scraped from a real daemon
while it replicates and while the hub goes away."""

import re
import subprocess
import sys

import pytest

from redisrepl.sandbox import free_port
from tests.harness import ROOT, get, metric, scrape, wait_until

SLOW = 30.0


@pytest.fixture
def metrics_port():
    return free_port()


def test_metrics_follow_a_real_replication_run(daemons, metrics_port):
    lab = daemons
    lab.daemon("mx:", rc=True, extra=["--metrics", str(metrics_port), "--heartbeat", "0.5"])
    before = scrape(metrics_port)
    assert metric(before, "redisrepl_stream_up", side="local") == 1
    # failure series exist before any failure (at 0), for rate() alerts
    assert 'redisrepl_request_failures_total{kind="connection_refused",side="remote"} 0.0' in before
    pipe = lab.local.pipeline(transaction=False)
    for i in range(50):
        pipe.set(f"mx:{i}", "v")
    pipe.execute()
    wait_until(lambda: lab.remote.exists(*[f"mx:{i}" for i in range(50)]) == 50)
    lab.remote.hset("mx:back", "f", "v")
    wait_until(lambda: lab.local.hget("mx:back", "f") == b"v")

    def moved():
        text = scrape(metrics_port)
        return (
            metric(text, "redisrepl_keys_written_total", side="remote") >= 50
            and metric(text, "redisrepl_keys_written_total", side="local") >= 1
            and metric(text, "redisrepl_echoes_suppressed_total", side="remote") >= 1
            and metric(text, "redisrepl_echoes_suppressed_total", side="local") >= 1
        ) and text

    text = wait_until(moved, what="counters to move")
    assert metric(text, "redisrepl_events_total", side="local") >= 50
    assert metric(text, "redisrepl_events_total", side="remote") >= 1
    assert 1 <= metric(text, "redisrepl_write_requests_total", side="remote") <= 50
    # 50 keys of 4-5 bytes with 1-byte values, at least; a few bytes of framing each, at most
    assert 50 * 5 <= metric(text, "redisrepl_bytes_written_total", side="remote") <= 50 * 50
    assert metric(text, "redisrepl_backlog_high_water_keys") >= 1
    assert 4 <= metric(text, "redisrepl_window_batches") <= 32  # --concurrency .. --max-concurrency
    assert 0 <= metric(text, "redisrepl_batches_in_flight") <= metric(text, "redisrepl_window_batches")
    assert metric(text, "redisrepl_last_write_timestamp_seconds", side="remote") > 1e9
    wait_until(lambda: metric(scrape(metrics_port), "redisrepl_heartbeat_rtt_seconds") > 0)
    wait_until(lambda: metric(scrape(metrics_port), "redisrepl_backlog_keys") == 0)
    # once nothing waits, neither direction is behind
    text = wait_until(
        lambda: (
            (t := scrape(metrics_port)) and metric(t, "redisrepl_reconcile_last_success_timestamp_seconds") > 1e9 and t
        ),
        what="the start-up reconcile to end",
    )
    assert 'redisrepl_oldest_change_age_seconds{side="local"} 0.0' in text
    assert 'redisrepl_oldest_change_age_seconds{side="remote"} 0.0' in text
    assert 'redisrepl_waiting_changes{side="local"} 0.0' in text
    assert metric(text, "process_resident_memory_bytes") > 1e6
    assert 'redisrepl_build_info{python="' in text and "} 1.0" in text


def test_the_lag_of_a_direction_grows_while_its_side_is_down(daemons, metrics_port):
    lab = daemons
    lab.daemon("lg:", rc=False, extra=["--metrics", str(metrics_port)])
    lab.sandbox.stop_component("nginx")
    try:
        lab.local.set("lg:waiting", "1")
        wait_until(
            lambda: metric(scrape(metrics_port), "redisrepl_oldest_change_age_seconds", side="local") >= 1.0,
            SLOW,
            what="the local direction's lag to grow",
        )
        text = scrape(metrics_port)
        assert 'redisrepl_oldest_change_age_seconds{side="remote"} 0.0' in text
        assert metric(text, "redisrepl_waiting_changes", side="local") >= 1
    finally:
        lab.sandbox.start_component("nginx")
    wait_until(lambda: lab.remote.get("lg:waiting") == b"1", SLOW)
    wait_until(lambda: metric(scrape(metrics_port), "redisrepl_oldest_change_age_seconds", side="local") == 0)


@pytest.mark.parametrize("rc", [True, False], ids=["two-way", "one-way"])
def test_health_follows_the_proxy(daemons, metrics_port, rc):
    lab = daemons
    lab.daemon("hz:", rc=rc, extra=["--metrics", str(metrics_port), "--heartbeat", "0.5"])
    wait_until(lambda: get(metrics_port, "/healthz") == (200, "ok\n"), SLOW, what="healthy")
    lab.sandbox.stop_component("nginx")
    try:
        status, body = wait_until(
            lambda: (r := get(metrics_port, "/healthz"))[0] == 503 and r, SLOW, what="unhealthy while the proxy is down"
        )
        assert ("stream" in body) if rc else ("refused" in body)
        # a change made meanwhile fails, and the failure is counted by kind
        lab.local.set("hz:during", "1")
        wait_until(
            lambda: (
                metric(
                    scrape(metrics_port), "redisrepl_request_failures_total", side="remote", kind="connection_refused"
                )
                >= 1
            )
        )
    finally:
        lab.sandbox.start_component("nginx")
    wait_until(lambda: get(metrics_port, "/healthz") == (200, "ok\n"), SLOW, what="healthy again")
    wait_until(lambda: lab.remote.get("hz:during") == b"1", SLOW)


def test_redisrepl_run_is_the_service_and_status_views_it_live(daemons, metrics_port):
    """``redisrepl run`` (here ``python -m redisrepl run``) with the options of
    ``twistd redisrepl``; ``redisrepl status`` prints a line per interval."""
    lab = daemons
    args = lab.sandbox.daemon_args("rr:", rc=True, extra=["--metrics", str(metrics_port)])
    run = [sys.executable, "-m", "redisrepl", "run", *args[args.index("redisrepl") + 1 :]]
    lab.daemon("rr:", args=run, rc=True)
    lab.local.set("rr:k", "v")
    wait_until(lambda: lab.remote.get("rr:k") == b"v")
    status = subprocess.run(
        [
            sys.executable,
            "-m",
            "redisrepl",
            "status",
            "--metrics",
            str(metrics_port),
            "--interval",
            "0.2",
            "--count",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert status.returncode == 0, status.stderr
    header, *lines = status.stdout.splitlines()
    assert "events/s L" in header and "lag R s" in header and len(lines) == 2
    assert all("local:up remote:up" in line for line in lines), status.stdout
    assert all(re.search(r" \d+/\d+ ", line) for line in lines)  # batches in flight / window


def test_redisrepl_without_a_command_or_a_daemon_says_so():
    usage = subprocess.run([sys.executable, "-m", "redisrepl"], capture_output=True, text=True, cwd=ROOT)
    assert usage.returncode == 2 and "{run|verify|status|reconcile}" in usage.stderr
    nobody = subprocess.run(
        [sys.executable, "-m", "redisrepl", "status", "--metrics", str(free_port()), "--count", "1"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert nobody.returncode == 1
    assert "cannot read http://127.0.0.1:" in nobody.stderr and "with --metrics?" in nobody.stderr


def test_sigterm_during_a_burst_leaves_nothing_half_written(daemons):
    lab = daemons
    d = lab.daemon("tb:", rc=False)
    pipe = lab.local.pipeline(transaction=False)
    for i in range(5000):
        pipe.hset(f"tb:{i}", mapping={"a": i, "b": i, "c": i})
    pipe.execute()
    wait_until(lambda: lab.remote.exists("tb:0"), what="the burst to start arriving")
    assert d.stop() in (0, -15)  # twistd re-raises SIGTERM after a clean stop
    log = d.log()
    assert "Main loop terminated" in log, log
    assert "Traceback" not in log, log
    copied = 0
    for i in range(5000):
        value = lab.remote.hgetall(f"tb:{i}")
        if value:
            copied += 1
            assert value == {b"a": b"%d" % i, b"b": b"%d" % i, b"c": b"%d" % i}
    assert copied >= 1


def test_the_daemon_collects_cycles_rarely_and_leaves_its_start_up_objects_out():
    import gc

    from redisrepl import tap

    before = gc.get_threshold()
    try:
        tap.tune_gc()
        assert gc.get_threshold() == (tap.GC_THRESHOLD, *before[1:])
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
