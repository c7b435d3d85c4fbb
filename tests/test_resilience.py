"""The daemon stays up: components restart under it, TLS goes wrong, the
stream turns to garbage. It reports, backs off, reconnects and loses no
change it has seen."""

import http.server
import re
import threading
import time

import pytest
import redis

from redisrepl import resp
from redisrepl.sandbox import free_port
from redisrepl.sandbox.certificates import write_chained_client_certificate
from tests.harness import metric, scrape, wait_until

SLOW = 30.0  # a restart costs a backoff period or a heartbeat timeout


@pytest.mark.parametrize("component", ["nginx", "webdis", "remote_redis", "local_redis"])
def test_component_restart_mid_run(daemons, component):
    lab = daemons
    ns = f"rs{component}:"
    d = lab.daemon(ns, rc=True, extra=["--heartbeat", "0.5"])
    lab.local.set(ns + "before", "1")
    wait_until(lambda: lab.remote.get(ns + "before") == b"1")

    lab.sandbox.stop_component(component)
    if component != "local_redis":
        # seen while the hub is down: must stay pending, not be dropped
        lab.local.set(ns + "during", "kept")
        lab.local.hset(ns + "during-h", mapping={"f": "kept"})
    lab.sandbox.start_component(component)

    if component != "local_redis":
        wait_until(lambda: lab.remote.get(ns + "during") == b"kept", SLOW, what="change made while the hub was down")
        wait_until(lambda: lab.remote.hgetall(ns + "during-h") == {b"f": b"kept"}, SLOW)
    # Events fired while a stream is down are gone for good (catching up is
    # the reconcile's job); new changes cross once the daemon listens again.
    if component == "local_redis":
        d.wait_log("listening to local Redis", count=2, timeout=SLOW)
    else:
        d.wait_log("listening to remote Redis events", count=2, timeout=SLOW)
    lab.local.set(ns + "after-l", "2")
    wait_until(lambda: lab.remote.get(ns + "after-l") == b"2", SLOW, what="local->remote after restart")
    lab.remote.set(ns + "after-r", "3")
    wait_until(lambda: lab.local.get(ns + "after-r") == b"3", SLOW, what="remote->local after restart")
    assert lab.daemons[-1].proc.poll() is None


def test_remote_restart_is_detected_by_heartbeat(daemons):
    lab = daemons
    d = lab.daemon("hb:", rc=True, extra=["--heartbeat", "0.5"])
    lab.sandbox.stop_component("remote_redis")
    lab.sandbox.start_component("remote_redis")
    d.wait_log("heartbeat", timeout=SLOW)
    d.wait_log("listening to remote Redis events", count=2, timeout=SLOW)
    # the restart emptied notify-keyspace-events; the daemon set it again
    wait_until(lambda: "K" in lab.remote.config_get("notify-keyspace-events")["notify-keyspace-events"], SLOW)
    lab.remote.set("hb:x", "1")
    wait_until(lambda: lab.local.get("hb:x") == b"1", SLOW)


@pytest.mark.parametrize(
    "case,expect",
    [
        ("wrong_client_cert", "refused the client certificate"),
        ("untrusted_ca", "certificate verify failed"),
        ("wrong_host_name", "not valid for this host name"),
    ],
)
def test_tls_problems_are_reported_and_retried(daemons, case, expect):
    lab = daemons
    sb = lab.sandbox
    args = sb.daemon_args("tls:", rc=True, extra=["--log-level", "debug"])  # (each retry: a debug line)
    if case == "wrong_client_cert":
        args[args.index(sb.client_cert)] = sb.other_client_cert
        args[args.index(sb.client_key)] = sb.other_client_key
    elif case == "untrusted_ca":
        args[args.index(sb.ca_cert)] = sb.other_ca_cert
    else:
        args[args.index(sb.haddr)] = sb.wrong_name_haddr
    d = lab.daemon("tls:", args=args, ready=False)
    d.wait_log("listening to local Redis")
    lab.local.set("tls:k", "v")
    d.wait_log(expect)
    d.wait_log("retrying in", count=2)  # backs off and tries again
    assert d.proc.poll() is None
    assert lab.remote.get("tls:k") is None


def test_an_outage_is_a_line_when_it_starts_and_one_when_it_ends_not_one_per_retry(daemons):
    lab = daemons
    port = free_port()
    d = lab.daemon("out:", rc=True, extra=["--metrics", str(port)])
    lab.sandbox.stop_component("nginx")
    try:
        lab.local.set("out:k", "v")
        # the copies are retried, quickly at first: wait for several retries
        wait_until(
            lambda: (
                metric(scrape(port), "redisrepl_request_failures_total", side="remote", kind="connection_refused") >= 6
            ),
            SLOW,
            what="several failed copies",
        )
        d.wait_log("remote event stream: ")
    finally:
        lab.sandbox.start_component("nginx")
    wait_until(lambda: lab.remote.get("out:k") == b"v", SLOW)
    d.wait_log("copies, remote side: back after")
    d.wait_log("remote event stream: back after")
    log = d.log()
    assert log.count("copies, remote side: ") == 2, log  # started, back
    # once for each part that failed: the copies, the stream, the reconcile
    assert log.count("retrying with backoff") == 3, log
    assert "retrying in" not in log and "<html" not in log.lower(), log
    back = [line for line in log.splitlines() if "copies, remote side: back after" in line]
    assert re.search(r"back after [0-9.]+s \(([1-9][0-9]*) retries\)", back[0]), back


def test_a_client_certificate_from_an_intermediate_ca_is_sent_with_its_chain(daemons, tmp_path):
    """The proxy trusts only the root CA; the --cert file holds the client
    certificate and the intermediate CA that issued it, and both are sent.
    The same certificate without its chain is refused: the chain is what
    lets the proxy verify it."""
    lab = daemons
    sb = lab.sandbox
    chain, key, leaf = write_chained_client_certificate(str(tmp_path / "site"), "chained-site", sb.ca_cert, sb.ca_key)
    alone = lab.daemon("chain1:", rc=False, cert=leaf, key=key, ready=False)
    alone.wait_log("listening to local Redis")
    lab.local.set("chain1:k", "v")
    alone.wait_log("refused the client certificate")
    alone.stop()
    lab.daemon("chain2:", rc=True, cert=chain, key=key)
    lab.local.set("chain2:k", "v")
    wait_until(lambda: lab.remote.get("chain2:k") == b"v")
    lab.remote.set("chain2:back", "1")
    wait_until(lambda: lab.local.get("chain2:back") == b"1")


class FakeHub(http.server.ThreadingHTTPServer):
    """A plain-HTTP stand-in for Webdis that serves a scripted event stream."""

    daemon_threads = True

    def __init__(self, stream_chunks, flood=0):
        super().__init__(("127.0.0.1", 0), _FakeHubHandler)
        self.stream_chunks = stream_chunks
        self.stream_requests = 0
        self.posts = []
        self.flood = flood  # bytes of garbage answered to every command (a hostile hub)
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server_address[1]}"

    def close(self):
        self.shutdown()
        self.server_close()


class _FakeHubHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if body.startswith(b"PSUBSCRIBE/"):
            return self.stream()
        self.server.posts.append(body)
        if self.server.flood:
            return self.flood()
        if body.startswith(b"CONFIG/GET"):
            reply = resp.encode_command("notify-keyspace-events", "AKE")
        elif body.startswith(b"EVAL"):
            reply = resp.encode_command("none", "-2")
        else:
            reply = b"+OK\r\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def flood(self):
        """A reply that never ends: a bulk string announced at 500 MB, sent
        as fast as the daemon takes it, without a length."""
        self.send_response(200)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        piece = b"x" * (1024 * 1024)
        try:
            self.wfile.write(b"%x\r\n%s\r\n" % (16, b"$524288000\r\nxxxx"))
            for _ in range(self.server.flood // len(piece)):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
        except OSError:
            pass  # the daemon gave up on it: that is the point
        self.close_connection = True

    def stream(self):
        self.server.stream_requests += 1
        self.send_response(200)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for chunk in self.server.stream_chunks:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")
        self.close_connection = True


def _fake_hub_daemon(lab, hub, ns):
    args = lab.sandbox.daemon_args(ns, rc=True, extra=["--allow-http"])
    args[args.index(lab.sandbox.haddr)] = hub.url
    return lab.daemon(ns, args=args, ready=False)


def test_garbage_on_the_stream_is_logged_and_reconnected(daemons):
    lab = daemons
    hub = FakeHub([resp.encode_command("psubscribe", "__keyspace@0__:fk:*", "1"), b"this is not RESP\r\n"])
    try:
        d = _fake_hub_daemon(lab, hub, "fk:")
        d.wait_log("malformed event stream")
        wait_until(lambda: hub.stream_requests >= 2, what="a reconnect after garbage")
        assert d.proc.poll() is None
        # local replication went on all the while
        lab.local.set("fk:still", "1")
        wait_until(lambda: any(b"fk:still" in p for p in hub.posts))
    finally:
        hub.close()


def test_stream_is_parsed_across_any_chunk_boundaries(daemons):
    lab = daemons
    message = resp.encode_command("psubscribe", "__keyspace@0__:ck:*", "1") + resp.encode_command(
        "pmessage", "__keyspace@0__:ck:*", b"__keyspace@0__:ck:split\xff", "set"
    )
    # one byte per chunk
    hub = FakeHub([message[i : i + 1] for i in range(len(message))])
    try:
        _fake_hub_daemon(lab, hub, "ck:")
        # the event made the daemon read that key on the hub
        wait_until(
            lambda: any(re.search(rb"EVAL(SHA)?/.*/1/ck:split%FF", p) for p in hub.posts),
            what="a read of the key announced in byte-sized chunks",
        )
    finally:
        hub.close()


def test_sigterm_exits_cleanly(daemons):
    lab = daemons
    d = lab.daemon("term:", rc=True)
    lab.local.set("term:a", "1")
    wait_until(lambda: lab.remote.get("term:a") == b"1")
    # twistd re-raises the signal after a clean shutdown, so that the exit
    # status tells it was stopped by SIGTERM
    assert d.stop() in (0, -15)
    log = d.log()
    assert "Main loop terminated" in log
    assert "Traceback" not in log


def test_local_password_file_and_acl_user(daemons, tmp_path):
    lab = daemons
    lab.local.execute_command("ACL", "SETUSER", "repl", "on", ">pw-of-repl", "~*", "&*", "+@all")
    pw = tmp_path / "pw"
    pw.write_text("pw-of-repl\n")
    lab.local.execute_command("ACL", "SETUSER", "default", "resetpass", ">admin-pw")
    admin = lab.local
    try:
        admin.execute_command("AUTH", "default", "admin-pw")
        d = lab.daemon("pw:", rc=True, extra=["--username", "repl", "--password-file", str(pw)])
        lab.crosses_both_ways("pw:")
        assert "pw-of-repl" not in d.log()
    finally:
        admin.execute_command("ACL", "SETUSER", "default", "nopass")
        admin.execute_command("ACL", "DELUSER", "repl")


@pytest.mark.parametrize(
    "acl,expect,fatal",
    [
        ("-config|set", "add 'Kg$lshztxe' to notify-keyspace-events", True),
        ("-config", "make sure notify-keyspace-events includes 'Kg$lshztxe'", False),
    ],
)
def test_refused_config_names_the_flags(daemons, acl, expect, fatal):
    lab = daemons
    lab.local.config_set("notify-keyspace-events", "")
    lab.local.execute_command("ACL", "SETUSER", "noconf", "on", ">pw", "~*", "&*", "+@all", acl)
    try:
        d = lab.daemon("nc:", rc=False, extra=["--username", "noconf"], ready=False, env={"REDISREPL_PASSWORD": "pw"})
        d.wait_log(expect)
        if fatal:
            assert d.proc.wait(30) == 1
        else:
            d.wait_log("listening to local Redis")
            assert d.proc.poll() is None
    finally:
        lab.local.execute_command("ACL", "DELUSER", "noconf")


def test_local_redis_over_a_unix_socket(daemons):
    lab = daemons
    sb = lab.sandbox
    args = sb.daemon_args("sock:", rc=True)
    args[args.index(f"127.0.0.1:{sb.local_redis_port}")] = sb.socket_path("local_redis")
    lab.daemon("sock:", args=args)
    lab.crosses_both_ways("sock:")


def test_evicted_key_is_kept_on_the_other_side(daemons):
    lab = daemons
    d = lab.daemon("ev:", rc=False, extra=["--reconcile-interval", "1"])
    lab.local.set("ev:k", "x" * 1000)
    wait_until(lambda: lab.remote.exists("ev:k"))
    evicted = lab.local.info("stats")["evicted_keys"]
    lab.local.config_set("maxmemory-policy", "allkeys-random")
    lab.local.config_set("maxmemory", 1)
    try:
        # any write makes Redis evict until it is under the limit: everything
        with pytest.raises(redis.exceptions.ResponseError, match="maxmemory"):
            lab.local.set("other:trigger", "1")
        assert not lab.local.exists("ev:k")
        assert lab.local.info("stats")["evicted_keys"] > evicted
    finally:
        lab.local.config_set("maxmemory", 0)
        lab.local.config_set("maxmemory-policy", "noeviction")
    d.wait_log("evictions are not replicated as deletions")
    d.wait_log("done:", count=d.log().count("done:") + 1)  # a reconcile after the eviction
    assert lab.remote.get("ev:k") == b"x" * 1000
    # a genuine deletion still crosses
    lab.local.set("ev:k", "y")
    wait_until(lambda: lab.remote.get("ev:k") == b"y")
    lab.local.delete("ev:k")
    wait_until(lambda: not lab.remote.exists("ev:k"), what="a deletion crossing")


def test_legacy_pass_flag_is_hidden_from_ps(daemons):
    lab = daemons
    lab.local.execute_command("ACL", "SETUSER", "default", "resetpass", ">old-school-pw")
    admin = lab.local
    try:
        admin.execute_command("AUTH", "default", "old-school-pw")
        d = lab.daemon("ps:", rc=False, extra=["-pass", "old-school-pw"])
        with open(f"/proc/{d.proc.pid}/cmdline", "rb") as f:
            cmdline = f.read()
        assert b"old-school-pw" not in cmdline and b"redisrepl" in cmdline
        d.wait_log("-pass is deprecated")
        admin.set("ps:a", "1")
        wait_until(lambda: lab.remote.get("ps:a") == b"1")
        assert "old-school-pw" not in d.log()
    finally:
        admin.execute_command("ACL", "SETUSER", "default", "nopass")


def test_a_stream_that_breaks_at_once_backs_off(daemons):
    """Confirmed, then garbage, again and again: the backoff grows (it used
    to start again at every confirmation: two reconnects a second)."""
    lab = daemons
    hub = FakeHub([resp.encode_command("psubscribe", "__keyspace@0__:bo:*", "1"), b"garbage\r\n"])
    try:
        d = _fake_hub_daemon(lab, hub, "bo:")
        wait_until(lambda: hub.stream_requests >= 2, what="a reconnect")
        first, started = hub.stream_requests, time.monotonic()
        wait_until(lambda: hub.stream_requests >= first + 5, timeout=60, what="five more reconnects")
        # about 0.25 + 0.5 + 1 + 2 + 4 s (with jitter: at least three quarters);
        # at two a second it took 2.5 s
        assert time.monotonic() - started > 4.0, time.monotonic() - started
        assert d.proc.poll() is None
    finally:
        hub.close()


def test_a_hostile_hub_cannot_make_the_daemon_hold_what_it_sends(daemons):
    """Every reply a 500 MB bulk string that never ends, and an event stream
    announcing one too: the daemon refuses both before holding them, stays
    up, and its memory stays bounded."""
    lab = daemons
    huge_event = resp.encode_command("psubscribe", "__keyspace@0__:hh:*", "1") + b"$524288000\r\n" + b"y" * 4096
    hub = FakeHub([huge_event] + [b"y" * 65536] * 100, flood=300 * 1024 * 1024)
    try:
        d = _fake_hub_daemon(lab, hub, "hh:")
        d.wait_log("malformed event stream", timeout=30)
        for i in range(20):
            lab.local.set(f"hh:k{i}", "v")
        d.wait_log("reply of more than", timeout=60)
        wait_until(lambda: len(hub.posts) >= 10, timeout=60, what="the daemon keeps asking")
        with open(f"/proc/{d.proc.pid}/status") as f:
            peak = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024
        print(f"peak RSS under a hostile hub: {peak:.0f} MB")
        assert peak < 160, peak
        assert d.proc.poll() is None
    finally:
        hub.close()
