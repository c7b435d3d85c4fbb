"""Running server programs for the sandbox: finding them, a free port for each,
starting one in a session of its own and waiting until it is ready, stopping it.

Blocking code (subprocess, sockets, sleeps), standard library only; what a
component is and when it is ready is components.py's business.
"""

import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterable

READY_TIMEOUT = 15.0
STOP_TIMEOUT = 5.0


class SandboxError(Exception):
    """A sandbox component failed to start (the message carries its log's tail)."""


def binary(name: str) -> str:
    """The path of a server program, also where Debian puts it outside a
    normal user's PATH (/usr/sbin for nginx)."""
    path = os.pathsep.join([os.environ.get("PATH", os.defpath), "/usr/sbin", "/sbin"])
    found = shutil.which(name, path=path)
    if found is None:
        raise SandboxError(f"{name} is not installed (./dev.sh demo installs it with apt-get)")
    return found


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (bind to port 0, read it, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn(argv: list[str], console: str, cwd: str) -> subprocess.Popen:
    """Start ``argv`` in ``cwd``, in a session of its own (Ctrl-C reaches only us), with
    stdout and stderr appended to the file ``console`` and no stdin; on Linux it gets
    SIGTERM if the thread that started it dies."""
    with open(console, "ab") as out:
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=cwd,
            preexec_fn=_death_signal_setter(),
        )


def await_ready(
    proc: subprocess.Popen, problem: Callable[[], str | None], timeout: float = READY_TIMEOUT
) -> str | None:
    """Poll ``problem()`` every 50 ms until it says None (ready: return None); what is
    wrong if ``proc`` exits first or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            return f"exited with status {proc.returncode}"
        wrong = problem()
        if wrong is None:
            return None
        if time.monotonic() > deadline:
            return wrong + f" after {timeout:.0f} s"
        time.sleep(0.05)


def terminate(proc: subprocess.Popen, timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM ``proc`` and wait; SIGKILL its process group past ``timeout`` seconds.
    Nothing if it has exited."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # leader not reaped yet: still our group
        except ProcessLookupError:
            pass
        proc.wait()


def log_tail(directory: str, names: Iterable[str], lines: int = 20) -> str:
    """The last ``lines`` lines of each of the files ``names`` (relative to ``directory``)
    that exist and are not empty, each under a header naming it."""
    out = []
    for rel in names:
        try:
            with open(os.path.join(directory, rel), "rb") as f:
                tail = f.read().decode("utf-8", "replace").splitlines()[-lines:]
        except OSError:
            continue
        if tail:
            out.append(f"--- {rel} (last {len(tail)} lines) ---\n" + "\n".join(tail))
    return "\n".join(out) or "(no log output)"


def _death_signal_setter():
    """A preexec_fn asking the kernel to SIGTERM the child when the starting thread dies
    (Linux ``PR_SET_PDEATHSIG``), or None where that is unavailable or unsafe: the signal
    follows the *thread*, so it is only used from the main thread."""
    if threading.current_thread() is not threading.main_thread():
        return None
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (ImportError, OSError, AttributeError):
        return None
    return lambda: prctl(1, int(signal.SIGTERM))  # resolved before the fork
