"""Event contracts shared by every service.

Each event is a pydantic model. A field is never removed or retyped within a
version; a breaking change gets a new ``ce_type`` ending in a new version.
Events never carry secrets: no token value or hash, no password, no signature.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict

__all__ = [
    "EVENT_TYPES",
    "SPEC_VERSION",
    "Event",
    "PasswordChanged",
    "Role",
    "SettingChanged",
    "SignatureCleared",
    "SignatureSet",
    "TokenCreated",
    "TokenExpired",
    "TokenExpiring",
    "TokenRevoked",
    "TokenRotated",
    "Topics",
    "UserCreated",
    "UserDeactivated",
    "UserUpdated",
]

SPEC_VERSION = "1.0"

Role = Literal["administrator", "user", "collaborator"]
SettingValue = bool | int | str


class Topics:
    """Kafka topic names, each under a deployment-wide prefix such as ``pat.``."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.settings_events = f"{prefix}settings.events"
        self.settings_values = f"{prefix}settings.values"
        self.profile_events = f"{prefix}profile.events"
        self.tokens_events = f"{prefix}tokens.events"

    def dead_letters(self, consumer: str) -> str:
        return f"{self.prefix}{consumer}.dead-letters"


class Event(BaseModel):
    """Base of every event: its CloudEvents type and the Kafka key it uses."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    ce_type: ClassVar[str]
    source_service: ClassVar[str]

    def key(self) -> str:
        """Return the Kafka key, which is also the CloudEvents subject."""
        raise NotImplementedError


class SettingChanged(Event):
    """A setting has a new current value; also the record on the compacted topic."""

    ce_type: ClassVar[str] = "org.pat.settings.setting.changed.v1"
    source_service: ClassVar[str] = "settings"

    setting_key: str
    value: SettingValue
    previous_value: SettingValue | None
    changed_by: uuid.UUID | None
    changed_at: datetime

    def key(self) -> str:
        return self.setting_key


class _UserSnapshot(Event):
    source_service: ClassVar[str] = "profile"

    user_id: uuid.UUID
    username: str
    display_name: str
    email: str
    time_zone: str
    role: Role
    active: bool

    def key(self) -> str:
        return str(self.user_id)


class UserCreated(_UserSnapshot):
    """A user exists, with the profile fields other services copy."""

    ce_type: ClassVar[str] = "org.pat.profile.user.created.v1"


class UserUpdated(_UserSnapshot):
    """A user's copied fields changed; the event carries all of them."""

    ce_type: ClassVar[str] = "org.pat.profile.user.updated.v1"


class UserDeactivated(Event):
    """A user was deactivated: they cannot sign in, and their tokens stop working.

    A ``UserUpdated`` with ``active`` false is published with it, for
    consumers that keep the whole snapshot.
    """

    ce_type: ClassVar[str] = "org.pat.profile.user.deactivated.v1"
    source_service: ClassVar[str] = "profile"

    user_id: uuid.UUID
    deactivated_at: datetime

    def key(self) -> str:
        return str(self.user_id)


class PasswordChanged(Event):
    """A user changed their own password. It carries neither password nor hash."""

    ce_type: ClassVar[str] = "org.pat.profile.password.changed.v1"
    source_service: ClassVar[str] = "profile"

    user_id: uuid.UUID
    changed_at: datetime

    def key(self) -> str:
        return str(self.user_id)


class SignatureSet(Event):
    """A user set or replaced their signature, which the event does not carry."""

    ce_type: ClassVar[str] = "org.pat.profile.signature.set.v1"
    source_service: ClassVar[str] = "profile"

    user_id: uuid.UUID
    kind: Literal["text", "image"]
    set_at: datetime

    def key(self) -> str:
        return str(self.user_id)


class SignatureCleared(Event):
    """A user removed their signature."""

    ce_type: ClassVar[str] = "org.pat.profile.signature.cleared.v1"
    source_service: ClassVar[str] = "profile"

    user_id: uuid.UUID
    cleared_at: datetime

    def key(self) -> str:
        return str(self.user_id)


class _TokenEvent(Event):
    source_service: ClassVar[str] = "tokens"

    token_id: uuid.UUID
    user_id: uuid.UUID
    name: str
    expires_at: datetime

    def key(self) -> str:
        return str(self.user_id)


class TokenCreated(_TokenEvent):
    """A personal access token was created; its value is never in the event."""

    ce_type: ClassVar[str] = "org.pat.tokens.token.created.v1"

    created_at: datetime


class TokenRevoked(_TokenEvent):
    """A token was deleted by its owner or an administrator."""

    ce_type: ClassVar[str] = "org.pat.tokens.token.revoked.v1"

    revoked_at: datetime
    revoked_by: uuid.UUID


class TokenRotated(_TokenEvent):
    """A token got a new value and expiry; the previous value works until
    ``previous_valid_until`` (the rotation instant when there is no overlap)."""

    ce_type: ClassVar[str] = "org.pat.tokens.token.rotated.v1"

    rotated_at: datetime
    previous_valid_until: datetime


class TokenExpiring(_TokenEvent):
    """A token expires within seven days."""

    ce_type: ClassVar[str] = "org.pat.tokens.token.expiring.v1"


class TokenExpired(_TokenEvent):
    """A token has reached its expiry instant and no longer authenticates."""

    ce_type: ClassVar[str] = "org.pat.tokens.token.expired.v1"


EVENT_TYPES: dict[str, type[Event]] = {
    model.ce_type: model
    for model in (
        SettingChanged,
        UserCreated,
        UserUpdated,
        UserDeactivated,
        PasswordChanged,
        SignatureSet,
        SignatureCleared,
        TokenCreated,
        TokenRevoked,
        TokenRotated,
        TokenExpiring,
        TokenExpired,
    )
}


def event_payload(event: Event) -> dict[str, Any]:
    """Return the event's JSON-ready body."""
    return event.model_dump(mode="json")
