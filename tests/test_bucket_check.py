"""The periodic check by bucket digests, on real processes: sites share one
walk of the hub, an unchanged namespace is confirmed without each site
having the hub digest every key, and every divergence no event announced
is still found and repaired (redisrepl.bucket_check, docs/hub-scale.md)."""

import re
import time

import pytest

from redisrepl.buckets import bucket_of
from redisrepl.sandbox import free_port
from tests.conftest import print_logs_if_failed
from tests.harness import metric, scrape, silently, wait_until

SLOW = 40.0
CONFIRMED = "both sides hold the same namespace"
WALKED = "shared walk of the hub:"
OPTIONS = ["--reconcile-interval", "1"]


def fill(r, ns, n):
    pipe = r.pipeline(transaction=False)
    for i in range(n):
        pipe.set(f"{ns}k{i}", b"v%d" % i)
    pipe.execute()


@pytest.fixture
def sites(daemons, request):
    lab = daemons
    lab.remote.flushall()
    extra = [lab.add_site(name) for name in ("bg", "bh")]
    for site in extra:
        site.redis.flushall()
    yield lab, extra
    print_logs_if_failed(request, lab)
    lab.stop_daemons()
    lab.remote.flushall()


def confirmations(d):
    return d.log().count(CONFIRMED)


def three_sites(lab, extra, ns, n=2000, options=OPTIONS, first=()):
    fill(lab.local, ns, n)
    daemons = [lab.daemon(ns, rc=True, extra=options + list(first))]
    daemons += [lab.daemon(ns, rc=True, site=site, extra=options) for site in extra]
    everyone = [lab.remote, lab.local] + [site.redis for site in extra]
    wait_until(lambda: all(r.get(f"{ns}k{n - 1}") == f"v{n - 1}".encode() for r in everyone), SLOW)
    return daemons, everyone


def test_sites_share_one_walk_of_the_hub(sites):
    lab, extra = sites
    port = free_port()
    daemons, _ = three_sites(lab, extra, "bk1:", first=["--metrics", str(port), "--walk-share", "0.5"])
    wait_until(lambda: all(confirmations(d) >= 4 for d in daemons), SLOW, what="four checks confirmed on each site")
    before = daemons[0].log()
    text = scrape(port)
    logs = [d.log() for d in daemons]
    confirmed = metric(text, "redisrepl_reconcile_checks_total", outcome="confirmed")
    walked = metric(text, "redisrepl_reconcile_shared_walks_total")
    assert before.count(CONFIRMED) <= confirmed <= logs[0].count(CONFIRMED)
    assert before.count(WALKED) <= walked <= logs[0].count(WALKED)
    assert metric(text, "redisrepl_reconcile_checks_total", outcome="confirmed") >= 4
    assert metric(text, "redisrepl_reconcile_checks_total", outcome="differed") == 0
    checks = sum(log.count(CONFIRMED) for log in logs)
    walks = sum(log.count(WALKED) for log in logs)
    # a walk serves every site that checks after it began: far fewer walks than checks
    assert walks < checks
    assert any("by a walk another site made" in log for log in logs)
    assert not any("buckets differing" in log for log in logs)
    for log in logs:
        assert "2000 keys on the hub, 2000 here" in log
    # every site's first check walks the hub itself, at its --walk-share;
    # what its walks took of the hub's time is counted
    assert "paced to 50% of it), published for every site" in logs[0]
    assert "paced to 25% of it), published for every site" in logs[1]
    assert metric(text, "redisrepl_reconcile_hub_seconds_total") > 0


@pytest.mark.parametrize("where", ["hub", "site"])
def test_a_change_no_event_announced_is_found_and_repaired(sites, where):
    lab, extra = sites
    ns = f"bk2{where}:"
    daemons, everyone = three_sites(lab, extra, ns)
    wait_until(lambda: all(confirmations(d) >= 2 for d in daemons), SLOW)
    r = lab.remote if where == "hub" else extra[0].redis
    silently(r, lambda r: r.set(f"{ns}k7", b"silent"))
    wait_until(
        lambda: all(x.get(f"{ns}k7") == b"silent" for x in everyone),
        SLOW,
        what="the silent change found and copied everywhere",
    )
    assert any("the periodic check found 1 of 16384 buckets differing" in d.log() for d in daemons)


def test_a_divergence_beside_a_live_change_is_found_later(sites):
    """A silent change in a bucket whose other key changes through events
    while the hub is walked: that bucket is left to live events by that
    check, and the divergence is found by a later one."""
    lab, extra = sites
    ns = "bk3:"
    daemons, everyone = three_sites(lab, extra, ns)
    silent = f"{ns}k3".encode()
    live = next(
        f"{ns}live{i}".encode() for i in range(100_000) if bucket_of(f"{ns}live{i}".encode()) == bucket_of(silent)
    )
    wait_until(lambda: all(confirmations(d) >= 2 for d in daemons), SLOW)
    silently(lab.remote, lambda r: r.set(silent, b"silent"))
    lab.local.set(live, b"1")  # announced: its bucket is left to live events for a while
    for i in range(20):
        extra[1].redis.set(live, b"%d" % i)
    wait_until(lambda: all(x.get(silent) == b"silent" for x in everyone), SLOW, what="the silent change everywhere")
    wait_until(lambda: all(x.get(live) == b"19" for x in everyone), SLOW)
    logs = [d.log() for d in daemons]
    assert any("1 of 16384 buckets left to live events" in log for log in logs)
    assert any("the periodic check found 1 of 16384 buckets differing" in log for log in logs)


def test_a_hub_that_refuses_the_shared_walk_gets_full_walks(sites):
    lab, _ = sites
    ns = "bk4:"
    fill(lab.local, ns, 100)
    lab.remote.execute_command("ACL", "SETUSER", "default", "-setex")
    try:
        d = lab.daemon(ns, rc=True, extra=OPTIONS)
        d.wait_log("the hub refused a command of the shared walk", timeout=SLOW)
        d.wait_log("reconcile (periodic): comparing the namespace", timeout=SLOW)
        silently(lab.remote, lambda r: r.set(f"{ns}k1", b"silent"))
        wait_until(lambda: lab.local.get(f"{ns}k1") == b"silent", SLOW, what="found by a full walk")
        assert d.log().count("the hub refused a command of the shared walk") == 1
        assert d.proc.poll() is None
    finally:
        lab.remote.execute_command("ACL", "SETUSER", "default", "+@all")


def test_checks_confirm_while_measurements_trickle_in(sites):
    """Sites exchanging measurements at a fixed rate: the keys the trickle
    touches are left to live events, and the rest is still confirmed."""
    lab, extra = sites
    ns = "bk5:"
    daemons, everyone = three_sites(lab, extra, ns)
    wait_until(lambda: all(confirmations(d) >= 1 for d in daemons), SLOW)
    before = [confirmations(d) for d in daemons]
    started, written = time.monotonic(), 0
    while time.monotonic() - started < 6.0 or any(c < b + 2 for c, b in zip(map(confirmations, daemons), before)):
        # about 200 writes a second over 1,000 keys, from two sites
        site = lab.local if written % 2 else extra[0].redis
        site.set(f"{ns}m{written % 1000}", b"%d" % written)
        written += 1
        time.sleep(0.005)  # the rate of the workload, not a wait for a condition
        assert time.monotonic() - started < SLOW, "no check confirmed during the trickle"
    logs = [d.log() for d in daemons]
    left_out = [int(n) for log in logs for n in re.findall(r"; (\d+) of 16384 buckets left to live events", log)]
    assert max(left_out) > 0
    assert not any("buckets had keys changed or evicted" in log for log in logs)
    assert not any("buckets differing" in log for log in logs)


def test_one_way_sites_walk_at_every_periodic_reconcile(sites):
    """A one-way site's hub may hold keys of other sites it does not have:
    its tables would never be equal, so it does not check, it walks."""
    lab, _ = sites
    ns = "bk6:"
    fill(lab.local, ns, 100)
    d = lab.daemon(ns, rc=False, extra=OPTIONS)
    d.wait_log("keys compared", count=3, timeout=SLOW)  # start-up, then two periodic walks
    log = d.log()
    assert "reconcile (periodic): comparing the namespace" in log
    assert CONFIRMED not in log and WALKED not in log
