"""Uploaded images: size limits, decoding by content, and re-encoding.

Limits of every image upload:

- at most ``MAX_UPLOAD_BYTES`` (5 MiB) in the request body, or 413;
- PNG, JPEG, GIF or WebP as detected from the bytes, whatever the declared
  content type or file name, or 415;
- at most ``MAX_PIXELS`` (25 million, a 6000 x 4000 photo has 24 million)
  pixels, checked from the header before the pixels are decoded, or 422.
  This stops decompression bombs: a few kilobytes of PNG can describe an
  image that needs gigabytes of memory once decoded.

What is kept is the decoded pixels only, turned upright by their EXIF
orientation, scaled down to at most ``MAX_STORED_SIDE`` pixels on the longer
side, and encoded anew. So EXIF (GPS position, camera serial number), XMP,
ICC profiles and comments are all dropped. JPEG stays JPEG and WebP stays
WebP, and PNG and GIF become PNG (a GIF keeps its first frame only).
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import warnings
from dataclasses import dataclass

from fastapi import HTTPException, Request, Response, status
from PIL import Image, ImageOps, UnidentifiedImageError

from services.common.errors import invalid_field

MAX_UPLOAD_BYTES = 5 * 1024 * 1024
MAX_PIXELS = 25_000_000
MAX_STORED_SIDE = 1024
ACCEPTED_FORMATS = ("PNG", "JPEG", "GIF", "WEBP")

# Pillow warns above MAX_IMAGE_PIXELS and raises DecompressionBombError above
# twice that (Pillow 13). The filter turns the warning into an exception too,
# so Image.open rejects any image over the limit before decoding its pixels.
Image.MAX_IMAGE_PIXELS = MAX_PIXELS
warnings.simplefilter("error", Image.DecompressionBombWarning)

BODY_LOCATION = ("body",)

# A decoded image takes up to 4 bytes per pixel, 100 MB at MAX_PIXELS, plus a
# copy when it is turned upright, so only this many are decoded at once.
DECODE_SLOTS = asyncio.Semaphore(2)


@dataclass(frozen=True)
class CleanImage:
    """A re-encoded image without metadata, ready to store and serve."""

    data: bytes
    content_type: str
    width: int
    height: int

    @property
    def etag(self) -> str:
        return '"' + hashlib.sha256(self.data).hexdigest()[:32] + '"'


def _too_large() -> HTTPException:
    return HTTPException(
        status.HTTP_413_CONTENT_TOO_LARGE,
        f"the upload is larger than {MAX_UPLOAD_BYTES} bytes; send a smaller image",
    )


async def read_upload(request: Request) -> bytes:
    """Read the raw request body, stopping as soon as it exceeds the limit."""
    content_type = request.headers.get("content-type", "")
    if content_type.lower().startswith("multipart/"):
        raise HTTPException(
            status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
            "send the image file itself as the request body, not a multipart form",
        )
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_UPLOAD_BYTES:
        raise _too_large()
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_UPLOAD_BYTES:
            raise _too_large()
    if not body:
        raise invalid_field(
            BODY_LOCATION,
            "the upload is empty; send the image file as the request body",
            "value_error.empty",
        )
    return bytes(body)


def _too_many_pixels(width: int, height: int) -> HTTPException:
    message = (
        f"the image has {width} x {height} pixels, more than the limit of"
        f" {MAX_PIXELS}; scale it down first"
    )
    return invalid_field(BODY_LOCATION, message, "value_error.too_many_pixels")


def _open(data: bytes) -> Image.Image:
    try:
        image = Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
    except UnidentifiedImageError as error:
        raise HTTPException(
            status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
            "the upload is not a PNG, JPEG, GIF or WebP image",
        ) from error
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        # Raised by Image.open, before the size is known to this code.
        message = f"the image has more than {MAX_PIXELS} pixels; scale it down first"
        raise invalid_field(
            BODY_LOCATION, message, "value_error.too_many_pixels"
        ) from error
    width, height = image.size
    if width * height > MAX_PIXELS:
        raise _too_many_pixels(width, height)
    return image


def clean_image(data: bytes) -> CleanImage:
    """Decode ``data``, check it, and re-encode it without metadata.

    Blocks while decoding, so call it in a worker thread.
    """
    image = _open(data)
    source_format = image.format
    # A JPEG can be decoded at 1/2 to 1/8 of its size, which saves memory.
    # The draft stays at least twice the stored size, so quality is kept.
    image.draft("RGB", (2 * MAX_STORED_SIDE, 2 * MAX_STORED_SIDE))
    try:
        image.load()
        upright = ImageOps.exif_transpose(image)
    except (OSError, SyntaxError, ValueError) as error:
        raise invalid_field(
            BODY_LOCATION,
            f"the {source_format} image is truncated or corrupt",
            "value_error.corrupt_image",
        ) from error

    upright.thumbnail((MAX_STORED_SIDE, MAX_STORED_SIDE))
    has_alpha = upright.mode in ("RGBA", "LA", "PA") or (
        upright.mode == "P" and "transparency" in upright.info
    )
    output_format = source_format if source_format in ("JPEG", "WEBP") else "PNG"
    mode = "RGBA" if has_alpha and output_format != "JPEG" else "RGB"
    converted = upright.convert(mode)
    # A new image from the raw pixels carries no info dictionary, so no
    # metadata can reach the encoder.
    pixels = Image.frombytes(mode, converted.size, converted.tobytes())

    output = io.BytesIO()
    if output_format == "JPEG":
        pixels.save(output, "JPEG", quality=90)
    elif output_format == "WEBP":
        pixels.save(output, "WEBP", quality=90)
    else:
        pixels.save(output, "PNG", optimize=True)
    return CleanImage(
        data=output.getvalue(),
        content_type=f"image/{output_format.lower()}",
        width=pixels.width,
        height=pixels.height,
    )


async def clean_upload(data: bytes) -> CleanImage:
    """Run ``clean_image`` in a worker thread, a limited number at a time."""
    async with DECODE_SLOTS:
        return await asyncio.to_thread(clean_image, data)


def image_response(
    request: Request, data: bytes, content_type: str, etag: str
) -> Response:
    """Serve a stored image, or 304 when the client's copy is current.

    ``Cache-Control: private, no-cache`` lets browsers keep the image but
    makes them revalidate it with ``If-None-Match`` on every use, so that
    they do not show a replaced or removed image from their cache.
    """
    headers = {
        "ETag": etag,
        "Cache-Control": "private, no-cache",
        "X-Content-Type-Options": "nosniff",
    }
    candidates = request.headers.get("if-none-match", "")
    if etag in (tag.strip() for tag in candidates.split(",")) or candidates == "*":
        return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers=headers)
    return Response(content=data, media_type=content_type, headers=headers)


# The OpenAPI description of an image request body, for the upload routes.
IMAGE_REQUEST_BODY = {
    "requestBody": {
        "required": True,
        "description": (
            f"The image file itself: PNG, JPEG, GIF or WebP, at most"
            f" {MAX_UPLOAD_BYTES} bytes and {MAX_PIXELS} pixels."
        ),
        "content": {
            media_type: {"schema": {"type": "string", "format": "binary"}}
            for media_type in ("image/png", "image/jpeg", "image/gif", "image/webp")
        },
    }
}
