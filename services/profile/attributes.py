"""Contact attributes: definitions by administrators, a value per user.

A definition has a name, a value type and whether users may edit their own
value. Administrators set any user's values. Removing a definition removes
its values (``ON DELETE CASCADE``). The type of a definition cannot change,
because the stored values would no longer match it.
"""

from __future__ import annotations

import json
import math
import re
import uuid
from datetime import UTC, date, datetime
from typing import Any, Literal

import asyncpg
from fastapi import APIRouter, HTTPException, status
from pydantic import BaseModel, Field, JsonValue, StrictBool

from services.common.db import Pool
from services.common.errors import invalid_field, not_found
from services.common.runtime import Caller, Runtime, SessionCaller, require_admin
from services.common.text import check_printable
from services.profile.access import require_self_or_admin
from services.profile.fields import EMAIL_PATTERN, DisplayName

ValueType = Literal["text", "number", "date", "email", "yes_no"]
TEXT_MAX_LENGTH = 500
DATE_PATTERN = re.compile(r"^\d{4}-\d{2}-\d{2}$")

VALUE_LOCATION = ("body", "value")


class AttributeDefinition(BaseModel):
    id: uuid.UUID
    name: str
    type: ValueType
    user_editable: bool


class AttributeWithValue(AttributeDefinition):
    value: JsonValue = None


class NewAttribute(BaseModel):
    name: DisplayName
    type: ValueType
    user_editable: StrictBool = False


class AttributeChange(BaseModel):
    name: DisplayName | None = None
    user_editable: StrictBool | None = None


class ValueChange(BaseModel):
    value: JsonValue = Field(default=None, description="null removes the value")


def _type_error(value_type: str, expected: str) -> HTTPException:
    message = f"must be {expected} for an attribute of type {value_type}"
    return invalid_field(VALUE_LOCATION, message, f"value_error.{value_type}")


def check_value(value_type: str, value: Any) -> Any:
    """Return ``value`` if it is valid for ``value_type``, else raise a 422."""
    if value_type == "yes_no":
        if not isinstance(value, bool):
            raise _type_error(value_type, "true or false")
        return value
    if value_type == "number":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _type_error(value_type, "a number")
        if not math.isfinite(value):
            raise _type_error(value_type, "a finite number")
        return value
    if not isinstance(value, str):
        raise _type_error(value_type, "a string")
    if value_type == "text":
        if len(value) > TEXT_MAX_LENGTH:
            raise _type_error(value_type, f"at most {TEXT_MAX_LENGTH} characters")
        try:
            return check_printable(value)
        except ValueError as error:
            raise _type_error(value_type, "text without control characters") from error
    if value_type == "date":
        try:
            if not DATE_PATTERN.match(value):
                raise ValueError(value)
            return date.fromisoformat(value).isoformat()
        except ValueError as error:
            raise _type_error(value_type, "a date such as 2026-12-31") from error
    if len(value) > 254 or not EMAIL_PATTERN.match(value):
        raise _type_error(value_type, "an email address such as ada@example.org")
    return value


def _definition(row: Any) -> AttributeDefinition:
    return AttributeDefinition(
        id=row["id"],
        name=row["name"],
        type=row["value_type"],
        user_editable=row["user_editable"],
    )


def _name_taken(name: str) -> HTTPException:
    message = f"an attribute named {name!r} already exists"
    return invalid_field(("body", "name"), message, "value_error.taken")


class AttributeStore:
    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime

    @property
    def _pool(self) -> Pool:
        return self._runtime.pool

    async def definitions(self) -> list[AttributeDefinition]:
        rows = await self._pool.fetch(
            "SELECT * FROM attribute_definitions ORDER BY lower(name)"
        )
        return [_definition(row) for row in rows]

    async def create(self, new: NewAttribute) -> AttributeDefinition:
        now = datetime.now(UTC)
        try:
            row = await self._pool.fetchrow(
                "INSERT INTO attribute_definitions (id, name, value_type,"
                " user_editable, created_at, updated_at)"
                " VALUES ($1, $2, $3, $4, $5, $5) RETURNING *",
                uuid.uuid4(),
                new.name,
                new.type,
                new.user_editable,
                now,
            )
        except asyncpg.UniqueViolationError as error:
            raise _name_taken(new.name) from error
        return _definition(row)

    async def change(
        self, attribute_id: uuid.UUID, change: AttributeChange
    ) -> AttributeDefinition:
        try:
            row = await self._pool.fetchrow(
                "UPDATE attribute_definitions SET name = coalesce($2, name),"
                " user_editable = coalesce($3, user_editable), updated_at = $4"
                " WHERE id = $1 RETURNING *",
                attribute_id,
                change.name,
                change.user_editable,
                datetime.now(UTC),
            )
        except asyncpg.UniqueViolationError as error:
            raise _name_taken(change.name or "") from error
        if row is None:
            raise not_found("attribute")
        return _definition(row)

    async def delete(self, attribute_id: uuid.UUID) -> None:
        deleted = await self._pool.fetchval(
            "DELETE FROM attribute_definitions WHERE id = $1 RETURNING true",
            attribute_id,
        )
        if not deleted:
            raise not_found("attribute")

    async def values_of(self, user_id: uuid.UUID) -> list[AttributeWithValue]:
        """List every definition with the user's value, or None where unset."""
        if not await self._pool.fetchval(
            "SELECT true FROM users WHERE id = $1", user_id
        ):
            raise not_found("user")
        rows = await self._pool.fetch(
            "SELECT d.*, v.value FROM attribute_definitions d"
            " LEFT JOIN attribute_values v"
            " ON v.attribute_id = d.id AND v.user_id = $1"
            " ORDER BY lower(d.name)",
            user_id,
        )
        return [
            AttributeWithValue(
                **_definition(row).model_dump(),
                value=json.loads(row["value"]) if row["value"] is not None else None,
            )
            for row in rows
        ]

    async def set_value(
        self,
        user_id: uuid.UUID,
        attribute_id: uuid.UUID,
        value: JsonValue,
        by_owner: bool,
    ) -> AttributeWithValue:
        """Set or, for a None ``value``, remove one user's value."""
        row = await self._pool.fetchrow(
            "SELECT * FROM attribute_definitions WHERE id = $1", attribute_id
        )
        if row is None:
            raise not_found("attribute")
        definition = _definition(row)
        if by_owner and not definition.user_editable:
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                f"only an administrator can change the attribute {definition.name!r}",
            )
        if value is None:
            await self._pool.execute(
                "DELETE FROM attribute_values WHERE user_id = $1 AND attribute_id = $2",
                user_id,
                attribute_id,
            )
            return AttributeWithValue(**definition.model_dump())
        checked = check_value(definition.type, value)
        try:
            await self._pool.execute(
                "INSERT INTO attribute_values"
                " (user_id, attribute_id, value, updated_at)"
                " VALUES ($1, $2, $3::jsonb, $4)"
                " ON CONFLICT (user_id, attribute_id) DO UPDATE"
                " SET value = excluded.value, updated_at = excluded.updated_at",
                user_id,
                attribute_id,
                json.dumps(checked),
                datetime.now(UTC),
            )
        except asyncpg.ForeignKeyViolationError as error:
            # The user does not exist, or the definition was removed meanwhile.
            raise not_found("user or attribute") from error
        return AttributeWithValue(**definition.model_dump(), value=checked)


def build_router(store: AttributeStore) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["attributes"])

    @router.get("/attributes")
    async def list_attributes(caller: Caller) -> list[AttributeDefinition]:
        """List the contact attributes that administrators have defined."""
        return await store.definitions()

    @router.post("/attributes", status_code=201)
    async def create_attribute(
        new: NewAttribute, caller: SessionCaller
    ) -> AttributeDefinition:
        """Define a contact attribute (administrators only)."""
        require_admin(caller)
        return await store.create(new)

    @router.patch("/attributes/{attribute_id}")
    async def change_attribute(
        attribute_id: uuid.UUID, change: AttributeChange, caller: SessionCaller
    ) -> AttributeDefinition:
        """Rename an attribute or change whether users may edit it."""
        require_admin(caller)
        return await store.change(attribute_id, change)

    @router.delete("/attributes/{attribute_id}", status_code=204)
    async def delete_attribute(attribute_id: uuid.UUID, caller: SessionCaller) -> None:
        """Remove an attribute definition and every user's value of it."""
        require_admin(caller)
        await store.delete(attribute_id)

    @router.get("/users/{user_id}/attributes")
    async def user_attributes(
        user_id: uuid.UUID, caller: Caller
    ) -> list[AttributeWithValue]:
        """List a user's attribute values (the user or an administrator)."""
        require_self_or_admin(caller, user_id)
        return await store.values_of(user_id)

    @router.put("/users/{user_id}/attributes/{attribute_id}")
    async def set_user_attribute(
        user_id: uuid.UUID,
        attribute_id: uuid.UUID,
        change: ValueChange,
        caller: SessionCaller,
    ) -> AttributeWithValue:
        """Set or remove a user's value (administrators, or the user if editable)."""
        require_self_or_admin(caller, user_id)
        return await store.set_value(
            user_id, attribute_id, change.value, by_owner=not caller.is_admin
        )

    @router.put("/me/attributes/{attribute_id}")
    async def set_my_attribute(
        attribute_id: uuid.UUID, change: ValueChange, caller: Caller
    ) -> AttributeWithValue:
        """Set or remove the caller's own value of a user-editable attribute."""
        return await store.set_value(
            caller.user_id, attribute_id, change.value, by_owner=not caller.is_admin
        )

    return router
