"""Password policy, attribute values and image cleaning, without servers."""

from __future__ import annotations

import io

import pytest
from fastapi import HTTPException
from PIL import Image

from services.profile.attributes import check_value
from services.profile.images import MAX_STORED_SIDE, clean_image
from services.profile.passwords import policy_violation
from services.profile.signatures import render_text
from tests.images import encode, jpeg_with_gps, png_header_only, sample


@pytest.mark.parametrize(
    ("password", "reason"),
    [
        ("ada-lovelace", "username"),
        ("ADA-LOVELACE", "username"),
        ("ada@example.org", "email"),
        ("Ada", "local part"),
        ("passwordpassword", "common"),
        ("Qwertyuiop123", "common"),
    ],
)
def test_policy_rejects(password: str, reason: str) -> None:
    violation = policy_violation(password, "ada-lovelace", "ada@example.org")

    assert violation is not None
    assert reason in violation


def test_policy_accepts_uncommon_password() -> None:
    assert policy_violation("violet-lantern-harbour", "ada", "ada@x.org") is None


@pytest.mark.parametrize(
    ("value_type", "value"),
    [
        ("text", "Room 4.12"),
        ("number", -3),
        ("number", 2.5),
        ("date", "2024-02-29"),
        ("email", "ada@example.org"),
        ("yes_no", False),
    ],
)
def test_valid_attribute_values(value_type: str, value: object) -> None:
    assert check_value(value_type, value) == value


@pytest.mark.parametrize(
    ("value_type", "value"),
    [
        ("text", None),
        ("text", "tab\there"),
        ("number", float("nan")),
        ("number", float("inf")),
        ("number", False),
        ("date", "2023-02-29"),
        ("date", "2024-2-1"),
        ("email", "a@b"),
        ("yes_no", 0),
    ],
)
def test_invalid_attribute_values(value_type: str, value: object) -> None:
    with pytest.raises(HTTPException) as raised:
        check_value(value_type, value)

    assert raised.value.status_code == 422


def test_clean_image_strips_exif() -> None:
    cleaned = clean_image(jpeg_with_gps())
    image = Image.open(io.BytesIO(cleaned.data))

    assert cleaned.content_type == "image/jpeg"
    assert len(image.getexif()) == 0
    assert b"PhoneMaker" not in cleaned.data


def test_clean_image_applies_orientation() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to view
    cleaned = clean_image(encode(sample((64, 48)), "JPEG", exif=exif))

    assert (cleaned.width, cleaned.height) == (48, 64)


def test_clean_image_scales_large_jpeg() -> None:
    cleaned = clean_image(encode(sample((4000, 3000)), "JPEG"))

    assert max(cleaned.width, cleaned.height) == MAX_STORED_SIDE


def test_clean_image_keeps_transparency() -> None:
    cleaned = clean_image(encode(sample(mode="RGBA"), "PNG"))

    assert Image.open(io.BytesIO(cleaned.data)).mode == "RGBA"


# The profile service turns Pillow's warning into an error at import.
@pytest.mark.filterwarnings("error::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize(
    ("data", "status"),
    [
        (b"plain text", 415),
        (png_header_only(20_000, 20_000), 422),
        (png_header_only(6_000, 5_000), 422),
        (encode(sample((300, 300)), "PNG")[:200], 422),
    ],
)
def test_clean_image_rejects(data: bytes, status: int) -> None:
    with pytest.raises(HTTPException) as raised:
        clean_image(data)

    assert raised.value.status_code == status


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_pixel_limit_without_warning_filter() -> None:
    with pytest.raises(HTTPException) as raised:
        clean_image(png_header_only(6_000, 5_000))

    assert raised.value.status_code == 422
    assert "6000 x 5000" in str(raised.value.detail)


def test_render_text_is_png() -> None:
    rendered = render_text("Ada Lovelace")
    image = Image.open(io.BytesIO(rendered.data))

    assert image.format == "PNG"
    assert image.width > image.height
