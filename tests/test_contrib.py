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
