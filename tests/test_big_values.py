"""Big values: strings of any size Redis allows cross in pieces, in bounded
memory, through the sandbox's nginx with its documented limits (real Redis,
Webdis, nginx and daemon)."""

import os

import pytest

from redisrepl import scripts
from redisrepl.sandbox import free_port
from redisrepl.testing import eval_script
from tests.harness import wait_until
from tests.test_service import metric, scrape

NS = "bv:"
SLOW = 120.0


@pytest.fixture(scope="module")
def daemon(lab):
    port = free_port()
    d = lab.daemon(NS, rc=True, extra=["--metrics", str(port)])
    d.metrics_port = port
    yield lab, d
    lab.stop_daemons()


def digest_in_redis(r, key):
    """The key's digest, computed whole inside that Redis (however big)."""
    reply, _ = eval_script(r, scripts.DIGEST_KEYS, [key], [b"10000", b"%d" % 2**40])
    return reply[0]


def peak_rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024


def fill_big(r, key, size):
    """A string of ``size`` bytes, written in pieces (redis-py would hold it whole)."""
    piece = os.urandom(1024 * 1024)
    r.delete(key)
    for offset in range(0, size, len(piece)):
        r.setrange(key, offset, piece[: min(len(piece), size - offset)])


def test_a_string_of_210_mb_crosses_in_pieces_in_bounded_memory(daemon):
    lab, d = daemon
    key = NS + "huge"
    size = 210 * 1024 * 1024  # more than nginx's client_max_body_size (128m) in one body
    fill_big(lab.local, key, size)
    lab.local.expire(key, 3600)
    wait_until(
        lambda: lab.remote.strlen(key) == size and lab.remote.pexpiretime(key) == lab.local.pexpiretime(key),
        SLOW,
        interval=0.2,
        what="210 MB on the remote, with its expiry",
    )
    assert digest_in_redis(lab.remote, key) == digest_in_redis(lab.local, key)
    assert peak_rss_mb(d.proc.pid) < 200, peak_rss_mb(d.proc.pid)
    text = scrape(d.metrics_port)
    assert metric(text, "redisrepl_big_keys_copied_total") >= 1
    # its echo is recognised: nothing comes back, and small keys went on meanwhile
    lab.local.set(NS + "after", "1")
    wait_until(lambda: lab.remote.get(NS + "after") == b"1")
    assert metric(scrape(d.metrics_port), "redisrepl_keys_written_total", side="local") == 0
    assert not lab.remote.keys("__redisrepl__-tmp-*") and not lab.local.keys("__redisrepl__-tmp-*")
    lab.local.delete(key)
    wait_until(lambda: not lab.remote.exists(key), SLOW)


def test_a_big_string_crosses_back_and_a_change_of_a_few_bytes_crosses_again(daemon):
    lab, _ = daemon
    key = NS + "back"
    size = 20 * 1024 * 1024 + 12345
    fill_big(lab.remote, key, size)
    wait_until(lambda: lab.local.strlen(key) == size, SLOW, interval=0.1, what="20 MB on the local side")
    assert digest_in_redis(lab.local, key) == digest_in_redis(lab.remote, key)
    lab.local.setrange(key, 5 * 1024 * 1024, b"changed here")
    wait_until(lambda: lab.remote.getrange(key, 5 * 1024 * 1024, 5 * 1024 * 1024 + 11) == b"changed here", SLOW)
    assert digest_in_redis(lab.local, key) == digest_in_redis(lab.remote, key)


def test_many_large_values_keep_each_read_bounded(daemon):
    """Strings of 3 MB each, 40 of them at once: read 16 MB at a time (the
    rest of each batch is read by the next), each read under the hub's
    reply limit, all cross."""
    lab, _ = daemon
    values = {f"{NS}m{i}": os.urandom(3 * 1024 * 1024) for i in range(40)}
    pipe = lab.remote.pipeline(transaction=False)
    for key, value in values.items():
        pipe.set(key, value)
    pipe.execute()
    wait_until(lambda: lab.local.exists(*values) == len(values), SLOW, interval=0.1)
    for key, value in values.items():
        assert lab.local.get(key) == value


def test_reconcile_and_verify_compare_big_strings_in_pieces(daemon):
    from tests.harness import run_verify

    lab, d = daemon
    key = NS + "verify"
    fill_big(lab.local, key, 12 * 1024 * 1024)
    wait_until(lambda: lab.remote.strlen(key) == 12 * 1024 * 1024, SLOW)
    result = run_verify(lab, NS)
    assert result.returncode == 0, result.stdout + result.stderr
    lab.remote.setrange(key, 100, b"tampered")  # announced: crosses
    wait_until(lambda: lab.local.getrange(key, 100, 107) == b"tampered", SLOW)
    assert run_verify(lab, NS).returncode == 0
