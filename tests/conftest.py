import os
import shutil

import pytest

from redisrepl.sandbox import SandboxError, binary
from tests.harness import Lab

NEEDED = ("redis-server", "webdis", "nginx")


#: Fixtures that start real servers (redis-server, webdis, nginx, daemons).
REAL_SERVERS = {"lab"}


def pytest_collection_modifyitems(items):
    """Every test is marked ``integration`` (it starts real servers, through
    the ``lab`` fixture or a ``real_servers`` mark) or ``unit`` (pure logic,
    fakes, in-memory clocks): ``./dev.sh test -m unit`` runs in seconds."""
    for item in items:
        real = REAL_SERVERS.intersection(item.fixturenames) or item.get_closest_marker("real_servers")
        item.add_marker(pytest.mark.integration if real else pytest.mark.unit)


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    """Keep each phase's report on the test item, for fixtures that act on failure."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, "report_" + report.when, report)


@pytest.fixture(scope="module")
def lab():
    try:
        for tool in NEEDED:
            binary(tool)
    except SandboxError as e:
        pytest.fail(f"integration tests: {e}; ./dev.sh test installs what they need")
    lab = Lab()
    yield lab
    lab.close()


def print_logs_if_failed(request, lab):
    """After a failed test, the logs of its daemons (pytest shows them)."""
    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed:
        keep = os.environ.get("REDISREPL_KEEP_LOGS")  # a folder to copy them to, whole
        for d in lab.daemons:
            print(f"--- daemon log {d.logfile} ---")
            print(d.log()[-20000:])
            if keep:
                os.makedirs(keep, exist_ok=True)
                shutil.copy(d.logfile, keep)


@pytest.fixture
def daemons(lab, request):
    """Stops the daemons a test started, whatever happens (their logs are
    printed if it failed)."""
    yield lab
    print_logs_if_failed(request, lab)
    lab.stop_daemons()
