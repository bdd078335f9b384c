from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from services.common.cloudevents import (
    InvalidEvent,
    decode,
    encode_headers,
    encode_value,
)
from services.contracts import TokenExpired


def _record() -> tuple[list[tuple[str, bytes]], bytes]:
    event = TokenExpired(
        token_id=uuid.uuid4(),
        user_id=uuid.uuid4(),
        name="ci",
        expires_at=datetime(2027, 1, 1, tzinfo=UTC),
    )
    headers = encode_headers(
        uuid.uuid4(), event.ce_type, "tokens", event.key(), datetime.now(UTC)
    )
    value = encode_value(event.model_dump(mode="json"))
    return [(k, v.encode()) for k, v in headers.items()], value


def test_round_trip() -> None:
    headers, value = _record()

    envelope = decode(headers, value)

    assert isinstance(envelope.event, TokenExpired)
    assert envelope.source == "/services/tokens"
    assert envelope.subject == str(envelope.event.user_id)


def test_unknown_type_is_skipped_not_rejected() -> None:
    headers, value = _record()
    headers = [
        (k, b"org.pat.tokens.token.future.v9" if k == "ce_type" else v)
        for k, v in headers
    ]

    envelope = decode(headers, value)

    assert envelope.event is None


@pytest.mark.parametrize("missing", ["ce_id", "ce_type", "ce_source", "ce_specversion"])
def test_missing_attribute_rejected(missing: str) -> None:
    headers, value = _record()

    with pytest.raises(InvalidEvent, match=missing):
        decode([(k, v) for k, v in headers if k != missing], value)


@pytest.mark.parametrize("value", [b"{not json", b'{"token_id": 5}', None, b""])
def test_bad_value_rejected(value: bytes | None) -> None:
    headers, _ = _record()

    with pytest.raises(InvalidEvent):
        decode(headers, value)
