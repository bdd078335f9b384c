"""Commands `up`, `down` and `status` for the local servers.

Usage: ``python -m infra up|down|status [kafka] [postgres] [smtp]``; without
names a command applies to all three. The same commands are available from
Python as `up`, `down` and `status`, for example in a pytest fixture.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import logging
import sys
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from infra.config import InfraConfig, load
from infra.kafka_server import KafkaServer
from infra.postgres_server import PostgresServer
from infra.process import InfraError
from infra.server import ManagedServer, ServerReport
from infra.smtp_server import SmtpServer

SERVER_TYPES: dict[str, type[ManagedServer]] = {
    "kafka": KafkaServer,
    "postgres": PostgresServer,
    "smtp": SmtpServer,
}
SERVER_NAMES = tuple(SERVER_TYPES)


def _select(names: Iterable[str] | None, config: InfraConfig) -> list[ManagedServer]:
    selected = list(dict.fromkeys(names or SERVER_NAMES))
    unknown = [name for name in selected if name not in SERVER_TYPES]
    if unknown:
        raise InfraError(
            f"unknown server name(s) {', '.join(unknown)}; "
            f"choose from {', '.join(SERVER_NAMES)}"
        )
    return [SERVER_TYPES[name](config) for name in selected]


@contextlib.contextmanager
def _run_dir_lock(run_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock so concurrent `up` and `down` calls take turns."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with (run_dir / ".infra.lock").open("a") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


def _run_each(
    servers: list[ManagedServer],
    action: Callable[[ManagedServer], ServerReport],
    echo: bool,
) -> list[ServerReport]:
    """Run `action` on every server in parallel and return reports in order.

    With `echo`, prints one line per server. Raises one InfraError naming every
    server whose action failed, after the others have finished.
    """
    with ThreadPoolExecutor(max_workers=len(servers)) as executor:
        futures = [executor.submit(action, server) for server in servers]
    reports: list[ServerReport] = []
    failures: list[str] = []
    for server, future in zip(servers, futures, strict=True):
        error = future.exception()
        if error is None:
            reports.append(future.result())
        elif isinstance(error, InfraError | OSError | ValueError):
            reports.append(ServerReport(server.name, "failed", False))
            failures.append(f"{server.name}: {error}")
        else:
            raise error
    if echo:
        for report in reports:
            print(report.line(), flush=True)
    if failures:
        raise InfraError("\n".join(failures))
    return reports


def up(
    names: Iterable[str] | None = None,
    *,
    config: InfraConfig | None = None,
    echo: bool = True,
) -> list[ServerReport]:
    """Start the named servers (default: all) and wait until each is ready.

    Servers that already run and pass their probe are left alone. Raises
    InfraError if any server fails to start; the others keep running.
    """
    config = config or load()
    servers = _select(names, config)
    with _run_dir_lock(config.run_dir):
        return _run_each(servers, ManagedServer.ensure_up, echo)


def down(
    names: Iterable[str] | None = None,
    *,
    config: InfraConfig | None = None,
    echo: bool = True,
) -> list[ServerReport]:
    """Stop the named servers (default: all); servers not running are skipped."""
    config = config or load()
    servers = _select(names, config)
    with _run_dir_lock(config.run_dir):
        return _run_each(servers, ManagedServer.ensure_down, echo)


def status(
    names: Iterable[str] | None = None,
    *,
    config: InfraConfig | None = None,
    echo: bool = True,
) -> list[ServerReport]:
    """Check whether the named servers (default: all) run and pass their probe."""
    config = config or load()
    servers = _select(names, config)
    return _run_each(servers, ManagedServer.check, echo)


async def up_async(
    names: Iterable[str] | None = None,
    *,
    config: InfraConfig | None = None,
    echo: bool = True,
) -> list[ServerReport]:
    """Run `up` in a worker thread so the event loop keeps running."""
    return await asyncio.to_thread(up, names, config=config, echo=echo)


async def down_async(
    names: Iterable[str] | None = None,
    *,
    config: InfraConfig | None = None,
    echo: bool = True,
) -> list[ServerReport]:
    """Run `down` in a worker thread so the event loop keeps running."""
    return await asyncio.to_thread(down, names, config=config, echo=echo)


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m infra",
        description="Run the local Kafka, Postgres and SMTP servers on 127.0.0.1.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    descriptions = {
        "up": "start servers that are not running and wait until they are ready",
        "down": "stop servers started by `up` (SIGTERM, then SIGKILL after a bound)",
        "status": "print the state of each server; exit 1 unless all are up",
    }
    for command, description in descriptions.items():
        subparser = commands.add_parser(
            command, help=description, description=description
        )
        subparser.add_argument(
            "names",
            nargs="*",
            metavar="NAME",
            help=f"servers to act on: {', '.join(SERVER_NAMES)} (default: all)",
        )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command and return the process exit code."""
    arguments = _build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    # aiokafka logs every refused connection while a broker starts up.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    actions = {"up": up, "down": down, "status": status}
    try:
        reports = actions[arguments.command](arguments.names or None)
    except (InfraError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0 if all(report.ok for report in reports) else 1
