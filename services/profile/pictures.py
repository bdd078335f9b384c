"""Profile pictures: set, replace, remove and serve.

The owner and administrators may set, read and remove a user's picture;
other users get 404. Under ``/v1/users/{id}`` a change needs a sign-in
session, as every administration request does. The upload is the raw request body (see
``services.profile.images`` for the checks), not a multipart form.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import asyncpg
from fastapi import APIRouter, Request, Response
from pydantic import BaseModel

from services.common.db import Pool
from services.common.errors import not_found
from services.common.runtime import Caller, Runtime, SessionCaller
from services.profile.access import require_self_or_admin
from services.profile.images import (
    IMAGE_REQUEST_BODY,
    clean_upload,
    image_response,
    read_upload,
)


class PictureOut(BaseModel):
    content_type: str
    width: int
    height: int
    etag: str
    updated_at: datetime


class PictureStore:
    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime

    @property
    def _pool(self) -> Pool:
        return self._runtime.pool

    async def has_picture(self, user_id: uuid.UUID) -> bool:
        found = await self._pool.fetchval(
            "SELECT true FROM pictures WHERE user_id = $1", user_id
        )
        return bool(found)

    async def set(self, user_id: uuid.UUID, upload: bytes) -> PictureOut:
        image = await clean_upload(upload)
        try:
            row = await self._pool.fetchrow(
                "INSERT INTO pictures (user_id, content_type, data, etag, width,"
                " height, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7)"
                " ON CONFLICT (user_id) DO UPDATE SET"
                " content_type = excluded.content_type, data = excluded.data,"
                " etag = excluded.etag, width = excluded.width,"
                " height = excluded.height, updated_at = excluded.updated_at"
                " RETURNING content_type, width, height, etag, updated_at",
                user_id,
                image.content_type,
                image.data,
                image.etag,
                image.width,
                image.height,
                datetime.now(UTC),
            )
        except asyncpg.ForeignKeyViolationError as error:
            raise not_found("user") from error
        assert row is not None, "INSERT ... RETURNING returns a row"
        return PictureOut(**dict(row))

    async def get(self, user_id: uuid.UUID) -> asyncpg.Record:
        row = await self._pool.fetchrow(
            "SELECT content_type, data, etag FROM pictures WHERE user_id = $1",
            user_id,
        )
        if row is None:
            raise not_found("picture")
        return row

    async def remove(self, user_id: uuid.UUID) -> None:
        removed = await self._pool.fetchval(
            "DELETE FROM pictures WHERE user_id = $1 RETURNING true", user_id
        )
        if not removed:
            raise not_found("picture")


def build_router(store: PictureStore) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["pictures"])

    async def upload(user_id: uuid.UUID, request: Request) -> PictureOut:
        body = await read_upload(request)
        return await store.set(user_id, body)

    async def serve(user_id: uuid.UUID, request: Request) -> Response:
        row = await store.get(user_id)
        return image_response(request, row["data"], row["content_type"], row["etag"])

    @router.put("/me/picture", openapi_extra=IMAGE_REQUEST_BODY)
    async def set_my_picture(request: Request, caller: Caller) -> PictureOut:
        """Set or replace the caller's picture from the image in the body."""
        return await upload(caller.user_id, request)

    @router.get("/me/picture", response_class=Response)
    async def my_picture(request: Request, caller: Caller) -> Response:
        """Return the caller's picture, with an ETag for revalidation."""
        return await serve(caller.user_id, request)

    @router.delete("/me/picture", status_code=204)
    async def remove_my_picture(caller: Caller) -> None:
        """Remove the caller's picture."""
        await store.remove(caller.user_id)

    @router.put("/users/{user_id}/picture", openapi_extra=IMAGE_REQUEST_BODY)
    async def set_user_picture(
        user_id: uuid.UUID, request: Request, caller: SessionCaller
    ) -> PictureOut:
        """Set or replace a user's picture (the user or an administrator)."""
        require_self_or_admin(caller, user_id)
        return await upload(user_id, request)

    @router.get("/users/{user_id}/picture", response_class=Response)
    async def user_picture(
        user_id: uuid.UUID, request: Request, caller: Caller
    ) -> Response:
        """Return a user's picture (the user or an administrator)."""
        require_self_or_admin(caller, user_id)
        return await serve(user_id, request)

    @router.delete("/users/{user_id}/picture", status_code=204)
    async def remove_user_picture(user_id: uuid.UUID, caller: SessionCaller) -> None:
        """Remove a user's picture (the user or an administrator)."""
        require_self_or_admin(caller, user_id)
        await store.remove(user_id)

    return router
