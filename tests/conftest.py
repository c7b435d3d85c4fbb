import pytest

from redisrepl.sandbox import SandboxError, binary
from tests.harness import Lab

NEEDED = ("redis-server", "webdis", "nginx")


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


@pytest.fixture
def daemons(lab):
    """Stops the daemons a test started, whatever happens."""
    yield lab
    lab.stop_daemons()
