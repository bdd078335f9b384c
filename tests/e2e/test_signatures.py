"""Signatures: typed or uploaded, readable by their owner only."""

from __future__ import annotations

import io
import os
import time
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.conftest import Person, RunContext, bearer
from tests.images import encode, jpeg_with_gps, png_header_only, sample


def set_text(run: RunContext, credential: str, text: object) -> httpx.Response:
    return httpx.put(
        f"{run.stack.urls['profile']}/v1/me/signature/text",
        json={"text": text},
        headers=bearer(credential),
    )


def set_image(run: RunContext, credential: str, body: bytes) -> httpx.Response:
    return httpx.put(
        f"{run.stack.urls['profile']}/v1/me/signature/image",
        content=body,
        headers={**bearer(credential), "Content-Type": "application/octet-stream"},
        timeout=30,
    )


def get(run: RunContext, credential: str, path: str) -> httpx.Response:
    return httpx.get(f"{run.stack.urls['profile']}{path}", headers=bearer(credential))


def signature_events(
    run: RunContext, suffix: str, user_id: str, count: int
) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 20
    while True:
        found = [
            e
            for e in run.events.of_type(suffix)
            if e["value"] and e["value"].get("user_id") == user_id
        ]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def test_text_signature_set_and_rendered(run: RunContext, person: Person) -> None:
    text = "Ada Lovelace, Analyst"

    response = set_text(run, person.session, text)
    described = get(run, person.session, "/v1/me/signature")
    rendered = get(run, person.session, "/v1/me/signature/image")
    image = Image.open(io.BytesIO(rendered.content))
    [event] = signature_events(run, "signature.set.v1", person.id, 1)

    assert response.status_code == 200
    assert described.json()["kind"] == "text"
    assert described.json()["text"] == text
    assert rendered.headers["content-type"] == "image/png"
    assert image.format == "PNG"
    assert image.width > image.height > 0
    assert set(event["value"]) == {"user_id", "kind", "set_at"}
    assert event["value"]["kind"] == "text"
    assert text.encode() not in event["raw"]


def test_image_signature_replaces_text(run: RunContext, person: Person) -> None:
    set_text(run, person.session, "First version")

    response = set_image(run, person.session, jpeg_with_gps())
    described = get(run, person.session, "/v1/me/signature")
    served = get(run, person.session, "/v1/me/signature/image")
    events = signature_events(run, "signature.set.v1", person.id, 2)

    assert response.status_code == 200
    assert described.json()["kind"] == "image"
    assert described.json()["text"] is None
    assert served.headers["content-type"] == "image/jpeg"
    assert b"PhoneMaker" not in served.content
    assert len(Image.open(io.BytesIO(served.content)).getexif()) == 0
    assert [e["value"]["kind"] for e in events] == ["text", "image"]


def test_signature_cleared(run: RunContext, person: Person) -> None:
    set_text(run, person.session, "Short-lived")
    with_signature = run.api.request("GET", "profile", "/v1/me", person.session)

    cleared = httpx.delete(
        f"{run.stack.urls['profile']}/v1/me/signature", headers=bearer(person.session)
    )
    again = httpx.delete(
        f"{run.stack.urls['profile']}/v1/me/signature", headers=bearer(person.session)
    )
    described = get(run, person.session, "/v1/me/signature")
    without = run.api.request("GET", "profile", "/v1/me", person.session)
    [event] = signature_events(run, "signature.cleared.v1", person.id, 1)

    assert with_signature["has_signature"] is True
    assert cleared.status_code == 204
    assert again.status_code == 404
    assert described.status_code == 404
    assert without["has_signature"] is False
    assert set(event["value"]) == {"user_id", "cleared_at"}


def test_admin_sees_only_signature_flag(
    run: RunContext, admin: str, person: Person
) -> None:
    text = "Private Mark 7"
    set_text(run, person.session, text)
    base = f"/v1/users/{person.id}"

    profile = get(run, admin, base)
    listing = get(run, admin, "/v1/users")
    described = get(run, admin, f"{base}/signature")
    image = get(run, admin, f"{base}/signature/image")
    replaced = httpx.put(
        f"{run.stack.urls['profile']}{base}/signature/text",
        json={"text": "Forged"},
        headers=bearer(admin),
    )
    cleared = httpx.delete(
        f"{run.stack.urls['profile']}{base}/signature", headers=bearer(admin)
    )
    own = get(run, person.session, "/v1/me/signature")

    assert profile.json()["has_signature"] is True
    assert text not in profile.text
    assert text not in listing.text
    assert described.status_code == 404
    assert image.status_code == 404
    assert replaced.status_code == 404
    assert cleared.status_code == 404
    assert own.json()["text"] == text
    assert all(text.encode() not in e["raw"] for e in run.events.records)


@pytest.mark.parametrize(
    "text",
    ["x" * 10_000, "line\nbreak", "bell\x07", "nul\x00", "rtl\u202eoverride", "", 7],
    ids=["10-kB", "newline", "bell", "nul", "bidi", "empty", "number"],
)
def test_bad_signature_text_rejected(
    run: RunContext, person: Person, text: object
) -> None:
    set_text(run, person.session, "Kept")

    response = set_text(run, person.session, text)
    described = get(run, person.session, "/v1/me/signature")

    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "text"]
    assert described.json()["text"] == "Kept"


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"", 422),
        (b"%PDF-1.7 not an image", 415),
        (encode(sample((200, 200)), "PNG")[:300], 422),
        (png_header_only(20_000, 20_000), 422),
        (os.urandom(20 * 1024 * 1024), 413),
    ],
    ids=["empty", "pdf", "truncated", "20000x20000", "20-MB"],
)
def test_bad_signature_image_rejected(
    run: RunContext, person: Person, body: bytes, status: int
) -> None:
    set_text(run, person.session, "Kept")

    response = set_image(run, person.session, body)
    described = get(run, person.session, "/v1/me/signature")

    assert response.status_code == status
    assert described.json()["text"] == "Kept"


def test_signature_change_needs_session(run: RunContext, person: Person) -> None:
    token = run.api.create_token(person.session, "no signatures", 5)

    response = set_text(run, token["token"], "Set by a robot")
    described = get(run, token["token"], "/v1/me/signature")

    assert response.status_code == 403
    assert described.status_code == 404
