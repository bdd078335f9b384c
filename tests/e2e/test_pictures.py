"""Profile pictures: formats, limits, metadata and who may see them."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator

import httpx
import pytest
from PIL import Image

from tests.conftest import Person, RunContext, bearer, make_person
from tests.images import encode, jpeg_with_gps, png_header_only, sample


def put_picture(
    run: RunContext, credential: str, body: bytes, path: str = "/v1/me/picture"
) -> httpx.Response:
    return httpx.put(
        f"{run.stack.urls['profile']}{path}",
        content=body,
        headers={**bearer(credential), "Content-Type": "image/png"},
        timeout=30,
    )


def get_picture(
    run: RunContext, credential: str, path: str = "/v1/me/picture"
) -> httpx.Response:
    return httpx.get(f"{run.stack.urls['profile']}{path}", headers=bearer(credential))


@pytest.mark.parametrize(
    ("image_format", "content_type"),
    [
        ("PNG", "image/png"),
        ("JPEG", "image/jpeg"),
        ("GIF", "image/png"),
        ("WEBP", "image/webp"),
    ],
)
def test_picture_formats_accepted(
    run: RunContext, person: Person, image_format: str, content_type: str
) -> None:
    body = encode(sample(), image_format)

    response = put_picture(run, person.session, body)
    served = get_picture(run, person.session)

    assert response.status_code == 200
    assert response.json()["content_type"] == content_type
    assert served.status_code == 200
    assert served.headers["content-type"] == content_type
    assert Image.open(io.BytesIO(served.content)).size == (64, 48)


def test_picture_detected_by_content(run: RunContext, person: Person) -> None:
    body = encode(sample(), "JPEG")

    response = httpx.put(
        f"{run.stack.urls['profile']}/v1/me/picture",
        content=body,
        headers={**bearer(person.session), "Content-Type": "text/plain"},
    )

    assert response.status_code == 200
    assert response.json()["content_type"] == "image/jpeg"


def test_multipart_upload_rejected(run: RunContext, person: Person) -> None:
    response = httpx.put(
        f"{run.stack.urls['profile']}/v1/me/picture",
        files={"file": ("me.png", encode(sample(), "PNG"), "image/png")},
        headers=bearer(person.session),
    )

    assert response.status_code == 415
    assert "multipart" in response.json()["detail"]


def test_picture_metadata_stripped(run: RunContext, person: Person) -> None:
    response = put_picture(run, person.session, jpeg_with_gps())
    served = get_picture(run, person.session)
    image = Image.open(io.BytesIO(served.content))

    assert response.status_code == 200
    assert len(image.getexif()) == 0
    assert "exif" not in image.info
    assert "comment" not in image.info
    assert b"PhoneMaker" not in served.content
    assert b"secret place" not in served.content


def test_picture_scaled_down(run: RunContext, person: Person) -> None:
    response = put_picture(run, person.session, encode(sample((3000, 1500)), "PNG"))

    assert response.status_code == 200
    assert (response.json()["width"], response.json()["height"]) == (1024, 512)


def test_picture_etag_revalidation(run: RunContext, person: Person) -> None:
    put_picture(run, person.session, encode(sample(), "PNG"))
    first = get_picture(run, person.session)
    etag = first.headers["etag"]

    unchanged = httpx.get(
        f"{run.stack.urls['profile']}/v1/me/picture",
        headers={**bearer(person.session), "If-None-Match": etag},
    )
    put_picture(run, person.session, encode(sample((32, 32)), "PNG"))
    replaced = httpx.get(
        f"{run.stack.urls['profile']}/v1/me/picture",
        headers={**bearer(person.session), "If-None-Match": etag},
    )

    assert first.headers["cache-control"] == "private, no-cache"
    assert unchanged.status_code == 304
    assert replaced.status_code == 200
    assert replaced.headers["etag"] != etag


def test_picture_removed(run: RunContext, person: Person) -> None:
    put_picture(run, person.session, encode(sample(), "PNG"))
    with_picture = run.api.request("GET", "profile", "/v1/me", person.session)

    removed = httpx.delete(
        f"{run.stack.urls['profile']}/v1/me/picture", headers=bearer(person.session)
    )
    served = get_picture(run, person.session)
    without = run.api.request("GET", "profile", "/v1/me", person.session)

    assert with_picture["has_picture"] is True
    assert removed.status_code == 204
    assert served.status_code == 404
    assert without["has_picture"] is False


def truncated_png() -> bytes:
    whole = encode(sample((200, 200)), "PNG")
    return whole[: len(whole) // 2]


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        (b"", 422, "empty"),
        (b"just some text, not an image\n", 415, "not a PNG"),
        (b"GIF89a but nothing else", 415, "not a PNG"),
        (truncated_png(), 422, "truncated"),
        (png_header_only(20_000, 20_000), 422, "pixels"),
        (png_header_only(6_000, 5_000), 422, "pixels"),
    ],
    ids=["empty", "text", "fake-gif", "truncated", "20000x20000", "30-megapixel"],
)
def test_bad_picture_rejected(
    run: RunContext, person: Person, body: bytes, status: int, words: str
) -> None:
    put_picture(run, person.session, encode(sample(), "PNG"))
    before = get_picture(run, person.session).content

    response = put_picture(run, person.session, body)
    after = get_picture(run, person.session).content

    assert response.status_code == status
    assert words in response.text
    assert after == before


def test_huge_upload_rejected(run: RunContext, person: Person) -> None:
    body = os.urandom(20 * 1024 * 1024)

    response = put_picture(run, person.session, body)
    served = get_picture(run, person.session)

    assert response.status_code == 413
    assert "larger than" in response.json()["detail"]
    assert served.status_code == 404


def test_chunked_huge_upload_rejected(run: RunContext, person: Person) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(20):
            yield b"\x89PNG" + os.urandom(1024 * 1024)

    response = httpx.put(
        f"{run.stack.urls['profile']}/v1/me/picture",
        content=chunks(),
        headers=bearer(person.session),
        timeout=30,
    )

    assert response.status_code == 413


def test_admin_sets_users_picture(run: RunContext, admin: str, person: Person) -> None:
    path = f"/v1/users/{person.id}/picture"

    response = put_picture(run, admin, encode(sample(), "PNG"), path)
    own = get_picture(run, person.session)
    seen_by_admin = get_picture(run, admin, path)

    assert response.status_code == 200
    assert own.status_code == 200
    assert seen_by_admin.content == own.content


def test_other_users_picture_not_found(
    run: RunContext, admin: str, person: Person
) -> None:
    other = make_person(run, admin)
    put_picture(run, other.session, encode(sample(), "PNG"))
    path = f"/v1/users/{other.id}/picture"

    read = get_picture(run, person.session, path)
    replaced = put_picture(run, person.session, encode(sample((8, 8)), "PNG"), path)
    removed = httpx.delete(
        f"{run.stack.urls['profile']}{path}", headers=bearer(person.session)
    )
    still_there = get_picture(run, other.session)

    assert read.status_code == 404
    assert replaced.status_code == 404
    assert removed.status_code == 404
    assert still_there.status_code == 200
    assert Image.open(io.BytesIO(still_there.content)).size == (64, 48)
