"""Request and response bodies of the profile API."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from pydantic import AfterValidator, BaseModel, Field, StrictBool

from services.common.text import check_printable
from services.contracts import Role
from services.profile.attributes import AttributeWithValue
from services.profile.fields import (
    DisplayName,
    Email,
    Password,
    TimeZone,
    Username,
)


class UserOut(BaseModel):
    id: uuid.UUID
    username: str
    display_name: str
    email: str
    time_zone: str
    role: Role
    active: bool
    created_at: datetime
    updated_at: datetime


class ProfileOut(UserOut):
    """A user's profile details: whether a picture and a signature are set (never
    the signature itself), and every contact attribute with this user's value."""

    has_picture: bool
    has_signature: bool
    attributes: list[AttributeWithValue]


class UserCreate(BaseModel):
    username: Username
    display_name: DisplayName
    email: Email
    password: Password
    role: Role = "user"
    time_zone: TimeZone = "UTC"


class UserChange(BaseModel):
    display_name: DisplayName | None = None
    email: Email | None = None
    role: Role | None = None
    active: StrictBool | None = None
    time_zone: TimeZone | None = None


class MyProfileChange(BaseModel):
    display_name: DisplayName | None = None
    time_zone: TimeZone | None = None


class SignIn(BaseModel):
    username: Annotated[str, Field(max_length=64), AfterValidator(check_printable)]
    password: str = Field(max_length=1024)


class SessionOut(BaseModel):
    token: str = Field(description="The session token; send it as a Bearer token.")
    user_id: uuid.UUID
    expires_at: datetime


class CurrentSession(BaseModel):
    user_id: uuid.UUID
    username: str
    role: Role
    expires_at: datetime
