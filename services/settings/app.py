"""The settings service: wiring, HTTP routes and the seeding of defaults."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI
from faststream import FastStream
from pydantic import BaseModel, Field, SecretStr

from services.common.config import ServiceConfig
from services.common.db import Connection
from services.common.errors import invalid_field, not_found
from services.common.outbox import add_event
from services.common.runtime import Caller, Runtime, SessionCaller, require_admin
from services.contracts import SettingChanged
from services.settings.catalogue import (
    CATALOGUE,
    InvalidValue,
    SettingDefinition,
    SettingValue,
)

MIGRATIONS = Path(__file__).parent / "migrations"


class SettingsConfig(ServiceConfig):
    http_port: int = 8101
    database_url: SecretStr = SecretStr(
        "postgresql://settings_svc:settings-dev-only@127.0.0.1:15432/pat"
    )


class SettingOut(BaseModel):
    key: str
    section: str
    label: str
    description: str
    type: str
    minimum: int | None
    maximum: int | None
    default: SettingValue
    value: SettingValue
    updated_at: datetime | None
    updated_by: uuid.UUID | None


class SettingUpdate(BaseModel):
    value: Any = Field(description="The new value, of the setting's type.")


class SettingChangeOut(BaseModel):
    key: str
    previous_value: SettingValue | None
    value: SettingValue
    changed_by: uuid.UUID | None
    changed_at: datetime


def _setting_out(definition: SettingDefinition, row: Any) -> SettingOut:
    return SettingOut(
        key=definition.key,
        section=definition.section,
        label=definition.label,
        description=definition.description,
        type=definition.type,
        minimum=definition.minimum,
        maximum=definition.maximum,
        default=definition.default,
        value=json.loads(row["value"]) if row else definition.default,
        updated_at=row["updated_at"] if row else None,
        updated_by=row["updated_by"] if row else None,
    )


class SettingsService:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    async def publish_change(
        self, conn: Connection, event: SettingChanged, at: datetime
    ) -> None:
        topics = self.runtime.topics
        for topic in (topics.settings_events, topics.settings_values):
            await add_event(conn, self.runtime.schema, topic, event, at)

    async def seed_defaults(self) -> None:
        """Store and publish the default of every setting that has no value yet."""
        now = datetime.now(UTC)
        async with self.runtime.pool.acquire() as conn, conn.transaction():
            for definition in CATALOGUE.values():
                inserted = await conn.fetchval(
                    "INSERT INTO setting_values (key, value) VALUES ($1, $2::jsonb)"
                    " ON CONFLICT (key) DO NOTHING RETURNING true",
                    definition.key,
                    json.dumps(definition.default),
                )
                if inserted:
                    event = SettingChanged(
                        setting_key=definition.key,
                        value=definition.default,
                        previous_value=None,
                        changed_by=None,
                        changed_at=now,
                    )
                    await self.publish_change(conn, event, now)

    async def find(self, query: str | None) -> list[SettingOut]:
        rows = {
            row["key"]: row
            for row in await self.runtime.pool.fetch("SELECT * FROM setting_values")
        }
        return [
            _setting_out(definition, rows.get(key))
            for key, definition in CATALOGUE.items()
            if not query or definition.matches(query)
        ]

    async def change(
        self, definition: SettingDefinition, value: SettingValue, by: uuid.UUID
    ) -> SettingOut:
        now = datetime.now(UTC)
        async with self.runtime.pool.acquire() as conn, conn.transaction():
            current = await conn.fetchrow(
                "SELECT value FROM setting_values WHERE key = $1 FOR UPDATE",
                definition.key,
            )
            previous = json.loads(current["value"]) if current else definition.default
            if (
                current is None
                or previous != value
                or type(previous) is not type(value)
            ):
                await conn.execute(
                    "INSERT INTO setting_values (key, value, updated_at, updated_by)"
                    " VALUES ($1, $2::jsonb, $3, $4) ON CONFLICT (key) DO UPDATE"
                    " SET value = $2::jsonb, updated_at = $3, updated_by = $4",
                    definition.key,
                    json.dumps(value),
                    now,
                    by,
                )
                await conn.execute(
                    "INSERT INTO setting_changes"
                    " (key, previous_value, value, changed_by, changed_at)"
                    " VALUES ($1, $2::jsonb, $3::jsonb, $4, $5)",
                    definition.key,
                    json.dumps(previous),
                    json.dumps(value),
                    by,
                    now,
                )
                event = SettingChanged(
                    setting_key=definition.key,
                    value=value,
                    previous_value=previous,
                    changed_by=by,
                    changed_at=now,
                )
                await self.publish_change(conn, event, now)
            row = await conn.fetchrow(
                "SELECT * FROM setting_values WHERE key = $1", definition.key
            )
        return _setting_out(definition, row)

    async def history(self, key: str) -> list[SettingChangeOut]:
        rows = await self.runtime.pool.fetch(
            "SELECT * FROM setting_changes WHERE key = $1 ORDER BY id", key
        )
        return [
            SettingChangeOut(
                key=row["key"],
                previous_value=json.loads(row["previous_value"]),
                value=json.loads(row["value"]),
                changed_by=row["changed_by"],
                changed_at=row["changed_at"],
            )
            for row in rows
        ]


def _definition(key: str) -> SettingDefinition:
    definition = CATALOGUE.get(key)
    if definition is None:
        raise not_found(f"setting {key!r}")
    return definition


def build_router(service: SettingsService) -> APIRouter:
    router = APIRouter(prefix="/v1/settings", tags=["settings"])

    @router.get("")
    async def list_settings(caller: Caller, q: str | None = None) -> list[SettingOut]:
        """List settings; ``q`` keeps those whose key, section, label or
        description contain it, ignoring case."""
        return await service.find(q)

    @router.get("/{key}")
    async def get_setting(key: str, caller: Caller) -> SettingOut:
        """Show one setting with its rules and current value."""
        definition = _definition(key)
        settings = await service.find(None)
        return next(s for s in settings if s.key == definition.key)

    @router.put("/{key}")
    async def change_setting(
        key: str, update: SettingUpdate, caller: SessionCaller
    ) -> SettingOut:
        """Change a setting's value (administrators only)."""
        require_admin(caller)
        definition = _definition(key)
        try:
            value = definition.validate(update.value)
        except InvalidValue as error:
            raise invalid_field(("body", "value"), str(error), "value_error") from error
        return await service.change(definition, value, caller.user_id)

    @router.get("/{key}/history")
    async def setting_history(key: str, caller: Caller) -> list[SettingChangeOut]:
        """List a setting's changes, oldest first (administrators only)."""
        require_admin(caller)
        return await service.history(_definition(key).key)

    return router


def create_app(config: SettingsConfig | None = None) -> FastAPI:
    config = config or SettingsConfig()
    runtime = Runtime("settings", config, MIGRATIONS)
    for topic in (runtime.topics.settings_events, runtime.topics.settings_values):
        runtime.document_publisher(topic, (SettingChanged,))
    service = SettingsService(runtime)
    runtime.on_startup(service.seed_defaults)
    app = runtime.create_app("settings")
    app.include_router(build_router(service))
    return app


def main() -> None:
    config = SettingsConfig()
    app = create_app(config)
    app.state.runtime.serve(app)


def asyncapi_app() -> FastStream:
    """Build the application that ``faststream docs gen --factory`` documents."""
    app = create_app(SettingsConfig(environment="development"))
    runtime: Runtime = app.state.runtime
    return runtime.faststream_app()
