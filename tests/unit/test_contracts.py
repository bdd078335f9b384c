"""The committed contracts match the code, and the schema check bites."""

from __future__ import annotations

import subprocess
import sys
import uuid
from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

from services import contracts
from services.schema_compat import breaking_changes

ROOT = Path(__file__).resolve().parents[2]


class TokenV1(BaseModel):
    token_id: uuid.UUID
    name: str
    state: Literal["active", "expired"]
    expires_at: datetime


class AddedOptional(TokenV1):
    note: str | None = None


class AddedRequired(TokenV1):
    note: str


class Removed(BaseModel):
    token_id: uuid.UUID
    state: Literal["active", "expired"]
    expires_at: datetime


class Retyped(BaseModel):
    token_id: int
    name: str
    state: Literal["active", "expired"]
    expires_at: datetime


class Narrowed(BaseModel):
    token_id: uuid.UUID
    name: str
    state: Literal["active"]
    expires_at: datetime


class Widened(BaseModel):
    token_id: uuid.UUID
    name: str
    state: Literal["active", "expired", "revoked"]
    expires_at: datetime


def _changes(new: type[BaseModel]) -> list[str]:
    return breaking_changes(TokenV1.model_json_schema(), new.model_json_schema())


def test_optional_field_is_compatible() -> None:
    assert _changes(AddedOptional) == []


def test_wider_enum_is_compatible() -> None:
    assert _changes(Widened) == []


def test_removed_field_breaks() -> None:
    assert _changes(Removed) == ["field 'name' was removed"]


def test_retyped_field_breaks() -> None:
    assert _changes(Retyped) == ["field 'token_id' changed type"]


def test_required_field_breaks() -> None:
    assert _changes(AddedRequired) == [
        "new field 'note' is required; new fields must be optional"
    ]


def test_narrowed_enum_breaks() -> None:
    assert _changes(Narrowed) == ["field 'state' no longer allows expired"]


def test_committed_contracts_match_code() -> None:
    result = subprocess.run(
        [sys.executable, "scripts/contracts.py", "check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )

    assert result.returncode == 0, result.stdout + result.stderr


def test_public_contract_surface() -> None:
    assert set(contracts.__all__) == {
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
    }
    for name in contracts.__all__:
        assert hasattr(contracts, name)


def test_event_types_are_versioned() -> None:
    for ce_type in contracts.EVENT_TYPES:
        assert ce_type.startswith("org.pat.")
        assert ce_type.rsplit(".", 1)[-1] == "v1"
