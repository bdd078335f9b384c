"""Round trips through the local Kafka, Postgres and SMTP servers.

The session fixture starts the servers through `infra.cli.up` and leaves them
running for the tests that follow.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib
import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from infra import cli, mailbox
from infra.config import InfraConfig, load


@pytest.fixture(scope="session")
def infra_config() -> Iterator[InfraConfig]:
    config = load()
    cli.up(config=config, echo=False)
    yield config


async def test_postgres_round_trip(infra_config: InfraConfig) -> None:
    connection = await asyncpg.connect(infra_config.pg_dsn)
    try:
        await connection.execute(
            "CREATE TEMPORARY TABLE infra_check (id serial PRIMARY KEY, note text)"
        )
        note = uuid.uuid4().hex
        await connection.execute("INSERT INTO infra_check (note) VALUES ($1)", note)
        stored = await connection.fetchval("SELECT note FROM infra_check")
        listen_addresses = await connection.fetchval("SHOW listen_addresses")
        max_connections = await connection.fetchval("SHOW max_connections")
        version = await connection.fetchval("SHOW server_version_num")
    finally:
        await connection.close()
    assert stored == note
    assert listen_addresses == "127.0.0.1"
    assert int(max_connections) >= 200
    assert int(version) >= 180000


async def test_kafka_produce_consume(infra_config: InfraConfig) -> None:
    topic = f"infra-check-{uuid.uuid4().hex[:12]}"
    payload = uuid.uuid4().bytes
    producer = AIOKafkaProducer(bootstrap_servers=infra_config.kafka_bootstrap)
    await producer.start()
    try:
        # The topic does not exist yet, so this also checks auto-creation.
        metadata = await producer.send_and_wait(topic, payload, key=b"key")
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=infra_config.kafka_bootstrap,
        group_id=f"{topic}-group",
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        async with asyncio.timeout(30):
            record = await consumer.getone()
        partitions = consumer.partitions_for_topic(topic)
    finally:
        await consumer.stop()
    assert record.value == payload
    assert record.key == b"key"
    assert record.partition == metadata.partition
    assert partitions == {0, 1, 2}


async def test_smtp_sink_stores_message(infra_config: InfraConfig) -> None:
    token = uuid.uuid4().hex
    message = EmailMessage()
    message["From"] = "Tokens <noreply@pat.test>"
    message["To"] = "alice@pat.test"
    message["Subject"] = f"Your new token {token}"
    message["Message-ID"] = f"<{token}@pat.test>"
    message.set_content("Hello Alice,\nyour token ends in ...ß1.\n")
    message.add_alternative("<p>Hello Alice</p>", subtype="html")

    await aiosmtplib.send(
        message,
        hostname=infra_config.smtp_host,
        port=infra_config.smtp_port,
        recipients=["alice@pat.test", "audit@pat.test"],
    )
    found = await mailbox.wait_for_messages_async(
        lambda stored: stored["message_id"] == f"<{token}@pat.test>", timeout=10
    )

    assert len(found) == 1
    stored = found[0]
    assert stored["subject"] == f"Your new token {token}"
    assert stored["from"] == "Tokens <noreply@pat.test>"
    assert stored["to"] == "alice@pat.test"
    assert stored["mail_from"] == "noreply@pat.test"
    assert stored["rcpt_tos"] == ["alice@pat.test", "audit@pat.test"]
    assert stored["text"] == "Hello Alice,\nyour token ends in ...ß1.\n"
    assert stored["html"] == "<p>Hello Alice</p>\n"
    assert stored["headers"]["Subject"] == f"Your new token {token}"
    assert stored["received_at"].endswith("+00:00")
    eml = Path(stored["eml_path"])
    assert eml.parent == infra_config.messages_dir
    assert token.encode() in eml.read_bytes()
    assert mailbox.default_mailbox_path() == infra_config.mailbox_path


async def test_status_after_up(infra_config: InfraConfig) -> None:
    reports = await asyncio.to_thread(cli.status, config=infra_config, echo=False)
    assert [report.name for report in reports] == ["kafka", "postgres", "smtp"]
    for report in reports:
        assert report.state == "up", report.line()


async def test_up_twice_keeps_servers(infra_config: InfraConfig) -> None:
    before = await asyncio.to_thread(cli.status, config=infra_config, echo=False)
    reports = await cli.up_async(config=infra_config, echo=False)
    for report in reports:
        assert report.state == "already running", report.line()
    assert [report.pid for report in reports] == [report.pid for report in before]


def test_read_messages_skips_partial_line(tmp_path: Path) -> None:
    path = tmp_path / "messages.jsonl"
    complete = {"subject": "first", "text": "a"}
    path.write_text(json.dumps(complete) + "\n" + '{"subject": "sec')
    messages = mailbox.read_messages(path)
    assert [dict(message) for message in messages] == [complete]
    assert mailbox.read_messages(tmp_path / "missing.jsonl") == []


def test_wait_for_messages_times_out(tmp_path: Path) -> None:
    path = tmp_path / "messages.jsonl"
    path.write_text(json.dumps({"subject": "other"}) + "\n")
    with pytest.raises(TimeoutError, match="found 0"):
        mailbox.wait_for_messages(
            lambda stored: stored["subject"] == "wanted", timeout=0.2, path=path
        )


def test_config_defaults_and_errors() -> None:
    config = load({})
    assert config.kafka_bootstrap == "127.0.0.1:19092"
    assert (
        config.pg_dsn == "postgresql://postgres:postgres-dev@127.0.0.1:15432/postgres"
    )
    assert config.smtp_port == 11025
    assert config.mailbox_path == config.run_dir / "smtp" / "messages.jsonl"
    assert "postgres-dev" not in repr(config)
    with pytest.raises(ValueError, match="PAT_PG_PORT"):
        load({"PAT_PG_PORT": "not-a-port"})
    with pytest.raises(ValueError, match="both set to port 19092"):
        load({"PAT_SMTP_PORT": "19092"})
