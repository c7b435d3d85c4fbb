#!/usr/bin/env python3
"""A picture of contrib/grafana-dashboard.json, drawn from real data.

    ./dev.sh dashboard [--minutes 4] [--out docs/dashboard.svg]

Starts the sandbox (local Redis, hub Redis, Webdis, nginx with mTLS), a
two-way daemon with ``--metrics``, and Prometheus (the binary of Debian's
prometheus package, unpacked into .cache/promtool as for promtool) scraping
it every second. It then plays a few minutes of what a site goes through: a
steady trickle both ways, a burst, the hub's proxy down for a while, the hub
losing its data. At the end it asks Prometheus for every query of the
dashboard (its variables filled in as Grafana would) and draws each panel
where the dashboard places it, into one SVG: Grafana itself is not needed.
"""

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from html import escape

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DASHBOARD = os.path.join(ROOT, "contrib", "grafana-dashboard.json")

#: Grafana's dark theme, near enough.
BACKGROUND, PANEL, BORDER, TEXT, DIM = "#111217", "#181b1f", "#2c3235", "#ccccdc", "#8e8e9e"
COLOURS = ["#73bf69", "#f2cc0c", "#8ab8ff", "#ff780a", "#f2495c", "#5794f2", "#b877d9", "#96d98d"]
#: Pixels per grid column (24 across) and per grid row.
COLUMN, ROW = 50, 30
HEADER = 44


# -- drawing (pure) -----------------------------------------------------------------


def si(value):
    for factor, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(value) >= factor:
            return f"{value / factor:.3g}{suffix}"
    return f"{value:.3g}"


def binary(value):
    for factor, suffix in ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if abs(value) >= factor:
            return f"{value / factor:.3g} {suffix}"
    return f"{value:.3g} B"


def seconds(value):
    if value == 0:
        return "0"
    if abs(value) < 1:
        return f"{value * 1000:.3g} ms"
    return f"{value:.3g} s"


#: How each of the dashboard's units is written on an axis.
UNITS = {
    "ops": lambda v: si(v) + "/s",
    "s": seconds,
    "short": si,
    "percentunit": lambda v: f"{v * 100:.3g}%",
    "bytes": binary,
    "Bps": lambda v: binary(v) + "/s",
}


def nice_top(value):
    """The smallest 1, 2, 2.5 or 5 times a power of ten at or above ``value``."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * power:
            return step * power
    return 10 * power


def legend(form, labels):
    """A series' name: the target's legend with ``{{label}}`` filled in."""
    out = form or ""
    for name, value in labels.items():
        out = out.replace("{{" + name + "}}", value)
    return out.replace("{{", "").replace("}}", "") or "value"


def segments(points, step):
    """The runs of ``points`` (time, value) without a gap longer than 1.5 steps."""
    run, last = [], None
    for t, v in points:
        if not math.isfinite(v) or (last is not None and t - last > 1.5 * step):
            if run:
                yield run
            run = []
        if math.isfinite(v):
            run.append((t, v))
        last = t
    if run:
        yield run


def panel_svg(panel, series, start, end, step):
    """One panel: its box, title, axes, a line per series and its legend.
    ``series``: [(name, [(t, v), ...])]."""
    grid = panel["gridPos"]
    x0, y0 = grid["x"] * COLUMN + 4, HEADER + grid["y"] * ROW + 4
    width, height = grid["w"] * COLUMN - 8, grid["h"] * ROW - 8
    fmt = UNITS.get(panel.get("fieldConfig", {}).get("defaults", {}).get("unit", "short"), si)
    left, top, right, bottom = x0 + 70, y0 + 30, x0 + width - 12, y0 + height - 40
    out = [
        f'<rect x="{x0}" y="{y0}" width="{width}" height="{height}" rx="3" fill="{PANEL}" stroke="{BORDER}"/>',
        f'<text x="{x0 + 10}" y="{y0 + 19}" fill="{TEXT}" font-size="13" font-weight="500">'
        f"{escape(panel['title'])}</text>",
    ]
    if len(series) > 4:
        # as Grafana's "hide series with only zeros": a panel of many
        # labelled counters (every failure kind is there from the start)
        series = [(name, points) for name, points in series if any(v for _, v in points if math.isfinite(v))]
    values = [v for _, points in series for _, v in points if math.isfinite(v)]
    top_value = nice_top(max(values, default=0) * 1.05)
    for i in range(5):
        y = bottom - (bottom - top) * i / 4
        out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{right}" y2="{y:.1f}" stroke="{BORDER}"/>')
        out.append(
            f'<text x="{left - 6}" y="{y + 4:.1f}" fill="{DIM}" font-size="11" text-anchor="end">'
            f"{escape(fmt(top_value * i / 4))}</text>"
        )
    span = max(end - start, 1e-9)
    for i in range(6):
        t = start + span * i / 5
        x = left + (right - left) * i / 5
        anchor = "end" if i == 5 else "middle"
        out.append(
            f'<text x="{x:.1f}" y="{bottom + 15}" fill="{DIM}" font-size="11" text-anchor="{anchor}">'
            f"{time.strftime('%H:%M:%S', time.gmtime(t))}</text>"
        )

    def at(t, v):
        return f"{left + (right - left) * (t - start) / span:.1f},{bottom - (bottom - top) * v / top_value:.1f}"

    lx = left
    for n, (name, points) in enumerate(series):
        colour = COLOURS[n % len(COLOURS)]
        for run in segments(points, step):
            if len(run) == 1:
                run = run * 2
            out.append(
                f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" '
                f'points="{" ".join(at(t, v) for t, v in run)}"/>'
            )
        out.append(f'<rect x="{lx}" y="{bottom + 24}" width="12" height="4" fill="{colour}"/>')
        out.append(f'<text x="{lx + 16}" y="{bottom + 30}" fill="{TEXT}" font-size="11">{escape(name)}</text>')
        lx += 24 + 7 * len(name)
    if not series:
        out.append(
            f'<text x="{(left + right) / 2}" y="{(top + bottom) / 2}" fill="{DIM}" font-size="12" '
            'text-anchor="middle">No data</text>'
        )
    return out


def render(dashboard, results, start, end, step, subtitle=""):
    """The dashboard as one SVG document; ``results[i]``: the series of
    panel ``i`` as ``[(name, [(t, v), ...])]``."""
    panels = dashboard["panels"]
    width = 24 * COLUMN
    height = HEADER + max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels) * ROW + 4
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="Inter, Helvetica, Arial, sans-serif">',
        f'<rect width="{width}" height="{height}" fill="{BACKGROUND}"/>',
        f'<text x="10" y="27" fill="{TEXT}" font-size="17" font-weight="500">{escape(dashboard["title"])}</text>',
        f'<text x="{width - 10}" y="27" fill="{DIM}" font-size="12" text-anchor="end">{escape(subtitle)}</text>',
    ]
    for panel, series in zip(panels, results):
        out += panel_svg(panel, series, start, end, step)
    out.append("</svg>")
    return "\n".join(out) + "\n"


def filled(expr, rate_interval="10s"):
    """A dashboard query as Prometheus runs it once Grafana filled in its variables."""
    return expr.replace("$__rate_interval", rate_interval).replace("$instance", ".*")


# -- the run ------------------------------------------------------------------------


def prometheus_binary():
    found = shutil.which("prometheus")
    cached = os.path.join(ROOT, ".cache", "promtool", "usr", "bin", "prometheus")
    if found or os.path.exists(cached):
        return found or cached
    raise SystemExit("dashboard: no prometheus binary (./dev.sh dashboard fetches it)")


def query_range(port, expr, start, end, step):
    query = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": step})
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/query_range?{query}", timeout=30) as reply:
        body = json.load(reply)
    if body.get("status") != "success":
        raise RuntimeError(f"{expr}: {body}")
    return body["data"]["result"]


def panel_series(port, panel, start, end, step):
    series = []
    for target in panel["targets"]:
        for result in query_range(port, filled(target["expr"]), start, end, step):
            points = [(float(t), float(v)) for t, v in result["values"]]
            series.append((legend(target.get("legendFormat"), result["metric"]), points))
    return series


def wait(predicate, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError("timed out")
        time.sleep(0.1)


def ready(url):
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except OSError:
        return False


def trickle(r, ns, rate, stop):
    """``rate`` SETs a second over 500 keys until ``stop`` is set."""
    i = 0
    while not stop.is_set():
        r.set(f"{ns}{i % 500}", f"{time.time():.3f}")
        i += 1
        stop.wait(1 / rate)


def play(sandbox, local, remote, ns, minutes):
    """What the picture shows, in that order (times relative to the start)."""
    stop = threading.Event()
    writers = [
        threading.Thread(target=trickle, args=(local, ns + "here:", 100, stop), daemon=True),
        threading.Thread(target=trickle, args=(remote, ns + "there:", 30, stop), daemon=True),
    ]
    for writer in writers:
        writer.start()
    phase = minutes * 60 / 7
    try:
        time.sleep(phase)
        pipe = local.pipeline(transaction=False)  # a burst
        for i in range(20000):
            pipe.set(f"{ns}burst:{i}", "x" * 100)
        pipe.execute()
        time.sleep(phase)
        sandbox.stop_component("webdis")  # the proxy answers 502 for a while
        time.sleep(phase)
        sandbox.start_component("webdis")
        time.sleep(phase)
        remote.flushdb()  # the hub loses everything (no event): the reconcile refills it
        time.sleep(phase)
        # then someone deletes the burst's keys on the hub behind Redis' back
        # (events off): a reconcile would delete them at this site too, but
        # they are far more than --max-delete allows, so the guard holds them
        remote.config_set("notify-keyspace-events", "")
        for start in range(0, 20000, 1000):
            remote.delete(*(f"{ns}burst:{i}" for i in range(start, start + 1000)))
        remote.config_set("notify-keyspace-events", "KA")
        time.sleep(phase * 2)
    finally:
        stop.set()
        for writer in writers:
            writer.join()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=4.0, help="how long the run lasts (default 4)")
    parser.add_argument("--out", default=os.path.join(ROOT, "docs", "dashboard.svg"), help="the SVG to write")
    args = parser.parse_args()

    import redis

    from redisrepl.sandbox import Sandbox, free_port
    from tests.harness import Daemon

    with open(DASHBOARD, encoding="utf-8") as f:
        dashboard = json.load(f)
    work = tempfile.mkdtemp(prefix="redisrepl-dashboard-")
    prometheus = None
    try:
        with Sandbox() as sandbox:
            local, remote = redis.Redis(port=sandbox.local_redis_port), redis.Redis(port=sandbox.remote_redis_port)
            metrics, web = free_port(), free_port()
            ns = "lab:"
            daemon = Daemon(
                sandbox, ns, rc=True, extra=["--metrics", f"127.0.0.1:{metrics}", "--reconcile-interval", "30"]
            )
            daemon.wait_ready()
            config = os.path.join(work, "prometheus.yml")
            with open(config, "w") as f:
                f.write(
                    "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
                    "scrape_configs:\n"
                    "  - job_name: redisrepl\n"
                    f"    static_configs: [{{targets: ['127.0.0.1:{metrics}'], labels: {{instance: site-a}}}}]\n"
                )
            prometheus = subprocess.Popen(
                [
                    prometheus_binary(),
                    f"--config.file={config}",
                    f"--storage.tsdb.path={os.path.join(work, 'data')}",
                    f"--web.listen-address=127.0.0.1:{web}",
                ],
                stdout=subprocess.DEVNULL,
                stderr=open(os.path.join(work, "prometheus.log"), "w"),
            )
            wait(lambda: ready(f"http://127.0.0.1:{web}/-/ready"))
            start = time.time()
            print(f"dashboard: playing {args.minutes:g} minutes", file=sys.stderr)
            play(sandbox, local, remote, ns, args.minutes)
            end = time.time()
            time.sleep(2)  # the last scrapes
            step = 2.0
            results = [panel_series(web, panel, start, end, step) for panel in dashboard["panels"]]
            daemon.stop()
    finally:
        if prometheus is not None:
            prometheus.terminate()
            prometheus.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)
    subtitle = (
        f"one site on the sandbox, {args.minutes:g} minutes: a trickle both ways, a 20,000-key burst, "
        "Webdis down, the hub wiped, a mass deletion on the hub"
    )
    with open(args.out, "w", encoding="utf-8") as f:
        f.write(render(dashboard, results, start, end, step, subtitle))

    print(f"dashboard: wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
