"""After the whole suite, no credential it used is in a log, topic or table."""

from __future__ import annotations

import asyncio
import re
import time

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer

from tests.conftest import USED_PASSWORDS, RunContext

# Any well-formed personal access token or session token, from any test.
CREDENTIAL = re.compile(rb"ecpat_[0-9A-Za-z]{36}|ecses_[0-9A-Za-z_-]{43}")


async def _dump_database(dsn: str) -> bytes:
    conn = await asyncpg.connect(dsn)
    try:
        tables = await conn.fetch(
            "SELECT table_schema, table_name FROM information_schema.tables"
            " WHERE table_schema IN ('settings', 'profile', 'tokens', 'notifier')"
        )
        rows: list[str] = []
        for table in tables:
            name = f'"{table["table_schema"]}"."{table["table_name"]}"'
            rows.extend(
                row["text"]
                for row in await conn.fetch(f"SELECT t::text AS text FROM {name} t")
            )
        return "\n".join(rows).encode()
    finally:
        await conn.close()


async def _dump_topics(bootstrap: str, prefix: str) -> bytes:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        topics = [t for t in await consumer.topics() if t.startswith(prefix)]
        consumer.subscribe(topics)
        parts: list[bytes] = []
        idle_since = time.monotonic()
        deadline = time.monotonic() + 60
        while time.monotonic() - idle_since < 3 and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            for records in batches.values():
                idle_since = time.monotonic()
                for record in records:
                    parts.append(record.value or b"")
                    parts.extend(value for _, value in record.headers)
        return b"\n".join(parts)
    finally:
        await consumer.stop()


@pytest.mark.after_all
def test_no_credential_anywhere(run: RunContext) -> None:
    logs = run.log_text().encode()
    topics = asyncio.run(_dump_topics(run.infra.kafka_bootstrap, run.topic_prefix))
    database = asyncio.run(_dump_database(run.infra.pg_dsn_for(run.database)))

    assert b"org.pat.tokens.token.created.v1" in topics  # the dump read the topics
    assert b"ecpat_" not in database  # not even a prefix
    for place, text in (("logs", logs), ("topics", topics), ("database", database)):
        assert CREDENTIAL.search(text) is None, place
        for password in USED_PASSWORDS:
            assert password.encode() not in text, place
