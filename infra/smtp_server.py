"""Start, probe and stop the SMTP sink of infra/smtp_sink.py."""

from __future__ import annotations

import asyncio
import smtplib
import sys
from collections.abc import Sequence
from pathlib import Path

from infra.config import REPO_DIR
from infra.process import spawn_detached, write_pid_file
from infra.server import ManagedServer

SINK_MODULE = "infra.smtp_sink"


class SmtpServer(ManagedServer):
    name = "smtp"
    ready_timeout = 30.0
    stop_timeout = 10.0

    @property
    def home(self) -> Path:
        return self.config.smtp_dir

    @property
    def pid_path(self) -> Path:
        return self.home / "smtp.pid"

    @property
    def log_path(self) -> Path:
        return self.home / "smtp.log"

    def cmdline_markers(self) -> Sequence[str]:
        return (SINK_MODULE, str(self.home))

    def ports(self) -> dict[str, int]:
        return {"PAT_SMTP_PORT": self.config.smtp_port}

    def address(self) -> str:
        return (
            f"smtp://{self.config.smtp_host}:{self.config.smtp_port} "
            f"mailbox {self.config.mailbox_path}"
        )

    def prepare(self) -> None:
        self.config.messages_dir.mkdir(parents=True, exist_ok=True)

    def launch(self) -> None:
        argv = [
            sys.executable,
            "-m",
            SINK_MODULE,
            "--host",
            self.config.smtp_host,
            "--port",
            str(self.config.smtp_port),
            "--dir",
            str(self.home),
        ]
        # The working folder is the repository, so `-m infra.smtp_sink` finds
        # this package without it being installed.
        child = spawn_detached(argv, log_path=self.log_path, cwd=REPO_DIR)
        write_pid_file(self.pid_path, child.pid)

    async def probe(self) -> None:
        await asyncio.to_thread(self._noop)

    def _noop(self) -> None:
        # local_hostname is given so smtplib does not look up this machine's
        # fully qualified name, which may wait on DNS.
        with smtplib.SMTP(
            self.config.smtp_host,
            self.config.smtp_port,
            local_hostname="localhost",
            timeout=5,
        ) as client:
            code, reply = client.noop()
        if code != 250:
            raise RuntimeError(f"SMTP NOOP returned {code} {reply!r}")
