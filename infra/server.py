"""Base class for a local server that `infra up` starts, checks and stops."""

from __future__ import annotations

import logging
import signal
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from infra.config import InfraConfig
from infra.process import (
    InfraError,
    ensure_port_free,
    is_alive,
    log_tail,
    port_accepts_connections,
    process_matches,
    read_pid_file,
    run_coroutine,
    terminate,
)

logger = logging.getLogger(__name__)

# Seconds between two readiness checks while a server starts.
_POLL_INTERVAL = 0.25


@dataclass(frozen=True)
class ServerReport:
    """Outcome of one command for one server."""

    name: str
    state: str
    ok: bool
    pid: int | None = None
    detail: str = ""

    def line(self) -> str:
        pid = f"pid {self.pid}" if self.pid is not None else ""
        return f"{self.name:<9} {self.state:<16} {pid:<11} {self.detail}".rstrip()


class ManagedServer(ABC):
    """A server process with a pid file, a log file and a readiness probe.

    Subclasses prepare the data folder, launch the process and probe it with
    a real client. This class keeps the start and stop logic shared.
    """

    name: ClassVar[str]
    # Seconds that `ensure_up` waits for the probe to pass after a launch.
    ready_timeout: ClassVar[float] = 60.0
    # Signal for a clean shutdown, and seconds to wait before SIGKILL.
    stop_signal: ClassVar[int] = signal.SIGTERM
    stop_timeout: ClassVar[float] = 30.0

    def __init__(self, config: InfraConfig) -> None:
        self.config = config

    @property
    @abstractmethod
    def pid_path(self) -> Path:
        """File whose first line is the pid of the server process."""

    @property
    @abstractmethod
    def log_path(self) -> Path:
        """Log file that start-up errors are read from."""

    @abstractmethod
    def cmdline_markers(self) -> Sequence[str]:
        """Strings that the command line of this server's process contains."""

    @abstractmethod
    def ports(self) -> dict[str, int]:
        """Ports the server listens on, keyed by the variable that sets each."""

    @abstractmethod
    def address(self) -> str:
        """Short text telling clients where to connect."""

    @abstractmethod
    def prepare(self) -> None:
        """Create data folders, configuration and downloads needed to launch."""

    @abstractmethod
    def launch(self) -> None:
        """Start the server process detached and write its pid file."""

    @abstractmethod
    async def probe(self) -> None:
        """Raise unless a real client can use the server.

        InfraError means the server will not become ready by waiting, and any
        other exception means it is not ready yet.
        """

    def log_excerpt(self) -> str:
        """Return the last lines of the server's log for an error message."""
        return f"last lines of {self.log_path}:\n{log_tail(self.log_path)}"

    def remove_pid_file(self) -> None:
        self.pid_path.unlink(missing_ok=True)

    def running_pid(self) -> int | None:
        """Return the pid of this server's live process.

        A pid file whose process is gone, or whose number now belongs to
        another program, is removed.
        """
        pid = read_pid_file(self.pid_path)
        if pid is None:
            return None
        if process_matches(pid, self.cmdline_markers()):
            return pid
        logger.info(
            "%s: removing stale pid file %s (pid %d)", self.name, self.pid_path, pid
        )
        self.remove_pid_file()
        return None

    def ensure_up(self) -> ServerReport:
        """Start the server unless it already runs, then wait until it is ready."""
        started_at = time.monotonic()
        pid = self.running_pid()
        if pid is not None:
            self._wait_ready(pid, started_at)
            return ServerReport(self.name, "already running", True, pid, self.address())

        for setting, port in self.ports().items():
            ensure_port_free(self.config.host, port, setting)
        self.prepare()
        self.launch()
        pid = read_pid_file(self.pid_path)
        if pid is None:
            raise InfraError(
                f"{self.name} did not write its pid file {self.pid_path}; "
                f"{self.log_excerpt()}"
            )
        self._wait_ready(pid, started_at)
        seconds = time.monotonic() - started_at
        detail = f"{self.address()} (ready in {seconds:.1f} s)"
        return ServerReport(self.name, "started", True, pid, detail)

    def _wait_ready(self, pid: int, started_at: float) -> None:
        deadline = started_at + self.ready_timeout
        last_error: Exception | None = None
        while True:
            if not is_alive(pid):
                raise InfraError(
                    f"{self.name} (pid {pid}) exited during start-up; "
                    f"{self.log_excerpt()}"
                )
            if self._ports_open():
                try:
                    run_coroutine(self.probe)
                    return
                except InfraError:
                    raise
                except Exception as error:
                    last_error = error
            if time.monotonic() >= deadline:
                raise InfraError(
                    f"{self.name} (pid {pid}) was not ready after "
                    f"{self.ready_timeout:.0f} s (last probe error: {last_error!r}); "
                    f"{self.log_excerpt()}"
                )
            time.sleep(_POLL_INTERVAL)

    def _ports_open(self) -> bool:
        return all(
            port_accepts_connections(self.config.host, port)
            for port in self.ports().values()
        )

    def ensure_down(self) -> ServerReport:
        """Stop the server if it runs: `stop_signal`, then SIGKILL after a bound."""
        pid = self.running_pid()
        if pid is None:
            return ServerReport(self.name, "not running", True)
        clean = terminate(pid, first_signal=self.stop_signal, timeout=self.stop_timeout)
        self.remove_pid_file()
        if clean:
            return ServerReport(self.name, "stopped", True, pid)
        logger.warning(
            "%s: pid %d ignored %s for %.0f s and was killed",
            self.name,
            pid,
            signal.Signals(self.stop_signal).name,
            self.stop_timeout,
        )
        return ServerReport(self.name, "killed", True, pid, "did not stop in time")

    def check(self) -> ServerReport:
        """Report whether the server runs and passes its probe."""
        pid = self.running_pid()
        if pid is None:
            return ServerReport(self.name, "down", False)
        try:
            run_coroutine(self.probe)
        except Exception as error:
            return ServerReport(self.name, "unhealthy", False, pid, repr(error))
        return ServerReport(self.name, "up", True, pid, self.address())
