"""contrib/: the systemd unit, the SysV init script, and JSON logs."""

import json
import os
import re
import shutil
import subprocess
import sys

from tests.harness import ROOT, wait_until, write_toml

CONTRIB = os.path.join(ROOT, "contrib")
TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")


def test_systemd_unit_verifies(tmp_path):
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is needed (Debian package systemd; ./dev.sh test installs it)"
    with open(os.path.join(CONTRIB, "redisrepl.service")) as f:
        unit = f.read()
    for option in (
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "Restart=on-failure",
        "RestartPreventExitStatus=1",
        "Type=exec",
        "User=redisrepl",
        "--nodaemon",
        "--logger=redisrepl.logs.journal",
        "LoadCredential=client.key:",
        "--key %d/client.key",
        "SystemCallFilter=@system-service",
    ):
        assert option in unit
    # verify checks that ExecStart exists: point it at this environment's twistd
    path = tmp_path / "redisrepl.service"
    path.write_text(unit.replace("/opt/redisrepl/bin/twistd", TWISTD))
    result = subprocess.run([analyze, "verify", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stderr.strip() == "", result.stderr
    # and its exposure, as systemd rates it (0 best, 10 worst): 2.0 or lower
    result = subprocess.run(
        [analyze, "security", "--offline=true", str(path)], capture_output=True, text=True, timeout=60
    )
    exposure = re.search(r"Overall exposure level for \S+: ([0-9.]+)", result.stdout)
    assert exposure is not None, result.stdout + result.stderr
    assert float(exposure.group(1)) <= 2.0, result.stdout


def test_sysv_init_script_starts_replicates_and_stops(daemons, tmp_path):
    lab = daemons
    sb = lab.sandbox
    config = write_toml(
        tmp_path / "redisrepl.toml",
        haddr=sb.haddr,
        cert=sb.client_cert,
        key=sb.client_key,
        ca=sb.ca_cert,
        raddr=f"127.0.0.1:{sb.local_redis_port}",
        nam="init:",
        rc=True,
    )
    defaults = tmp_path / "default"
    defaults.write_text(f"""
TWISTD={TWISTD}
CONFIG={config}
RUNDIR={tmp_path}/run
PIDFILE={tmp_path}/run/redisrepl.pid
LOGDIR={tmp_path}/log
LOGFILE={tmp_path}/log/redisrepl.log
RUN_AS_USER=$(id -un)
RUN_AS_GROUP=$(id -gn)
""")
    env = dict(os.environ, REDISREPL_DEFAULTS=str(defaults), PYTHONPATH=ROOT)
    script = os.path.join(CONTRIB, "redisrepl.init")

    def run(action):
        return subprocess.run(["sh", script, action], capture_output=True, text=True, env=env, timeout=60)

    assert run("status").returncode == 3
    started = run("start")
    assert started.returncode == 0, started.stdout + started.stderr
    try:
        assert run("status").returncode == 0
        log = tmp_path / "log" / "redisrepl.log"
        wait_until(lambda: log.exists() and "listening to remote Redis events" in log.read_text())
        lab.local.set("init:a", "1")
        wait_until(lambda: lab.remote.get("init:a") == b"1")
    finally:
        stopped = run("stop")
    assert stopped.returncode == 0 and "stopped" in stopped.stdout
    assert run("status").returncode == 3
    assert not (tmp_path / "run" / "redisrepl.pid").exists()


def test_json_logs(daemons):
    lab = daemons
    args = lab.sandbox.daemon_args("js:", rc=False)
    args.insert(args.index("-n"), "--logger=redisrepl.logs.json")
    d = lab.daemon("js:", args=args, ready=False, rc=False)
    d.wait_log("listening to local Redis")
    d.stop()
    events = [json.loads(line) for line in d.log().splitlines() if line.startswith("{")]
    assert events, d.log()
    started = [e for e in events if e.get("log_namespace") == "redisrepl.tap"]
    assert started and "haddr" not in started[0] and "summary" in started[0]
    assert all("log_level" in e and "log_time" in e for e in events)


def promtool():
    """promtool: on the PATH, or unpacked from Debian's prometheus package by ./dev.sh test."""
    found = shutil.which("promtool") or os.path.join(ROOT, ".cache", "promtool", "usr", "bin", "promtool")
    assert os.access(found, os.X_OK), "promtool is needed (./dev.sh test fetches it into .cache/promtool)"
    return found


def test_the_alert_rules_load_and_fire_when_they_should():
    for check in (["check", "rules", "redisrepl.rules.yml"], ["test", "rules", "redisrepl.rules.test.yml"]):
        result = subprocess.run([promtool(), *check], cwd=CONTRIB, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr


def test_the_dashboards_queries_parse_and_name_only_real_metrics(tmp_path):
    with open(os.path.join(CONTRIB, "grafana-dashboard.json"), encoding="utf-8") as f:
        dashboard = json.load(f)
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    assert len(exprs) >= 12
    # every query, as Prometheus would run it once Grafana filled in its variables
    rules = tmp_path / "dashboard.rules.yml"
    lines = ["groups:", "  - name: dashboard", "    rules:"]
    for i, expr in enumerate(exprs):
        filled = expr.replace("$__rate_interval", "5m").replace("$instance", ".*")
        lines += [f"      - record: dashboard:query{i}", f"        expr: {json.dumps(filled)}"]
    rules.write_text("\n".join(lines) + "\n")
    result = subprocess.run([promtool(), "check", "rules", str(rules)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    with open(os.path.join(ROOT, "redisrepl", "metrics.py"), encoding="utf-8") as f:
        exported = set(re.findall(r'"(redisrepl_[a-z_]+)"', f.read()))
    named = set(re.findall(r"\b(redisrepl_[a-z_]+)", " ".join(exprs)))
    assert {name.removesuffix("_total") for name in named} <= exported, named


def test_the_dashboards_picture_draws_every_panel_where_the_dashboard_puts_it():
    from xml.etree import ElementTree

    from bench import dashboard as picture

    with open(os.path.join(CONTRIB, "grafana-dashboard.json"), encoding="utf-8") as f:
        dashboard = json.load(f)
    panels = dashboard["panels"]
    # two series in the first panel, one with a gap; the others empty
    gap = [(100.0, 1.0), (102.0, 3.0), (110.0, 2.0), (112.0, float("nan")), (114.0, 4.0)]
    results = [[("local", gap), ("remote", [(100.0, 0.5)])]] + [[] for _ in panels[1:]]
    svg = ElementTree.fromstring(picture.render(dashboard, results, 100.0, 120.0, 2.0, "test"))
    ns = "{http://www.w3.org/2000/svg}"
    texts = [t.text for t in svg.iter(ns + "text")]
    assert all(panel["title"] in texts for panel in panels)
    assert texts.count("No data") == len(panels) - 1
    lines = [p.get("points").split() for p in svg.iter(ns + "polyline")]
    # the first series breaks at its gap and at its NaN: three runs (a lone
    # point drawn as a dot), then the second series' one point
    assert len(lines) == 4 and all(len(points) == 2 for points in lines)
    assert lines[1][0] == lines[1][1] and lines[0][0] != lines[0][1]
    # the panels do not overlap: each sits in its grid cell
    boxes = {(p["gridPos"]["x"], p["gridPos"]["y"]) for p in panels}
    assert len(boxes) == len(panels)


def test_the_dashboards_picture_writes_each_unit_as_grafana_would():
    from bench import dashboard as picture

    assert picture.UNITS["ops"](1500) == "1.5K/s"
    assert picture.UNITS["s"](0.25) == "250 ms" and picture.UNITS["s"](12) == "12 s"
    assert picture.UNITS["bytes"](3 * 2**20) == "3 MiB" and picture.UNITS["percentunit"](0.5) == "50%"
    assert [picture.nice_top(v) for v in (0, 0.7, 3, 21, 2400)] == [1.0, 1.0, 5, 25, 2500]
    assert picture.legend("{{side}} {{kind}}", {"side": "remote", "kind": "http"}) == "remote http"
    assert picture.filled('rate(x{instance=~"$instance"}[$__rate_interval])') == 'rate(x{instance=~".*"}[10s])'
