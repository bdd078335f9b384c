"""EventDispatcher.handle_batch against an in-memory inbox and broker."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest

from services.common import consumer
from services.common.cloudevents import Envelope, encode_headers, encode_value
from services.common.consumer import INSERT_INBOX_IDS, Delivery, EventDispatcher
from services.common.observability import correlation_id
from services.contracts import Event, TokenExpired, TokenExpiring, UserCreated

DEAD_LETTERS = "test.notifier.dead-letters"
TOPIC = "test.tokens.events"


@dataclass
class FakeConnection:
    """An in-memory inbox and effect list that drop a failed transaction's writes."""

    inbox: set[str] = field(default_factory=set)
    applied: list[str] = field(default_factory=list)
    _pending_inbox: set[str] = field(default_factory=set)
    _pending_applied: list[str] = field(default_factory=list)

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        self._pending_inbox, self._pending_applied = set(), []
        yield
        self.inbox |= self._pending_inbox
        self.applied += self._pending_applied

    def _insert(self, event_id: str) -> bool:
        if event_id in self.inbox or event_id in self._pending_inbox:
            return False
        self._pending_inbox.add(event_id)
        return True

    async def fetch(self, query: str, ids: list[str], _: list[str]) -> list[Any]:
        assert query == INSERT_INBOX_IDS
        return [{"event_id": i} for i in ids if self._insert(i)]

    async def fetchval(self, query: str, event_id: str, _: str) -> bool | None:
        assert query.startswith("INSERT INTO processed_events")
        return True if self._insert(event_id) else None

    def apply(self, label: str) -> None:
        self._pending_applied.append(label)


@dataclass
class FakePool:
    conn: FakeConnection

    @contextlib.asynccontextmanager
    async def acquire(self) -> AsyncIterator[FakeConnection]:
        yield self.conn


@dataclass
class FakeBroker:
    published: list[dict[str, str]] = field(default_factory=list)

    async def publish(self, _: bytes, topic: str, **options: Any) -> None:
        assert topic == DEAD_LETTERS
        self.published.append(options["headers"])


def token_event(kind: type[TokenExpiring] | type[TokenExpired], name: str) -> Event:
    return kind(
        token_id=uuid.uuid4(),
        user_id=uuid.uuid4(),
        name=name,
        expires_at=datetime.now(UTC) + timedelta(days=1),
    )


def user_event(name: str) -> Event:
    return UserCreated(
        user_id=uuid.uuid4(),
        username=name,
        email=f"{name}@example.org",
        display_name=name,
        role="user",
        time_zone="UTC",
        active=True,
    )


def record(event: Event, event_id: str | None = None, offset: int = 0) -> Any:
    headers = encode_headers(
        uuid.UUID(event_id) if event_id else uuid.uuid4(),
        event.ce_type,
        event.source_service,
        event.key(),
        datetime.now(UTC),
    )
    return SimpleNamespace(
        headers=[(k, v.encode()) for k, v in headers.items()]
        + [("correlation_id", b"trace-1")],
        value=encode_value(event.model_dump(mode="json")),
        key=event.key().encode(),
        topic=TOPIC,
        partition=0,
        offset=offset,
    )


def label_of(event: Any) -> str:
    return str(getattr(event, "name", None) or event.username)


@pytest.fixture(autouse=True)
def no_retry_pause(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(consumer, "RETRY_BASE_SECONDS", 0.0)


@dataclass
class Harness:
    conn: FakeConnection
    broker: FakeBroker
    dispatcher: EventDispatcher
    batches: list[list[str]]
    correlation_ids: list[str | None]


@pytest.fixture
def harness() -> Harness:
    conn, broker = FakeConnection(), FakeBroker()
    pool = FakePool(conn)
    dispatcher = EventDispatcher(
        "test",
        lambda: pool,  # type: ignore[arg-type, return-value]
        broker,  # type: ignore[arg-type]
        DEAD_LETTERS,
    )
    batches: list[list[str]] = []
    correlation_ids: list[str | None] = []

    async def apply_one(conn: Any, event: Any, _: Envelope) -> None:
        if label_of(event) == "poison":
            raise ValueError("the handler rejects this event")
        correlation_ids.append(correlation_id.get())
        conn.apply(label_of(event))

    async def apply_many(conn: Any, deliveries: list[Delivery]) -> None:
        labels = [label_of(d.event) for d in deliveries]
        if "poison" in labels:
            raise ValueError("the handler rejects this event")
        batches.append(labels)
        correlation_ids.extend(d.correlation_id for d in deliveries)
        for label in labels:
            conn.apply(label)

    dispatcher.register(TokenExpiring, apply_one, apply_many)
    dispatcher.register(TokenExpired, apply_one, apply_many)
    dispatcher.register(UserCreated, apply_one)
    return Harness(conn, broker, dispatcher, batches, correlation_ids)


async def handle(harness: Harness, records: list[Any]) -> None:
    """Hand over one batch and wait until it is applied."""
    await harness.dispatcher.handle_batch(SimpleNamespace(raw_message=tuple(records)))  # type: ignore[arg-type]
    await harness.dispatcher.drain()


async def test_batch_runs_keep_order(harness: Harness) -> None:
    records = [
        record(token_event(TokenExpiring, "a")),
        record(token_event(TokenExpired, "b")),
        record(user_event("c")),
        record(token_event(TokenExpired, "d")),
    ]
    await handle(harness, records)
    assert harness.conn.applied == ["a", "b", "c", "d"]
    assert harness.batches == [["a", "b"], ["d"]]
    assert harness.correlation_ids == ["trace-1"] * 4
    assert len(harness.conn.inbox) == 4


async def test_batch_skips_repeated_ids(harness: Harness) -> None:
    event_id = str(uuid.uuid4())
    first = record(token_event(TokenExpired, "once"), event_id)
    await handle(harness, [first, record(token_event(TokenExpired, "x"), event_id)])
    await handle(harness, [first])
    assert harness.conn.applied == ["once"]


async def test_batch_failure_falls_back(harness: Harness) -> None:
    records = [
        record(token_event(TokenExpired, "before")),
        record(token_event(TokenExpired, "poison"), offset=1),
        record(token_event(TokenExpired, "after")),
    ]
    await handle(harness, records)
    assert harness.conn.applied == ["before", "after"]
    assert harness.batches == []
    assert len(harness.broker.published) == 1
    dead = harness.broker.published[0]
    assert dead["dlt_offset"] == "1"
    assert "failed 3 times" in dead["dlt_error"]


async def test_batch_dead_letters_garbage(harness: Harness) -> None:
    garbage = record(token_event(TokenExpired, "garbage"), offset=7)
    garbage.value = b"{not json"
    await handle(harness, [garbage, record(token_event(TokenExpired, "good"))])
    assert harness.conn.applied == ["good"]
    assert [d["dlt_offset"] for d in harness.broker.published] == ["7"]
    assert harness.broker.published[0]["dlt_error"].startswith("invalid event")


@dataclass
class FakeConsumer:
    """Records the offsets committed and the partitions rewound."""

    commits: list[dict[tuple[str, int], int]] = field(default_factory=list)
    seeks: dict[tuple[str, int], int] = field(default_factory=dict)

    async def commit(self, offsets: dict[Any, int]) -> None:
        self.commits.append({(tp.topic, tp.partition): o for tp, o in offsets.items()})

    def seek(self, partition: Any, offset: int) -> None:
        self.seeks[(partition.topic, partition.partition)] = offset


def batch_message(records: list[Any], consumer: FakeConsumer) -> Any:
    return SimpleNamespace(raw_message=tuple(records), consumer=consumer)


def expired(name: str, offset: int, partition: int = 0) -> Any:
    item = record(token_event(TokenExpired, name), offset=offset)
    item.partition = partition
    return item


def hold_writes(harness: Harness) -> asyncio.Event:
    """Make the batch statements wait until the returned event is set."""
    release = asyncio.Event()
    original = harness.conn.fetch

    async def slow_fetch(*args: Any) -> list[Any]:
        await release.wait()
        return await original(*args)

    harness.conn.fetch = slow_fetch  # type: ignore[method-assign, assignment]
    return release


async def test_offsets_committed_after_write(harness: Harness) -> None:
    consumer = FakeConsumer()
    release = hold_writes(harness)
    first = [expired("a", 10), expired("b", 11), expired("c", 4, partition=1)]
    await harness.dispatcher.handle_batch(batch_message(first, consumer))
    await asyncio.sleep(0)

    assert harness.conn.applied == []
    assert consumer.commits == []

    release.set()
    await harness.dispatcher.drain()

    assert harness.conn.applied == ["a", "b", "c"]
    assert consumer.commits == [{(TOPIC, 0): 12, (TOPIC, 1): 5}]
    assert consumer.seeks == {}


async def test_next_batch_decoded_during_write(harness: Harness) -> None:
    consumer = FakeConsumer()
    release = hold_writes(harness)
    await harness.dispatcher.handle_batch(batch_message([expired("a", 1)], consumer))
    second = asyncio.create_task(
        harness.dispatcher.handle_batch(batch_message([expired("b", 2)], consumer))
    )
    await asyncio.sleep(0.01)

    assert not second.done()

    release.set()
    await second
    await harness.dispatcher.drain()

    assert harness.conn.applied == ["a", "b"]
    assert consumer.commits == [{(TOPIC, 0): 2}, {(TOPIC, 0): 3}]


async def test_outage_rewinds_both_batches(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(consumer, "OUTAGE_PAUSE_SECONDS", 0.0)
    fake = FakeConsumer()
    original = harness.conn.fetch
    outages = [OSError("connection refused")]

    async def failing_fetch(*args: Any) -> list[Any]:
        if outages:
            raise outages.pop()
        return await original(*args)

    harness.conn.fetch = failing_fetch  # type: ignore[method-assign, assignment]
    first = [expired("a", 5), expired("b", 6), expired("c", 9, partition=1)]
    second = [expired("d", 7), expired("e", 20, partition=2)]
    await harness.dispatcher.handle_batch(batch_message(first, fake))
    await harness.dispatcher.handle_batch(batch_message(second, fake))
    await harness.dispatcher.drain()

    assert harness.conn.applied == []
    assert fake.commits == []
    assert fake.seeks == {(TOPIC, 0): 5, (TOPIC, 1): 9, (TOPIC, 2): 20}

    await harness.dispatcher.handle_batch(batch_message(first + second, fake))
    await harness.dispatcher.drain()

    assert harness.conn.applied == ["a", "b", "c", "d", "e"]
    assert fake.commits == [{(TOPIC, 0): 8, (TOPIC, 1): 10, (TOPIC, 2): 21}]


async def test_idempotent_types_skip_inbox(harness: Harness) -> None:
    async def apply_many(conn: Any, deliveries: list[Delivery]) -> None:
        for delivery in deliveries:
            conn.apply(label_of(delivery.event))

    async def apply_one(conn: Any, event: Any, _: Envelope) -> None:
        conn.apply(label_of(event))

    harness.dispatcher.register(TokenExpired, apply_one, apply_many, idempotent=True)
    event_id = str(uuid.uuid4())
    once = record(token_event(TokenExpired, "once"), event_id)

    await handle(harness, [once, record(user_event("user"))])
    await handle(harness, [once])

    assert len(harness.conn.inbox) == 1
    assert event_id not in harness.conn.inbox
    # The handler gets the repeat: its own unique key has to skip it.
    assert harness.conn.applied == ["once", "user", "once"]
