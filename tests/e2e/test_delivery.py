"""Delivery through the real broker: dead letters, redelivery, waiting users."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime, timedelta

from aiokafka import AIOKafkaConsumer

from infra import mailbox
from services.common.cloudevents import encode_headers, encode_value
from services.contracts import Event, PasswordChanged, TokenExpired, UserCreated
from services.notifier.emails import EXPIRED, token_email_key
from tests.conftest import RunContext, make_person, produce_records


def _record(
    event: Event, event_id: uuid.UUID, source: str
) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    headers = encode_headers(
        event_id, event.ce_type, source, event.key(), datetime.now(UTC)
    )
    value = encode_value(event.model_dump(mode="json"))
    return event.key().encode(), value, [(k, v.encode()) for k, v in headers.items()]


async def _read_all(bootstrap: str, topic: str, seconds: float) -> list[dict[str, str]]:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest"
    )
    await consumer.start()
    found: list[dict[str, str]] = []
    try:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=200)
            for records in batches.values():
                found.extend(
                    {k: v.decode(errors="replace") for k, v in r.headers}
                    for r in records
                )
            if found:
                await asyncio.sleep(0.5)
                batches = await consumer.getmany(timeout_ms=200)
                for records in batches.values():
                    found.extend(
                        {k: v.decode(errors="replace") for k, v in r.headers}
                        for r in records
                    )
                break
    finally:
        await consumer.stop()
    return found


def test_poison_record_dead_lettered_and_skipped(run: RunContext, admin: str) -> None:
    topic = f"{run.topic_prefix}profile.events"
    poison_headers = [
        ("ce_id", b"poison-1"),
        ("ce_type", UserCreated.ce_type.encode()),
        ("ce_source", b"/tests"),
        ("ce_specversion", b"1.0"),
        ("ce_time", datetime.now(UTC).isoformat().encode()),
    ]
    asyncio.run(
        produce_records(
            run.infra.kafka_bootstrap, topic, [(b"k", b"{not json", poison_headers)]
        )
    )

    # A user created after the poison record is still learned by both consumers.
    person = make_person(run, admin)
    dead_letters = asyncio.run(
        _read_all(
            run.infra.kafka_bootstrap, f"{run.topic_prefix}tokens.dead-letters", 20
        )
    )

    assert person.user["username"]
    poisoned = [h for h in dead_letters if h.get("ce_id") == "poison-1"]
    assert len(poisoned) == 1
    assert poisoned[0]["dlt_topic"] == topic
    assert "invalid event" in poisoned[0]["dlt_error"]


def test_redelivered_expiry_event_sends_one_email(run: RunContext, admin: str) -> None:
    person = make_person(run, admin)
    event = TokenExpired(
        token_id=uuid.uuid4(),
        user_id=uuid.UUID(person.id),
        name="replayed",
        expires_at=datetime.now(UTC) - timedelta(minutes=1),
    )
    same_id = uuid.uuid4()
    records = [
        _record(event, same_id, "tokens"),
        _record(event, same_id, "tokens"),  # the same event delivered again
        _record(event, uuid.uuid4(), "tokens"),  # republished with a new id
    ]

    asyncio.run(
        produce_records(
            run.infra.kafka_bootstrap, f"{run.topic_prefix}tokens.events", records
        )
    )
    mailbox.wait_for_messages(
        lambda m: person.user["email"] in m["rcpt_tos"], timeout=30
    )
    time.sleep(2)  # let any duplicate that would arrive arrive

    received = [
        m for m in mailbox.read_messages() if person.user["email"] in m["rcpt_tos"]
    ]
    assert len(received) == 1
    assert "replayed" in (received[0]["subject"] or "")
    # The database builds the batch's Message-ID as the one-event path does.
    assert received[0]["message_id"] == (
        f"<{token_email_key(EXPIRED, event.token_id, event.expires_at)}"
        "@notifier.pat.invalid>"
    )


def test_redelivered_password_event_sends_one_email(
    run: RunContext, admin: str
) -> None:
    person = make_person(run, admin)
    event = PasswordChanged(user_id=uuid.UUID(person.id), changed_at=datetime.now(UTC))
    same_id = uuid.uuid4()
    records = [_record(event, same_id, "profile"), _record(event, same_id, "profile")]

    asyncio.run(
        produce_records(
            run.infra.kafka_bootstrap, f"{run.topic_prefix}profile.events", records
        )
    )
    mailbox.wait_for_messages(
        lambda m: person.user["email"] in m["rcpt_tos"], timeout=30
    )
    time.sleep(2)  # let any duplicate that would arrive arrive

    received = [
        m for m in mailbox.read_messages() if person.user["email"] in m["rcpt_tos"]
    ]
    assert len(received) == 1
    assert received[0]["subject"] == "Your password was changed"
    assert received[0]["message_id"] == (
        f"<password-changed.{same_id}@notifier.pat.invalid>"
    )


def test_email_waits_for_unknown_user(run: RunContext, admin: str) -> None:
    user_id = uuid.uuid4()
    address = f"late-{user_id.hex[:8]}@{run.run_id}.example.org"
    expired = TokenExpired(
        token_id=uuid.uuid4(),
        user_id=user_id,
        name="early bird",
        expires_at=datetime.now(UTC),
    )
    user = UserCreated(
        user_id=user_id,
        username=f"late{user_id.hex[:8]}",
        display_name="Late Comer",
        email=address,
        time_zone="Europe/Berlin",
        role="user",
        active=True,
    )
    bootstrap = run.infra.kafka_bootstrap

    asyncio.run(
        produce_records(
            bootstrap,
            f"{run.topic_prefix}tokens.events",
            [_record(expired, uuid.uuid4(), "tokens")],
        )
    )
    time.sleep(2)
    before = [m for m in mailbox.read_messages() if address in m["rcpt_tos"]]
    asyncio.run(
        produce_records(
            bootstrap,
            f"{run.topic_prefix}profile.events",
            [_record(user, uuid.uuid4(), "profile")],
        )
    )
    [message] = mailbox.wait_for_messages(
        lambda m: address in m["rcpt_tos"], timeout=30
    )

    assert before == []
    assert "early bird" in (message["subject"] or "")
    assert "Europe/Berlin" in message["text"]
