"""The sandbox itself: extra sites sharing the hub (each its own Redis and client
certificate), a Redis restarted empty or from its last snapshot, and the command
line (``python -m redisrepl.sandbox``)."""

import json
import os
import signal
import socket
import stat
import subprocess
import sys

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from redisrepl.sandbox import Sandbox, Site
from tests.harness import ROOT, client, wait_until

NS = "sbx:"
PONG = (200, b'{"PING":[true,"PONG"]}')


def _cn(name):
    return name.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value


def _certificate(path):
    with open(path, "rb") as f:
        return x509.load_pem_x509_certificate(f.read())


def _clear(r, prefix=NS):
    """Delete the keys under ``prefix`` (the daemon's markers included)."""
    keys = list(r.scan_iter(match=prefix + "*"))
    if keys:
        r.delete(*keys)


def _read(path):
    with open(path, "rb") as f:
        return f.read()


@pytest.fixture
def remote_restored(lab):
    """A test that saves the remote Redis starts from an empty one and leaves it as the
    next tests expect it: empty, without a dump, running."""
    lab.remote.flushall()
    yield lab
    sb = lab.sandbox
    if sb.running("remote_redis"):
        sb.stop_component("remote_redis")
    sb.start_component("remote_redis")  # snapshot=False: the dump goes first
    assert not os.path.exists(sb.dump_path("remote_redis"))
    assert lab.remote.dbsize() == 0


# -- sites ------------------------------------------------------------------------


def test_a_site_has_its_own_redis(lab):
    sb = lab.sandbox
    alpha = lab.add_site("alpha")
    assert lab.add_site("alpha") is alpha  # the lab's sites are made once
    site = alpha.site
    assert (site.name, site.component) == ("alpha", "site:alpha")
    assert site.redis_port not in (sb.local_redis_port, sb.remote_redis_port, sb.webdis_port, sb.proxy_port)
    assert sb.running("site:alpha")
    assert stat.S_ISSOCK(os.stat(site.socket_path).st_mode)
    assert list(sb.sites)[:2] == ["local", "alpha"]
    assert sb.sites["local"].redis_port == sb.local_redis_port
    assert sb.describe()["sites"]["alpha"]["redis_port"] == site.redis_port

    alpha.redis.set(NS + "only-at-alpha", "1")
    try:
        assert lab.local.get(NS + "only-at-alpha") is None
        assert lab.remote.get(NS + "only-at-alpha") is None
        lab.local.set(NS + "only-local", "1")
        assert alpha.redis.get(NS + "only-local") is None
    finally:
        alpha.redis.delete(NS + "only-at-alpha")
        lab.local.delete(NS + "only-local")


def test_a_site_has_its_own_certificate_that_the_proxy_accepts(lab):
    sb = lab.sandbox
    site = lab.add_site("alpha").site
    cert = _certificate(site.client_cert)
    assert _cn(cert.subject) == "redisrepl-site-alpha"
    assert cert.issuer == _certificate(sb.ca_cert).subject
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert stat.S_IMODE(os.stat(site.client_key).st_mode) == 0o600
    assert site.client_cert != sb.client_cert

    assert sb.request("GET", "/PING", cert=site.client_cert, key=site.client_key) == PONG
    # the certificate asked for is the one presented: another CA's is turned away
    status, _ = sb.request("GET", "/PING", cert=sb.other_client_cert, key=sb.other_client_key)
    assert status == 400


def test_an_issued_certificate_is_new_and_accepted(lab):
    sb = lab.sandbox
    first = sb.issue_client_certificate("redisrepl-site-alpha")
    second = sb.issue_client_certificate("redisrepl-site-alpha")
    assert len({*first, *second, sb.client_cert, sb.client_key}) == 6
    cert = _certificate(first[0])
    assert _cn(cert.subject) == "redisrepl-site-alpha"
    assert cert.serial_number != _certificate(second[0]).serial_number
    assert stat.S_IMODE(os.stat(first[1]).st_mode) == 0o600
    assert sb.request("GET", "/PING", cert=first[0], key=first[1]) == PONG


def test_daemon_args_pick_the_site_and_its_certificate(lab):
    sb = lab.sandbox
    site = lab.add_site("alpha").site

    def value(args, flag):
        return args[args.index(flag) + 1]

    today = sb.daemon_args("ns:", rc=True, extra=["--heartbeat", "1"])
    assert value(today, "--raddr") == f"127.0.0.1:{sb.local_redis_port}"
    assert (value(today, "--cert"), value(today, "--key")) == (sb.client_cert, sb.client_key)
    assert today[-3:] == ["--rc", "--heartbeat", "1"]
    assert sb.daemon_args("ns:", site="local") == sb.daemon_args("ns:")

    for chosen in ("alpha", site):
        args = sb.daemon_args("ns:", site=chosen)
        assert value(args, "--raddr") == f"127.0.0.1:{site.redis_port}"
        assert (value(args, "--cert"), value(args, "--key")) == (site.client_cert, site.client_key)
        assert value(args, "--haddr") == sb.haddr

    shared = sb.daemon_args("ns:", site="alpha", cert=sb.client_cert, key=sb.client_key)
    assert value(shared, "--raddr") == f"127.0.0.1:{site.redis_port}"
    assert (value(shared, "--cert"), value(shared, "--key")) == (sb.client_cert, sb.client_key)

    with pytest.raises(ValueError):
        sb.daemon_args("ns:", site="nowhere")
    with pytest.raises(ValueError):
        sb.start_component("site:nowhere")
    with pytest.raises(ValueError):
        sb.start_component("nginx", snapshot=True)
    for bad in ("local", "remote", "a/b", "", "x:y"):
        with pytest.raises(ValueError):
            sb.add_site(bad)
    with pytest.raises(ValueError):
        sb.add_site("alpha")  # the sandbox's own add_site: one site per name


def test_a_site_daemon_replicates_through_the_hub(daemons):
    lab = daemons
    alpha = lab.add_site("alpha")
    lab.daemon(NS, site=alpha)
    try:
        alpha.redis.set(NS + "from-alpha", "A")
        wait_until(lambda: lab.remote.get(NS + "from-alpha") == b"A", what="alpha -> remote")
        lab.remote.set(NS + "to-alpha", "R")
        wait_until(lambda: alpha.redis.get(NS + "to-alpha") == b"R", what="remote -> alpha")
        assert lab.local.get(NS + "from-alpha") is None  # no daemon on the local Redis
    finally:
        lab.stop_daemons()
        for r in (alpha.redis, lab.remote, lab.local):
            _clear(r)


def test_a_restarted_site_comes_back_empty_on_its_port(lab):
    sb = lab.sandbox
    alpha = lab.add_site("alpha")
    port = alpha.site.redis_port
    alpha.redis.set(NS + "gone", "1")
    alpha.redis.save()  # a dump exists, and is not loaded without snapshot=True

    sb.stop_component("site:alpha")
    assert not sb.running("site:alpha")
    sb.start_component("site:alpha")
    assert sb.running("site:alpha")
    assert sb.sites["alpha"].redis_port == port
    assert client(port).dbsize() == 0
    assert not os.path.exists(sb.dump_path("site:alpha"))


def test_a_site_restarts_from_its_snapshot(lab):
    sb = lab.sandbox
    beta = lab.add_site("beta")
    beta.redis.flushall()
    beta.redis.set(NS + "saved", "1")
    beta.redis.save()
    beta.redis.set(NS + "unsaved", "2")

    sb.stop_component("site:beta")
    sb.start_component("site:beta", snapshot=True)
    try:
        assert beta.redis.keys("*") == [(NS + "saved").encode()]
    finally:
        sb.stop_component("site:beta")
        sb.start_component("site:beta")
    assert beta.redis.dbsize() == 0


# -- the remote Redis: snapshots ------------------------------------------------------


def test_remote_restarts_from_the_snapshot_not_later_writes(remote_restored):
    lab = remote_restored
    sb = lab.sandbox
    lab.remote.mset({NS + "saved1": "a", NS + "saved2": "b"})
    lab.remote.save()
    dump = _read(sb.dump_path("remote_redis"))
    lab.remote.set(NS + "after", "c")
    lab.remote.delete(NS + "saved2")

    sb.stop_component("remote_redis")
    assert _read(sb.dump_path("remote_redis")) == dump  # SIGTERM saved nothing
    sb.start_component("remote_redis", snapshot=True)

    assert sorted(lab.remote.keys("*")) == [b"sbx:saved1", b"sbx:saved2"]
    assert lab.remote.mget(NS + "saved1", NS + "saved2") == [b"a", b"b"]
    # and the hub sees it: Webdis is back on the restarted Redis
    assert sb.request("GET", f"/GET/{NS}saved1") == (200, b'{"GET":"a"}')


def test_remote_restarts_empty_without_snapshot_even_with_a_dump(remote_restored):
    lab = remote_restored
    sb = lab.sandbox
    lab.remote.set(NS + "saved", "1")
    lab.remote.save()
    assert os.path.exists(sb.dump_path("remote_redis"))

    sb.stop_component("remote_redis")
    sb.start_component("remote_redis")

    assert lab.remote.dbsize() == 0
    assert not os.path.exists(sb.dump_path("remote_redis"))
    assert sb.request("GET", f"/GET/{NS}saved") == (200, b'{"GET":null}')


@pytest.mark.real_servers
def test_sites_are_stopped_with_the_sandbox():
    """A sandbox of its own: add_site before start() and after, all stopped by stop()."""
    sb = Sandbox()
    try:
        early = sb.add_site("early")
        assert isinstance(early, Site) and not sb.running("site:early")
        sb.start()
        late = sb.add_site("late")
        assert sb.running("site:early") and sb.running("site:late")
        assert client(early.redis_port).ping() and client(late.redis_port).ping()
    finally:
        sb.stop()
    assert not sb.running("site:early") and not sb.running("site:late")
    assert sb.workdir is None  # its own temporary work dir is gone


# -- the command line -----------------------------------------------------------------


def _sandbox_cli(*args, **kw):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])))
    return subprocess.Popen(
        [sys.executable, "-m", "redisrepl.sandbox", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


@pytest.mark.real_servers
def test_the_command_line_refuses_no_sites():
    proc = _sandbox_cli("demo", "--sites", "0")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert "a number of sites, 1 or more, not '0'" in err


@pytest.mark.real_servers
def test_up_prints_the_lab_and_sigterm_stops_it_all(tmp_path):
    """``python -m redisrepl.sandbox up --sites 2``: the lab as JSON, every Redis answering;
    after SIGTERM none does and the work dir (ours) is kept."""
    proc = _sandbox_cli("up", "--sites", "2", "--workdir", str(tmp_path / "lab"))
    try:
        lines = []
        while not lines or lines[-1] != "}\n":
            line = proc.stdout.readline()
            assert line, f"no JSON: {''.join(lines)}{proc.stderr.read()}"
            lines.append(line)
        lab = json.loads("".join(lines))
        assert list(lab["sites"]) == ["local", "site2"]
        ports = [lab["remote_redis_port"]] + [site["redis_port"] for site in lab["sites"].values()]
        assert all(client(port).ping() for port in ports)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0
    assert "SIGTERM: stopping" in err
    for port in ports:
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
    assert os.path.exists(tmp_path / "lab" / "webdis.json")
