"""Signatures: typed text or an uploaded image, readable by their owner only.

Every route is reachable as ``/v1/me/signature...`` and as
``/v1/users/{id}/signature...``, and the second returns 404 to anyone but the
user, administrators included. Administrators learn only whether a signature
is set (``has_signature`` in the profile). ``SignatureSet`` and
``SignatureCleared`` carry the kind and the time, never the signature.

Setting or clearing a signature needs a sign-in session, so a leaked personal
access token cannot change it. Typed text is 1 to 200 characters without
control or format characters. Images pass the checks of
``services.profile.images``.
"""

from __future__ import annotations

import asyncio
import io
import math
import uuid
from datetime import UTC, datetime
from typing import Annotated, Literal

import asyncpg
from fastapi import APIRouter, Request, Response
from PIL import Image, ImageDraw, ImageFont
from pydantic import AfterValidator, BaseModel, StringConstraints

from services.common.auth import Identity
from services.common.db import Connection, Pool
from services.common.errors import not_found
from services.common.outbox import add_event
from services.common.runtime import Caller, Runtime, SessionCaller
from services.common.text import check_printable
from services.contracts import SignatureCleared, SignatureSet
from services.profile.images import (
    IMAGE_REQUEST_BODY,
    CleanImage,
    clean_upload,
    image_response,
    read_upload,
)

TEXT_MAX_LENGTH = 200
FONT_SIZE = 36
MARGIN = 12

SignatureText = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=TEXT_MAX_LENGTH),
    AfterValidator(check_printable),
]


class TextSignature(BaseModel):
    text: SignatureText


class SignatureOut(BaseModel):
    kind: Literal["text", "image"]
    text: str | None = None
    updated_at: datetime


def render_text(text: str) -> CleanImage:
    """Render ``text`` as black on transparent PNG with Pillow's default font.

    TODO: ship a wider font, because Pillow 13's default draws only ASCII.
    """
    font = ImageFont.load_default(size=FONT_SIZE)
    measure = ImageDraw.Draw(Image.new("RGBA", (1, 1)))
    left, top, right, bottom = measure.textbbox((0, 0), text, font=font)
    size = (math.ceil(right - left) + 2 * MARGIN, math.ceil(bottom - top) + 2 * MARGIN)
    image = Image.new("RGBA", size, (255, 255, 255, 0))
    ImageDraw.Draw(image).text(
        (MARGIN - left, MARGIN - top), text, font=font, fill=(0, 0, 0, 255)
    )
    output = io.BytesIO()
    image.save(output, "PNG", optimize=True)
    return CleanImage(output.getvalue(), "image/png", image.width, image.height)


def require_owner(caller: Identity, user_id: uuid.UUID) -> None:
    if caller.user_id != user_id:
        raise not_found("signature")


class SignatureStore:
    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime

    @property
    def _pool(self) -> Pool:
        return self._runtime.pool

    async def has_signature(self, user_id: uuid.UUID) -> bool:
        found = await self._pool.fetchval(
            "SELECT true FROM signatures WHERE user_id = $1", user_id
        )
        return bool(found)

    async def _publish(
        self, conn: Connection, event: SignatureSet | SignatureCleared, at: datetime
    ) -> None:
        topic = self._runtime.topics.profile_events
        await add_event(conn, self._runtime.schema, topic, event, at)

    async def set_text(self, user_id: uuid.UUID, text: str) -> SignatureOut:
        return await self._store(user_id, "text", text, None)

    async def set_image(self, user_id: uuid.UUID, upload: bytes) -> SignatureOut:
        image = await clean_upload(upload)
        return await self._store(user_id, "image", None, image)

    async def _store(
        self,
        user_id: uuid.UUID,
        kind: Literal["text", "image"],
        text: str | None,
        image: CleanImage | None,
    ) -> SignatureOut:
        now = datetime.now(UTC)
        async with self._pool.acquire() as conn, conn.transaction():
            try:
                await conn.execute(
                    "INSERT INTO signatures (user_id, kind, text, content_type, data,"
                    " etag, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7)"
                    " ON CONFLICT (user_id) DO UPDATE SET kind = excluded.kind,"
                    " text = excluded.text, content_type = excluded.content_type,"
                    " data = excluded.data, etag = excluded.etag,"
                    " updated_at = excluded.updated_at",
                    user_id,
                    kind,
                    text,
                    image.content_type if image else None,
                    image.data if image else None,
                    image.etag if image else None,
                    now,
                )
            except asyncpg.ForeignKeyViolationError as error:
                raise not_found("user") from error
            event = SignatureSet(user_id=user_id, kind=kind, set_at=now)
            await self._publish(conn, event, now)
        return SignatureOut(kind=kind, text=text, updated_at=now)

    async def get(self, user_id: uuid.UUID) -> asyncpg.Record:
        row = await self._pool.fetchrow(
            "SELECT * FROM signatures WHERE user_id = $1", user_id
        )
        if row is None:
            raise not_found("signature")
        return row

    async def image(self, user_id: uuid.UUID) -> tuple[bytes, str, str]:
        """Return the image's bytes, content type and ETag.

        A typed signature is rendered as a PNG on each request.
        """
        row = await self.get(user_id)
        if row["kind"] == "text":
            rendered = await asyncio.to_thread(render_text, row["text"])
            return rendered.data, rendered.content_type, rendered.etag
        return row["data"], row["content_type"], row["etag"]

    async def clear(self, user_id: uuid.UUID) -> None:
        now = datetime.now(UTC)
        async with self._pool.acquire() as conn, conn.transaction():
            removed = await conn.fetchval(
                "DELETE FROM signatures WHERE user_id = $1 RETURNING true", user_id
            )
            if not removed:
                raise not_found("signature")
            event = SignatureCleared(user_id=user_id, cleared_at=now)
            await self._publish(conn, event, now)


def build_router(store: SignatureStore) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["signatures"])

    @router.get("/users/{user_id}/signature")
    async def user_signature(user_id: uuid.UUID, caller: Caller) -> SignatureOut:
        """Describe the caller's signature, with its text if it is typed."""
        require_owner(caller, user_id)
        row = await store.get(user_id)
        return SignatureOut(
            kind=row["kind"], text=row["text"], updated_at=row["updated_at"]
        )

    @router.get("/users/{user_id}/signature/image", response_class=Response)
    async def user_signature_image(
        user_id: uuid.UUID, request: Request, caller: Caller
    ) -> Response:
        """Return the caller's signature as an image, typed text rendered as PNG."""
        require_owner(caller, user_id)
        data, content_type, etag = await store.image(user_id)
        return image_response(request, data, content_type, etag)

    @router.put("/users/{user_id}/signature/text")
    async def set_text_signature(
        user_id: uuid.UUID, signature: TextSignature, caller: SessionCaller
    ) -> SignatureOut:
        """Set or replace the caller's signature with typed text."""
        require_owner(caller, user_id)
        return await store.set_text(user_id, signature.text)

    @router.put("/users/{user_id}/signature/image", openapi_extra=IMAGE_REQUEST_BODY)
    async def set_image_signature(
        user_id: uuid.UUID, request: Request, caller: SessionCaller
    ) -> SignatureOut:
        """Set or replace the caller's signature with the image in the body."""
        require_owner(caller, user_id)
        body = await read_upload(request)
        return await store.set_image(user_id, body)

    @router.delete("/users/{user_id}/signature", status_code=204)
    async def clear_signature(user_id: uuid.UUID, caller: SessionCaller) -> None:
        """Remove the caller's signature."""
        require_owner(caller, user_id)
        await store.clear(user_id)

    @router.get("/me/signature")
    async def my_signature(caller: Caller) -> SignatureOut:
        """Describe the caller's signature, with its text if it is typed."""
        return await user_signature(caller.user_id, caller)

    @router.get("/me/signature/image", response_class=Response)
    async def my_signature_image(request: Request, caller: Caller) -> Response:
        """Return the caller's signature as an image, typed text rendered as PNG."""
        return await user_signature_image(caller.user_id, request, caller)

    @router.put("/me/signature/text")
    async def set_my_text_signature(
        signature: TextSignature, caller: SessionCaller
    ) -> SignatureOut:
        """Set or replace the caller's signature with typed text."""
        return await set_text_signature(caller.user_id, signature, caller)

    @router.put("/me/signature/image", openapi_extra=IMAGE_REQUEST_BODY)
    async def set_my_image_signature(
        request: Request, caller: SessionCaller
    ) -> SignatureOut:
        """Set or replace the caller's signature with the image in the body."""
        return await set_image_signature(caller.user_id, request, caller)

    @router.delete("/me/signature", status_code=204)
    async def clear_my_signature(caller: SessionCaller) -> None:
        """Remove the caller's signature."""
        await clear_signature(caller.user_id, caller)

    return router
