"""CloudEvents 1.0 binary mode over Kafka: attributes in headers, JSON value."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from services.contracts import EVENT_TYPES, SPEC_VERSION, Event

CONTENT_TYPE = "application/json"


class InvalidEvent(Exception):
    """A Kafka record that is not a valid event of a known type; never retried."""


@dataclass(frozen=True)
class Envelope:
    """An event with the CloudEvents attributes it travelled with."""

    id: str
    type: str
    source: str
    subject: str
    time: datetime
    event: Event | None


def source_of(service: str) -> str:
    return f"/services/{service}"


def encode_headers(
    event_id: uuid.UUID, event_type: str, service: str, key: str, time: datetime
) -> dict[str, str]:
    """Return the Kafka headers that carry the CloudEvents attributes."""
    return {
        "ce_id": str(event_id),
        "ce_source": source_of(service),
        "ce_type": event_type,
        "ce_specversion": SPEC_VERSION,
        "ce_time": time.astimezone(UTC).isoformat(),
        "ce_subject": key,
        "content-type": CONTENT_TYPE,
    }


def encode_value(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()


def header_map(headers: Sequence[tuple[str, bytes]]) -> dict[str, str]:
    """Return a record's headers by name; raises ``InvalidEvent`` for one
    that is not UTF-8."""
    try:
        return {name: raw.decode() for name, raw in headers}
    except UnicodeDecodeError:
        for name, raw in headers:
            try:
                raw.decode()
            except UnicodeDecodeError as error:
                raise InvalidEvent(f"header {name} is not valid UTF-8") from error
        raise


def decode(headers: Sequence[tuple[str, bytes]], value: bytes | None) -> Envelope:
    """Parse a Kafka record into an envelope.

    An unknown ``ce_type`` gives an envelope whose ``event`` is None, so that a
    consumer can skip types added after it was built. Anything else that does
    not parse raises ``InvalidEvent``.
    """
    return decode_attributes(header_map(headers), value)


def decode_attributes(attributes: Mapping[str, str], value: bytes | None) -> Envelope:
    """Parse a record whose headers ``header_map`` has read, as ``decode``."""
    for required in ("ce_id", "ce_type", "ce_source", "ce_specversion"):
        if not attributes.get(required):
            raise InvalidEvent(f"header {required} is missing")
    if attributes["ce_specversion"] != SPEC_VERSION:
        version = attributes["ce_specversion"]
        raise InvalidEvent(f"ce_specversion {version!r} is not {SPEC_VERSION}")
    try:
        time = datetime.fromisoformat(attributes.get("ce_time", ""))
    except ValueError as error:
        raise InvalidEvent("header ce_time is not an ISO 8601 time") from error

    model = EVENT_TYPES.get(attributes["ce_type"])
    event: Event | None = None
    if model is not None:
        if value is None:
            raise InvalidEvent("the record has no value")
        try:
            event = model.model_validate_json(value)
        except ValidationError as error:
            type_name = attributes["ce_type"]
            message = f"value does not match {type_name}: {error.error_count()} errors"
            raise InvalidEvent(message) from error

    return Envelope(
        id=attributes["ce_id"],
        type=attributes["ce_type"],
        source=attributes["ce_source"],
        subject=attributes.get("ce_subject", ""),
        time=time,
        event=event,
    )
