"""Create a database with one schema and one login role per service.

Each role owns its own schema and has no privileges on the others, so a
service cannot read another service's tables. Run as a Postgres superuser:

    python -m services.provision --superuser-dsn postgresql://... --database pat
"""

from __future__ import annotations

import argparse
import asyncio
import os
from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg

SERVICES = ("settings", "profile", "tokens", "notifier")


def role_name(service: str) -> str:
    return f"{service}_svc"


def role_password(service: str) -> str:
    """Return the role's password from PAT_<SERVICE>_DB_PASSWORD, or the
    development placeholder that the services refuse outside development."""
    variable = f"PAT_{service.upper()}_DB_PASSWORD"
    return os.environ.get(variable, f"{service}-dev-only")


def service_dsn(superuser_dsn: str, database: str, service: str) -> str:
    """Return the DSN with which ``service`` connects to ``database``."""
    parts = urlsplit(superuser_dsn)
    host = parts.hostname or "127.0.0.1"
    port = f":{parts.port}" if parts.port else ""
    credentials = f"{role_name(service)}:{quote(role_password(service), safe='')}"
    return urlunsplit(
        ("postgresql", f"{credentials}@{host}{port}", f"/{database}", "", "")
    )


def _with_database(dsn: str, database: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path=f"/{database}"))


async def provision(superuser_dsn: str, database: str) -> dict[str, str]:
    """Create the database, roles and schemas if missing; return each DSN."""
    admin = await asyncpg.connect(_with_database(superuser_dsn, "postgres"))
    try:
        for service in SERVICES:
            role = role_name(service)
            exists = await admin.fetchval(
                "SELECT true FROM pg_roles WHERE rolname = $1", role
            )
            verb = "ALTER" if exists else "CREATE"
            password = role_password(service).replace("'", "''")
            await admin.execute(f"{verb} ROLE {role} LOGIN PASSWORD '{password}'")
        if not await admin.fetchval(
            "SELECT true FROM pg_database WHERE datname = $1", database
        ):
            await admin.execute(f'CREATE DATABASE "{database}"')
    finally:
        await admin.close()

    conn = await asyncpg.connect(_with_database(superuser_dsn, database))
    try:
        await conn.execute(f'REVOKE ALL ON DATABASE "{database}" FROM PUBLIC')
        await conn.execute("REVOKE ALL ON SCHEMA public FROM PUBLIC")
        for service in SERVICES:
            role = role_name(service)
            await conn.execute(f'GRANT CONNECT ON DATABASE "{database}" TO {role}')
            await conn.execute(
                f"CREATE SCHEMA IF NOT EXISTS {service} AUTHORIZATION {role}"
            )
    finally:
        await conn.close()
    return {
        service: service_dsn(superuser_dsn, database, service) for service in SERVICES
    }


async def drop(superuser_dsn: str, database: str) -> None:
    admin = await asyncpg.connect(_with_database(superuser_dsn, "postgres"))
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    finally:
        await admin.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--superuser-dsn", required=True, help="Postgres superuser DSN")
    parser.add_argument("--database", default="pat", help="database to create")
    args = parser.parse_args()
    dsns = asyncio.run(provision(args.superuser_dsn, args.database))
    for service in dsns:
        print(f"{service}: schema {service}, role {role_name(service)}")


if __name__ == "__main__":
    main()
