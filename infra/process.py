"""Process helpers: pid files, detached launches, signals and port checks.

Only Linux is supported, because process state and command lines are read
from /proc.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

# Popen handles of the servers launched by this process. Keeping them avoids
# the ResourceWarning that Popen.__del__ emits for a child that still runs,
# and lets `reap_children` collect the exit status of a server that stopped.
_children: list[subprocess.Popen[bytes]] = []


class InfraError(RuntimeError):
    """A local server could not be prepared, started, checked or stopped."""


def read_pid_file(path: Path) -> int | None:
    """Return the pid on the first line of `path`, or None if missing or invalid."""
    try:
        first_line = path.read_text().splitlines()[0]
    except (FileNotFoundError, IndexError):
        return None
    try:
        pid = int(first_line.strip())
    except ValueError:
        return None
    return pid if pid > 0 else None


def write_pid_file(path: Path, pid: int) -> None:
    """Write `pid` to `path` through a rename, so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(f"{pid}\n")
    os.replace(temporary, path)


def reap_children() -> None:
    """Collect the exit status of launched servers that have exited."""
    for child in list(_children):
        if child.poll() is not None:
            _children.remove(child)


def process_cmdline(pid: int) -> list[str] | None:
    """Return the arguments of a live process, or None if it is gone or a zombie."""
    reap_children()
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The state letter follows the command name, which is in parentheses and
    # may itself contain spaces or parentheses.
    state = stat[stat.rfind(")") + 2 :][:1]
    if state in ("Z", "X"):
        return None
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def process_matches(pid: int, markers: Sequence[str]) -> bool:
    """Check that `pid` is alive and its command line contains every marker.

    A marker may be a whole argument or part of one. This guards against a
    stale pid file whose number now belongs to an unrelated process.
    """
    arguments = process_cmdline(pid)
    if arguments is None:
        return False
    joined = "\0".join(arguments)
    return all(marker in joined for marker in markers)


def is_alive(pid: int) -> bool:
    return process_cmdline(pid) is not None


def spawn_detached(
    argv: Sequence[str],
    *,
    log_path: Path,
    cwd: Path,
    env: Mapping[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """Start `argv` in a new session with stdout and stderr appended to `log_path`.

    The new session keeps the server running after the calling process and its
    terminal exit.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log_file:
        child = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=None if env is None else dict(env),
            start_new_session=True,
            close_fds=True,
        )
    _children.append(child)
    return child


def wait_for_exit(pid: int, timeout: float) -> bool:
    """Poll until `pid` has exited; return False if it still runs after `timeout`."""
    deadline = time.monotonic() + timeout
    while is_alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    return True


def send_signal(pid: int, signum: int) -> None:
    """Send `signum` to `pid`, ignoring a process that has already exited."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


def terminate(
    pid: int,
    *,
    first_signal: int = signal.SIGTERM,
    timeout: float = 30.0,
    kill_timeout: float = 10.0,
) -> bool:
    """Stop `pid` with `first_signal`, then SIGKILL if it outlives `timeout` seconds.

    Returns True if the process exited after the first signal and False if it
    had to be killed. Raises InfraError if it survives SIGKILL too.
    """
    send_signal(pid, first_signal)
    if wait_for_exit(pid, timeout):
        return True
    send_signal(pid, signal.SIGKILL)
    if wait_for_exit(pid, kill_timeout):
        return False
    raise InfraError(f"process {pid} is still running {kill_timeout} s after SIGKILL")


def port_accepts_connections(host: str, port: int, timeout: float = 0.5) -> bool:
    """Return True if a TCP connection to host:port succeeds."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def ensure_port_free(host: str, port: int, setting: str) -> None:
    """Raise InfraError if something already listens on host:port.

    `setting` names the environment variable that chooses another port.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # SO_REUSEADDR makes the bind fail only for a listening socket, not for
        # connections of a stopped server that linger in TIME_WAIT.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            if error.errno != errno.EADDRINUSE:
                raise
            raise InfraError(
                f"port {host}:{port} is already in use by another process; "
                f"stop that process or set {setting} to a free port"
            ) from error


def log_tail(path: Path, lines: int = 20) -> str:
    """Return the last `lines` lines of a log file, or a note that it is missing."""
    try:
        with path.open("rb") as log_file:
            log_file.seek(0, os.SEEK_END)
            size = log_file.tell()
            log_file.seek(max(0, size - 16_384))
            text = log_file.read().decode(errors="replace")
    except FileNotFoundError:
        return f"({path} does not exist)"
    return "\n".join(text.splitlines()[-lines:])


def run_coroutine(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run the coroutine that `factory` creates to completion and return its result.

    The coroutine runs on a fresh event loop in a worker thread when the calling
    thread already runs a loop, so the blocking server functions can be called
    from async code such as pytest-asyncio fixtures.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(factory())
    with ThreadPoolExecutor(max_workers=1) as executor:
        return executor.submit(lambda: asyncio.run(factory())).result()
