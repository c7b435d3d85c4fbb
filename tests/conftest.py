import shutil

import pytest

from tests.harness import Lab

NEEDED = ("redis-server", "webdis", "nginx")


@pytest.fixture(scope="module")
def lab():
    missing = [tool for tool in NEEDED if not shutil.which(tool)
               and not shutil.which(tool, path="/usr/sbin:/usr/bin")]
    if missing:
        pytest.fail(f"integration tests need {', '.join(missing)}: run ./dev.sh test, which installs them")
    lab = Lab()
    yield lab
    lab.close()


@pytest.fixture
def daemons(lab):
    """Stops the daemons a test started, whatever happens."""
    yield lab
    lab.stop_daemons()
