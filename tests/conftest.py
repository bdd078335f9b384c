"""Fixtures that start the real servers and the four services once per run.

Kafka, Postgres and the SMTP sink are started through ``infra`` when they are
not running, and stopped again at the end only if this run started them. Each
run gets its own database and topic prefix, so runs never see each other's
data.
"""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from infra import cli as infra_cli
from infra.config import InfraConfig, load
from services.client import Api
from services.launcher import SERVICES, Stack, free_port, start_stack
from services.provision import drop, provision

ADMIN_PASSWORD = "admin-dev-only-password"
INTROSPECTION_CLIENT = "test-gateway"
INTROSPECTION_SECRET = "introspection-dev-only-secret"

SIGN_IN_WINDOW_SECONDS = 8
SIGN_IN_MAX_PER_ADDRESS = 12

# Far above what any test sends from 127.0.0.1 (the gateway tests send
# hundreds of requests with a deleted token within a second).
# tests/e2e/test_validation_limit.py runs a tokens replica with a low limit.
VALIDATION_FAILURE_LIMIT = 100_000
VALIDATION_FAILURE_WINDOW_SECONDS = 1

# Every password the tests give the services. The last test of the run
# checks that none of them reached a log, a topic or a table.
USED_PASSWORDS: list[str] = [ADMIN_PASSWORD]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the tests marked ``after_all`` last, after every other test."""
    items.sort(key=lambda item: item.get_closest_marker("after_all") is not None)


def bearer(credential: str) -> dict[str, str]:
    """Return the Authorization header that presents ``credential``."""
    return {"Authorization": f"Bearer {credential}"}


@pytest.fixture(scope="session")
def infra() -> Iterator[InfraConfig]:
    config = load()
    already_up = {
        report.name
        for report in infra_cli.status(config=config, echo=False)
        if report.ok
    }
    infra_cli.up(config=config, echo=False)
    yield config
    started = [name for name in ("smtp", "kafka", "postgres") if name not in already_up]
    if started:
        infra_cli.down(started, config=config, echo=False)


@dataclass
class RunContext:
    infra: InfraConfig
    database: str
    topic_prefix: str
    stack: Stack
    api: Api
    events: EventLog
    run_id: str

    def log_text(self) -> str:
        return "".join(
            path.read_text(errors="replace") for path in self.stack.logs.values()
        )


@dataclass
class EventLog:
    """Every record on the run's topics, collected by a background consumer."""

    records: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def of_type(self, suffix: str) -> list[dict[str, Any]]:
        with self.lock:
            return [
                r
                for r in self.records
                if r["headers"].get("ce_type", "").endswith(suffix)
            ]


def _json_or_none(value: bytes | None) -> Any:
    # Tests also put malformed records on the topics.
    try:
        return json.loads(value) if value else None
    except ValueError:
        return None


def _collect_events(
    bootstrap: str, topics: list[str], log: EventLog, stop: threading.Event
) -> None:
    async def consume() -> None:
        consumer = AIOKafkaConsumer(
            *topics,
            bootstrap_servers=bootstrap,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            group_id=None,
            metadata_max_age_ms=1000,
        )
        await consumer.start()
        try:
            while not stop.is_set():
                batches = await consumer.getmany(timeout_ms=200)
                for records in batches.values():
                    for record in records:
                        entry = {
                            "topic": record.topic,
                            "key": record.key.decode() if record.key else None,
                            "headers": {k: v.decode() for k, v in record.headers},
                            "raw": record.value or b"",
                            "value": _json_or_none(record.value),
                        }
                        with log.lock:
                            log.records.append(entry)
        finally:
            await consumer.stop()

    asyncio.run(consume())


def start_collector(
    bootstrap: str, topics: list[str]
) -> tuple[EventLog, Callable[[], None]]:
    """Collect every record of ``topics`` in a thread; return the log and a stop."""
    events = EventLog()
    stop = threading.Event()
    collector = threading.Thread(
        target=_collect_events, args=(bootstrap, topics, events, stop), daemon=True
    )
    collector.start()

    def stop_collector() -> None:
        stop.set()
        collector.join(10)

    return events, stop_collector


@pytest.fixture(scope="session")
def run(
    infra: InfraConfig, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunContext]:
    run_id = uuid.uuid4().hex[:8]
    database = f"pat_test_{run_id}"
    topic_prefix = f"test-{run_id}."
    dsns = asyncio.run(provision(infra.pg_dsn, database))
    log_dir = infra.run_dir / "test-logs" / run_id
    ports = {name: free_port() for name in SERVICES}
    stack = start_stack(
        dsns,
        infra.kafka_bootstrap,
        infra.smtp_port,
        log_dir,
        topic_prefix=topic_prefix,
        ports=ports,
        extra_env={
            "PAT_ENVIRONMENT": "development",
            # Tests run expiry scans on demand through the development API.
            "PAT_SCAN_INTERVAL_SECONDS": "3600",
            "PAT_SEND_POLL_SECONDS": "0.2",
            "PAT_OUTBOX_POLL_SECONDS": "0.5",
            "PAT_ADMIN_PASSWORD": ADMIN_PASSWORD,
            # Short sign-in limits, so the throttle tests wait seconds.
            "PAT_SIGN_IN_WINDOW_SECONDS": str(SIGN_IN_WINDOW_SECONDS),
            "PAT_SIGN_IN_MAX_FAILURES_PER_ADDRESS": str(SIGN_IN_MAX_PER_ADDRESS),
            "PAT_VALIDATION_FAILURE_LIMIT": str(VALIDATION_FAILURE_LIMIT),
            "PAT_VALIDATION_FAILURE_WINDOW_SECONDS": str(
                VALIDATION_FAILURE_WINDOW_SECONDS
            ),
            # Long enough that a test passes only if events remove entries.
            "PAT_VALIDATION_CACHE_SECONDS": "300",
            "PAT_NEGATIVE_CACHE_SECONDS": "300",
            "PAT_INTROSPECTION_CLIENTS": json.dumps(
                {INTROSPECTION_CLIENT: INTROSPECTION_SECRET}
            ),
        },
    )
    topics = [
        f"{topic_prefix}{name}"
        for name in (
            "settings.events",
            "settings.values",
            "profile.events",
            "tokens.events",
        )
    ]
    events, stop_collector = start_collector(infra.kafka_bootstrap, topics)
    api = Api(stack.urls)
    try:
        yield RunContext(infra, database, topic_prefix, stack, api, events, run_id)
    finally:
        api.close()
        stop_collector()
        stack.stop()
        asyncio.run(drop(infra.pg_dsn, database))


@pytest.fixture(scope="session")
def admin(run: RunContext) -> str:
    """A session of the first administrator, with tokens switched on."""
    session = run.api.sign_in("admin", ADMIN_PASSWORD)
    run.api.change_setting(session, "pat_enabled", True)
    run.api.wait_for_feature(session, enabled=True)
    return session


@dataclass
class Person:
    user: dict[str, Any]
    password: str
    session: str

    @property
    def id(self) -> str:
        return str(self.user["id"])


def make_person(
    run: RunContext, admin: str, role: str = "user", time_zone: str = "UTC"
) -> Person:
    name = f"{role[:4]}{uuid.uuid4().hex[:8]}"
    password = f"pw-{uuid.uuid4().hex}"
    USED_PASSWORDS.append(password)
    user = run.api.create_user(
        admin,
        username=name,
        display_name=f"{role.title()} {name}",
        email=f"{name}@{run.run_id}.example.org",
        password=password,
        role=role,
        time_zone=time_zone,
    )
    run.api.wait_for_user(admin, user["id"])
    return Person(user, password, run.api.sign_in(name, password))


@pytest.fixture
def person(run: RunContext, admin: str) -> Person:
    return make_person(run, admin)


def logs_dir(run: RunContext) -> Path:
    return next(iter(run.stack.logs.values())).parent


KafkaRecord = tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]


async def produce_records(
    bootstrap: str, topic: str, records: Sequence[KafkaRecord]
) -> None:
    """Send (key, value, headers) records to ``topic`` in order, each acknowledged."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for key, value, headers in records:
            await producer.send_and_wait(topic, value, key=key, headers=headers)
    finally:
        await producer.stop()
