"""HTTP routes of the tokens service."""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, Response, status
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    Field,
    StringConstraints,
)
from pydantic.types import StrictInt

from services.common.auth import Identity
from services.common.errors import invalid_field, not_found
from services.common.runtime import Caller, SessionCaller, require_admin
from services.common.text import check_printable
from services.tokens.service import TokenConflict, TokenQuery, TokenService

log = logging.getLogger(__name__)

MAX_EXPIRE_DAYS = 180
MAX_OVERLAP_SECONDS = 7 * 86400


TokenName = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=100),
    AfterValidator(check_printable),
]


class TokenCreate(BaseModel):
    name: TokenName = Field(description="What the token is for, such as 'CI pipeline'.")
    expire_in_days: StrictInt = Field(
        ge=1,
        le=MAX_EXPIRE_DAYS,
        description="Days until the token expires: a whole number from 1 to the "
        "administrator's maximum (at most 180).",
    )


class TokenRotate(BaseModel):
    expire_in_days: StrictInt = Field(
        ge=1,
        le=MAX_EXPIRE_DAYS,
        description="Days until the new value expires, counted from now: a whole "
        "number from 1 to the administrator's maximum (at most 180).",
    )
    overlap_seconds: StrictInt = Field(
        default=0,
        ge=0,
        le=MAX_OVERLAP_SECONDS,
        description="Seconds during which the previous value still works, at "
        "most 7 days and never past its old expiry. 0, the default, stops it "
        "at once.",
    )


class _TokenFields(BaseModel):
    id: uuid.UUID
    user_id: uuid.UUID
    name: str
    created_at: datetime
    rotated_at: datetime | None
    expires_at: datetime
    last_used_at: datetime | None
    last_used_address: str | None = Field(
        description="The client address of the last use, as the gateway saw it."
    )


class TokenOut(_TokenFields):
    state: Literal["active", "expired"]


class AdminTokenOut(_TokenFields):
    state: Literal["active", "expired", "deleted"]
    revoked_at: datetime | None
    revoked_by: uuid.UUID | None
    last_rejected_at: datetime | None
    last_rejection_reason: str | None = Field(
        description="Why the token was last rejected: deleted, expired, rotated, "
        "switched off, owner inactive or owner is a collaborator."
    )


class NewToken(TokenOut):
    token: str = Field(description="The token value; it is shown only this once.")


class FeatureOut(BaseModel):
    enabled: bool
    max_expire_days: int


class ClockAdvance(BaseModel):
    seconds: StrictInt = Field(ge=0, le=400 * 86400)


class ClockOut(BaseModel):
    now: datetime
    offset_seconds: float


class ScanOut(BaseModel):
    expiring: int
    expired: int


class CacheOut(BaseModel):
    enabled: bool
    entries: int
    hits: int
    misses: int


FEATURE_OFF = (
    "personal access tokens are switched off; an administrator can switch "
    "them on with the setting pat_enabled"
)


def build_router(service: TokenService) -> APIRouter:
    router = APIRouter(prefix="/v1")

    def token_fields(row: dict[str, Any]) -> dict[str, Any]:
        if row["revoked_at"] is not None:
            state = "deleted"
        elif service.clock.now() < row["expires_at"]:
            state = "active"
        else:
            state = "expired"
        address = row["last_used_address"]
        return {
            **row,
            "state": state,
            "last_used_address": None if address is None else str(address),
        }

    def token_out(row: dict[str, Any]) -> TokenOut:
        return TokenOut(**token_fields(row))

    def admin_token_out(row: dict[str, Any]) -> AdminTokenOut:
        return AdminTokenOut(**token_fields(row))

    async def require_feature() -> None:
        if not (await service.feature()).enabled:
            raise HTTPException(status.HTTP_403_FORBIDDEN, FEATURE_OFF)

    async def visible_token(token_id: uuid.UUID, caller: Identity) -> dict[str, Any]:
        # Someone else's token gets the same 404 as a missing one, so it does not leak.
        row = await service.get(token_id)
        if row is None or (row["user_id"] != caller.user_id and not caller.is_admin):
            raise not_found("token")
        return row

    @router.get("/tokens/feature", tags=["tokens"])
    async def feature(caller: Caller) -> FeatureOut:
        """Report whether tokens are switched on, and the longest expiry."""
        current = await service.feature()
        return FeatureOut(
            enabled=current.enabled, max_expire_days=current.max_expire_days
        )

    async def check_new_value_allowed(
        caller: Identity, expire_in_days: int, action: str
    ) -> None:
        """Raise unless the caller may get a new token value with this expiry."""
        if caller.role == "collaborator":
            raise HTTPException(
                status.HTTP_403_FORBIDDEN, f"collaborators cannot {action}"
            )
        current = await service.feature()
        if not current.enabled:
            raise HTTPException(status.HTTP_403_FORBIDDEN, FEATURE_OFF)
        if expire_in_days > current.max_expire_days:
            raise invalid_field(
                ("body", "expire_in_days"),
                f"must be at most {current.max_expire_days}, the administrator's "
                "maximum",
                "less_than_equal",
            )

    @router.post("/tokens", status_code=201, tags=["tokens"])
    async def create_token(
        new: TokenCreate, caller: SessionCaller, response: Response
    ) -> NewToken:
        """Create a token for the signed-in person; the value is shown once."""
        await check_new_value_allowed(
            caller, new.expire_in_days, "create personal access tokens"
        )
        try:
            row, value = await service.create(
                caller.user_id, new.name, new.expire_in_days
            )
        except TokenConflict as error:
            raise HTTPException(status.HTTP_409_CONFLICT, str(error)) from error
        response.headers["Cache-Control"] = "no-store"
        return NewToken(**token_out(row).model_dump(), token=value)

    @router.get("/tokens", tags=["tokens"])
    async def list_my_tokens(caller: Caller) -> list[TokenOut]:
        """List the caller's tokens, without their values."""
        await require_feature()
        return [token_out(row) for row in await service.list_for(caller.user_id)]

    def own_token_id(caller: Identity) -> uuid.UUID:
        if caller.method != "pat" or caller.token_id is None:
            raise HTTPException(
                status.HTTP_404_NOT_FOUND,
                "token not found: /v1/tokens/self is the personal access token "
                "in the Authorization header, and this request has none",
            )
        return caller.token_id

    @router.get("/tokens/self", tags=["tokens"])
    async def get_own_token(caller: Caller) -> TokenOut:
        """Show the token that authenticates this request."""
        row = await service.get(own_token_id(caller))
        if row is None:
            raise not_found("token")
        return token_out(row)

    @router.delete("/tokens/self", status_code=204, tags=["tokens"])
    async def delete_own_token(caller: Caller) -> None:
        """Delete the token that authenticates this request."""
        if not await service.revoke(own_token_id(caller), caller.user_id):
            raise not_found("token")

    @router.get("/tokens/{token_id}", tags=["tokens"])
    async def get_token(token_id: uuid.UUID, caller: Caller) -> TokenOut:
        """Show one of the caller's tokens."""
        if not caller.is_admin:
            await require_feature()
        return token_out(await visible_token(token_id, caller))

    @router.delete("/tokens/{token_id}", status_code=204, tags=["tokens"])
    async def delete_token(token_id: uuid.UUID, caller: Caller) -> None:
        """Delete one of the caller's tokens; it stops authenticating at once.

        With a token, a caller can delete only that token itself. Any other
        id gets 403 before the lookup, so the response reveals no token."""
        if caller.method == "pat" and caller.token_id != token_id:
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                "a personal access token can delete only itself; sign in to "
                "delete other tokens",
            )
        await visible_token(token_id, caller)
        if not await service.revoke(token_id, caller.user_id):
            raise not_found("token")

    @router.post("/tokens/{token_id}/rotate", tags=["tokens"])
    async def rotate_token(
        token_id: uuid.UUID,
        rotation: TokenRotate,
        caller: SessionCaller,
        response: Response,
    ) -> NewToken:
        """Give one of the caller's tokens a new value and expiry.

        The id and name stay. The new value is shown once. Only the owner can
        rotate, because the new value goes to the caller."""
        row = await service.get(token_id)
        if row is None or row["user_id"] != caller.user_id:
            raise not_found("token")
        await check_new_value_allowed(
            caller, rotation.expire_in_days, "use personal access tokens"
        )
        rotated = await service.rotate(
            token_id,
            rotation.expire_in_days,
            timedelta(seconds=rotation.overlap_seconds),
        )
        if rotated is None:
            raise HTTPException(
                status.HTTP_409_CONFLICT,
                "the token has expired or was deleted; create a new one instead",
            )
        new_row, value = rotated
        response.headers["Cache-Control"] = "no-store"
        return NewToken(**token_out(new_row).model_dump(), token=value)

    @router.get("/users/{user_id}/tokens", tags=["administration"])
    async def list_user_tokens(
        user_id: uuid.UUID,
        caller: Caller,
        state: Annotated[
            Literal["active", "expired", "deleted"] | None,
            Query(description="Only tokens in this state; by default all but deleted."),
        ] = None,
        expires_before: Annotated[
            AwareDatetime | None, Query(description="Only tokens expiring before.")
        ] = None,
        last_used_before: Annotated[
            AwareDatetime | None,
            Query(description="Only tokens last used before, or never used."),
        ] = None,
    ) -> list[AdminTokenOut]:
        """List any user's tokens, with why each was last rejected (administrators)."""
        require_admin(caller)
        if not await service.user_known(user_id):
            raise not_found("user")
        query = TokenQuery(state, expires_before, last_used_before)
        return [admin_token_out(row) for row in await service.list_for(user_id, query)]

    @router.delete(
        "/users/{user_id}/tokens/{token_id}", status_code=204, tags=["administration"]
    )
    async def delete_user_token(
        user_id: uuid.UUID, token_id: uuid.UUID, caller: SessionCaller
    ) -> None:
        """Delete any user's token (administrators only)."""
        require_admin(caller)
        row = await service.get(token_id)
        if row is None or row["user_id"] != user_id:
            raise not_found("token")
        if not await service.revoke(token_id, caller.user_id):
            raise not_found("token")

    return router


def build_dev_router(service: TokenService) -> APIRouter:
    """Routes that move time; mounted only when the environment is development."""
    router = APIRouter(prefix="/v1/dev", tags=["development"])

    @router.get("/clock")
    async def read_clock() -> ClockOut:
        return ClockOut(
            now=service.clock.now(),
            offset_seconds=service.clock.offset.total_seconds(),
        )

    @router.post("/clock/advance")
    async def advance_clock(advance: ClockAdvance) -> ClockOut:
        """Move the service's clock forward, then run an expiry scan."""
        await service.advance_clock(timedelta(seconds=advance.seconds))
        await service.scan()
        return await read_clock()

    @router.get("/validation-cache")
    async def read_validation_cache() -> CacheOut:
        """Report this process's validation cache counters."""
        cache = service.cache
        return CacheOut(
            enabled=cache.enabled,
            entries=len(cache),
            hits=cache.hits,
            misses=cache.misses,
        )

    @router.post("/expiry-scan")
    async def run_expiry_scan() -> ScanOut:
        """Run one expiry scan now."""
        result = await service.scan()
        return ScanOut(expiring=result.expiring, expired=result.expired)

    return router
