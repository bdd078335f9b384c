"""Ports, paths and credentials of the local Kafka, Postgres and SMTP servers.

Every value comes from an environment variable with a default, and every server
listens on 127.0.0.1 only:

    PAT_RUN_DIR                 data, logs and pid files (default <repo>/.run)
    PAT_KAFKA_PORT              Kafka client listener (default 19092)
    PAT_KAFKA_CONTROLLER_PORT   KRaft controller listener (default 19093)
    PAT_PG_PORT                 Postgres (default 15432)
    PAT_SMTP_PORT               SMTP sink (default 11025)
    PAT_PG_SUPERUSER_PASSWORD   password of the `postgres` role (default postgres-dev)
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

LOOPBACK = "127.0.0.1"
REPO_DIR = Path(__file__).resolve().parent.parent

DEFAULT_KAFKA_PORT = 19092
DEFAULT_KAFKA_CONTROLLER_PORT = 19093
DEFAULT_PG_PORT = 15432
DEFAULT_SMTP_PORT = 11025
DEFAULT_PG_SUPERUSER_PASSWORD = "postgres-dev"
PG_SUPERUSER = "postgres"


@dataclass(frozen=True)
class InfraConfig:
    """Settings of the local servers, as read by `load`."""

    run_dir: Path
    kafka_port: int
    kafka_controller_port: int
    pg_port: int
    smtp_port: int
    pg_superuser_password: str = field(repr=False)
    host: str = LOOPBACK
    pg_superuser: str = PG_SUPERUSER

    @property
    def kafka_bootstrap(self) -> str:
        """Kafka bootstrap servers string, e.g. ``127.0.0.1:19092``."""
        return f"{self.host}:{self.kafka_port}"

    @property
    def kafka_controller_address(self) -> str:
        return f"{self.host}:{self.kafka_controller_port}"

    @property
    def pg_host(self) -> str:
        return self.host

    @property
    def pg_dsn(self) -> str:
        """Connection URL of the superuser to the ``postgres`` database."""
        return self.pg_dsn_for("postgres")

    def pg_dsn_for(self, database: str, user: str | None = None) -> str:
        """Build a connection URL; the password is the superuser's."""
        role = quote(user or self.pg_superuser, safe="")
        password = quote(self.pg_superuser_password, safe="")
        name = quote(database, safe="")
        return f"postgresql://{role}:{password}@{self.host}:{self.pg_port}/{name}"

    @property
    def smtp_host(self) -> str:
        return self.host

    @property
    def kafka_dir(self) -> Path:
        return self.run_dir / "kafka"

    @property
    def postgres_dir(self) -> Path:
        return self.run_dir / "postgres"

    @property
    def smtp_dir(self) -> Path:
        return self.run_dir / "smtp"

    @property
    def cache_dir(self) -> Path:
        """Downloads that can be rebuilt, such as the Kafka jars."""
        return self.run_dir / "cache"

    @property
    def messages_dir(self) -> Path:
        """Folder of the ``.eml`` files that the SMTP sink stores."""
        return self.smtp_dir / "messages"

    @property
    def mailbox_path(self) -> Path:
        """JSON Lines file with one record per message received by the sink."""
        return self.smtp_dir / "messages.jsonl"


def _read_port(environ: Mapping[str, str], name: str, default: int) -> int:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        port = int(raw)
    except ValueError:
        port = 0
    if not 1 <= port <= 65535:
        raise ValueError(f"{name} must be a TCP port number (1-65535), got {raw!r}")
    return port


def load(environ: Mapping[str, str] | None = None) -> InfraConfig:
    """Read the settings from `environ` (default: ``os.environ``).

    Raises ValueError for a port that is not a number in 1-65535, for two
    servers set to the same port and for an empty password.
    """
    env = os.environ if environ is None else environ
    password = env.get("PAT_PG_SUPERUSER_PASSWORD", DEFAULT_PG_SUPERUSER_PASSWORD)
    if not password:
        raise ValueError("PAT_PG_SUPERUSER_PASSWORD must not be empty")
    run_dir_raw = env.get("PAT_RUN_DIR", "").strip()
    run_dir = Path(run_dir_raw).expanduser() if run_dir_raw else REPO_DIR / ".run"

    config = InfraConfig(
        run_dir=run_dir.absolute(),
        kafka_port=_read_port(env, "PAT_KAFKA_PORT", DEFAULT_KAFKA_PORT),
        kafka_controller_port=_read_port(
            env, "PAT_KAFKA_CONTROLLER_PORT", DEFAULT_KAFKA_CONTROLLER_PORT
        ),
        pg_port=_read_port(env, "PAT_PG_PORT", DEFAULT_PG_PORT),
        smtp_port=_read_port(env, "PAT_SMTP_PORT", DEFAULT_SMTP_PORT),
        pg_superuser_password=password,
    )

    ports = {
        "PAT_KAFKA_PORT": config.kafka_port,
        "PAT_KAFKA_CONTROLLER_PORT": config.kafka_controller_port,
        "PAT_PG_PORT": config.pg_port,
        "PAT_SMTP_PORT": config.smtp_port,
    }
    seen: dict[int, str] = {}
    for name, port in ports.items():
        if port in seen:
            raise ValueError(f"{name} and {seen[port]} are both set to port {port}")
        seen[port] = name
    return config
