"""``redisrepl status``: a live view of a running daemon, from its /metrics
(like ``redis-cli --stat``): one line per interval, with the rates of the
interval and the state at its end.

    redisrepl status --metrics 127.0.0.1:9108 [--interval 1] [--count N]

Columns: events/s from each side, keys written/s to each side, keys
waiting, how far behind each direction is (the age of its oldest change
not yet copied), batches in flight and the window, request failures/s,
and the state of the event streams. Exit status: 0, or 1 if the daemon's
/metrics cannot be read (started without ``--metrics``? not running?).
"""

import argparse
import sys
import time
import urllib.error
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

HEADER = (
    f"{'time':8} {'events/s L':>10} {'events/s R':>10} {'writes/s L':>10} {'writes/s R':>10} "
    f"{'waiting':>8} {'lag L s':>8} {'lag R s':>8} {'batches':>9} {'fail/s':>7}  streams"
)


def samples(text):
    """{(name, (label values sorted by label)): value} of a Prometheus text page."""
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return out


def _get(values, name, **labels):
    return values.get((name, tuple(sorted(labels.items()))), 0.0)


def _sum(values, name):
    return sum(v for (n, _), v in values.items() if n == name)


def line(before, after, seconds, now=None):
    """One line of the view: rates between two scrapes ``seconds`` apart, state at ``after``."""

    def rate(name, **labels):
        return (_get(after, name, **labels) - _get(before, name, **labels)) / seconds

    fails = (
        _sum(after, "redisrepl_request_failures_total") - _sum(before, "redisrepl_request_failures_total")
    ) / seconds
    streams = " ".join(
        f"{side}:{'up' if _get(after, 'redisrepl_stream_up', side=side) else 'DOWN'}"
        for side in ("local", "remote")
        if ("redisrepl_stream_up", (("side", side),)) in after
    )
    stamp = time.strftime("%H:%M:%S", time.localtime(now))
    batches = f"{_get(after, 'redisrepl_batches_in_flight'):.0f}/{_get(after, 'redisrepl_window_batches'):.0f}"
    return (
        f"{stamp:8} {rate('redisrepl_events_total', side='local'):10.0f} "
        f"{rate('redisrepl_events_total', side='remote'):10.0f} "
        f"{rate('redisrepl_keys_written_total', side='local'):10.0f} "
        f"{rate('redisrepl_keys_written_total', side='remote'):10.0f} "
        f"{_get(after, 'redisrepl_backlog_keys'):8.0f} "
        f"{_get(after, 'redisrepl_oldest_change_age_seconds', side='local'):8.1f} "
        f"{_get(after, 'redisrepl_oldest_change_age_seconds', side='remote'):8.1f} "
        f"{batches:>9} {fails:7.1f}  {streams}"
    )


def scrape(url):
    with urllib.request.urlopen(url, timeout=5) as reply:
        return samples(reply.read().decode("utf-8"))


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="redisrepl status", description="A live view of a running redisrepl, from its /metrics."
    )
    parser.add_argument("--metrics", required=True, help="[HOST:]PORT of the daemon's --metrics (host: 127.0.0.1)")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between lines (default 1)")
    parser.add_argument("--count", type=int, default=0, help="lines to print, then exit (default: until ^C)")
    args = parser.parse_args(argv)
    if args.interval <= 0:
        parser.error("--interval must be more than 0")
    host, _, port = args.metrics.rpartition(":")
    url = f"http://{host.strip('[]') or '127.0.0.1'}:{port}/metrics"
    try:
        before, t0 = scrape(url), time.monotonic()
        print(HEADER, flush=True)
        printed = 0
        while not args.count or printed < args.count:
            time.sleep(args.interval)  # the view's own pace
            after, t1 = scrape(url), time.monotonic()
            print(line(before, after, t1 - t0), flush=True)
            before, t0, printed = after, t1, printed + 1
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        print(
            f"redisrepl status: cannot read {url}: {reason} (is the daemon running, with --metrics?)", file=sys.stderr
        )
        return 1
    except KeyboardInterrupt:
        return 0
    return 0
