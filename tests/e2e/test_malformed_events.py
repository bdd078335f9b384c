"""Malformed records on every consumed topic: dead-lettered, and the rest flows."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import UTC, datetime

import pytest
from aiokafka import AIOKafkaConsumer

from infra import mailbox
from services.common.cloudevents import encode_headers, encode_value
from services.contracts import Event, SettingChanged, TokenExpired, UserCreated
from tests.conftest import RunContext, produce_records

Headers = list[tuple[str, bytes]]
MEGABYTE_VALUE = b'{"padding": "' + b"x" * 1_000_000 + b'"}'


def _headers(event_type: str, event_id: str | None = None) -> Headers:
    headers = encode_headers(
        uuid.uuid4(), event_type, "tests", "key", datetime.now(UTC)
    )
    if event_id is not None:
        headers["ce_id"] = event_id
    return [(k, v.encode()) for k, v in headers.items()]


def malformed_records(event_type: str) -> dict[str, tuple[bytes | None, Headers]]:
    """Return one record of each kind of garbage, by a short description."""
    without_id = [(k, v) for k, v in _headers(event_type) if k != "ce_id"]
    return {
        "invalid JSON": (b"{not json", _headers(event_type)),
        "wrong schema": (b'{"unexpected": 1}', _headers(event_type)),
        "unknown type": (b"{}", _headers("org.pat.nowhere.thing.happened.v1")),
        "missing ce_id": (b"{}", without_id),
        "1 MB value": (MEGABYTE_VALUE, _headers(event_type)),
        "tombstone": (None, _headers(event_type)),
    }


def valid_record(event: Event) -> tuple[bytes, Headers]:
    value = encode_value(event.model_dump(mode="json"))
    return value, _headers(event.ce_type)


async def produce(
    bootstrap: str, topic: str, key: str, records: list[tuple[bytes | None, Headers]]
) -> None:
    keyed = [(key.encode(), value, headers) for value, headers in records]
    await produce_records(bootstrap, topic, keyed)


async def dead_letter_errors(bootstrap: str, topic: str, key: str) -> list[str]:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest"
    )
    await consumer.start()
    errors: list[str] = []
    try:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=300)
            for records in batches.values():
                for record in records:
                    if record.key == key.encode():
                        errors.append(dict(record.headers)["dlt_error"].decode())
    finally:
        await consumer.stop()
    return errors


def _send_garbage_then(run: RunContext, topic: str, key: str, valid: Event) -> None:
    records = list(malformed_records(valid.ce_type).values())
    records.append(valid_record(valid))
    asyncio.run(
        produce(run.infra.kafka_bootstrap, f"{run.topic_prefix}{topic}", key, records)
    )


def _dead_letters(run: RunContext, service: str, key: str) -> list[str]:
    topic = f"{run.topic_prefix}{service}.dead-letters"
    return asyncio.run(dead_letter_errors(run.infra.kafka_bootstrap, topic, key))


def test_profile_events_garbage(run: RunContext, admin: str) -> None:
    user_id = uuid.uuid4()
    address = f"garbage-{user_id.hex[:8]}@{run.run_id}.example.org"
    user = UserCreated(
        user_id=user_id,
        username=f"garbage{user_id.hex[:8]}",
        display_name="After Garbage",
        email=address,
        time_zone="UTC",
        role="user",
        active=True,
    )

    _send_garbage_then(run, "profile.events", str(user_id), user)
    run.api.wait_for_user(admin, str(user_id))  # tokens applied the valid one
    expired = TokenExpired(
        token_id=uuid.uuid4(),
        user_id=user_id,
        name="after",
        expires_at=datetime.now(UTC),
    )
    asyncio.run(
        produce(
            run.infra.kafka_bootstrap,
            f"{run.topic_prefix}tokens.events",
            str(user_id),
            [valid_record(expired)],
        )
    )
    mailbox.wait_for_messages(lambda m: address in m["rcpt_tos"], timeout=30)

    for service in ("tokens", "notifier"):
        errors = _dead_letters(run, service, str(user_id))
        assert len(errors) == 6, (service, errors)
        assert any("unknown event type" in e for e in errors)
        assert any("ce_id is missing" in e for e in errors)
        assert any("no value" in e for e in errors)


def test_tokens_events_garbage(run: RunContext, admin: str) -> None:
    person_id = uuid.uuid4()
    address = f"tokgarbage-{person_id.hex[:8]}@{run.run_id}.example.org"
    user = UserCreated(
        user_id=person_id,
        username=f"tokgarbage{person_id.hex[:8]}",
        display_name="Token Garbage",
        email=address,
        time_zone="UTC",
        role="user",
        active=True,
    )
    asyncio.run(
        produce(
            run.infra.kafka_bootstrap,
            f"{run.topic_prefix}profile.events",
            str(person_id),
            [valid_record(user)],
        )
    )
    expired = TokenExpired(
        token_id=uuid.uuid4(),
        user_id=person_id,
        name="behind",
        expires_at=datetime.now(UTC),
    )

    _send_garbage_then(run, "tokens.events", str(person_id), expired)
    [message] = mailbox.wait_for_messages(
        lambda m: address in m["rcpt_tos"], timeout=30
    )

    assert "behind" in (message["subject"] or "")
    assert len(_dead_letters(run, "notifier", str(person_id))) == 6


@pytest.mark.usefixtures("admin")
def test_settings_values_garbage(run: RunContext, admin: str) -> None:
    changed = SettingChanged(
        setting_key="pat_max_expire_days",
        value=177,
        previous_value=180,
        changed_by=None,
        changed_at=datetime.now(UTC),
    )

    _send_garbage_then(run, "settings.values", "pat_max_expire_days", changed)
    try:
        deadline = time.monotonic() + 30
        maximum = None
        while time.monotonic() < deadline and maximum != 177:
            feature = run.api.request("GET", "tokens", "/v1/tokens/feature", admin)
            maximum = feature["max_expire_days"]
            time.sleep(0.2)
    finally:
        run.api.change_setting(admin, "pat_max_expire_days", 179)
        run.api.change_setting(admin, "pat_max_expire_days", 180)

    assert maximum == 177
    errors = _dead_letters(run, "tokens", "pat_max_expire_days")
    assert len(errors) == 6, errors
    assert json.dumps(errors)  # every error is text
