"""Image files for upload tests, made in memory."""

from __future__ import annotations

import io
import struct
import zlib

from PIL import Image

GPS_IFD = 0x8825
GPS_LATITUDE = 2


def encode(image: Image.Image, image_format: str, **options: object) -> bytes:
    output = io.BytesIO()
    image.save(output, image_format, **options)
    return output.getvalue()


def sample(size: tuple[int, int] = (64, 48), mode: str = "RGB") -> Image.Image:
    image = Image.new(mode, size, "teal")
    image.paste("orange", (0, 0, size[0] // 2, size[1] // 2))
    return image


def jpeg_with_gps() -> bytes:
    """Return a JPEG whose EXIF has a GPS latitude and a comment."""
    exif = Image.Exif()
    exif[0x010F] = "PhoneMaker"  # Make
    exif.get_ifd(GPS_IFD)[GPS_LATITUDE] = (52.0, 31.0, 12.0)
    return encode(sample(), "JPEG", exif=exif, comment=b"secret place")


def png_header_only(width: int, height: int) -> bytes:
    """Return a small PNG that claims ``width`` x ``height`` pixels.

    Only a few rows of pixel data follow, so it stays a few hundred bytes:
    the shape of a decompression bomb, which is rejected before decoding.
    """

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data)
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    rows = zlib.compress(b"\x00" * (width + 1) * 4)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", rows)
        + chunk(b"IEND", b"")
    )
