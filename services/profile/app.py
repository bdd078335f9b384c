"""The profile service: wiring, HTTP routes and the first administrator."""

from __future__ import annotations

import contextlib
import hashlib
import secrets
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import asyncpg
from fastapi import (
    APIRouter,
    FastAPI,
    Header,
    HTTPException,
    Request,
    Response,
    status,
)
from faststream import FastStream
from pydantic import Field, SecretStr

from services.common.auth import (
    CHALLENGE,
    PAT_PREFIX,
    SESSION_PREFIX,
    AuthenticationError,
    Identity,
    PatNotAllowed,
    bearer_credential,
    to_http_error,
)
from services.common.config import ServiceConfig
from services.common.db import Connection
from services.common.errors import invalid_field, not_found
from services.common.outbox import add_event
from services.common.runtime import Caller, Runtime, SessionCaller, require_admin
from services.contracts import (
    PasswordChanged,
    UserCreated,
    UserDeactivated,
    UserUpdated,
)
from services.profile import attributes, pictures, signatures
from services.profile.access import require_self_or_admin
from services.profile.attributes import AttributeStore
from services.profile.models import (
    CurrentSession,
    MyProfileChange,
    ProfileOut,
    SessionOut,
    SignIn,
    UserChange,
    UserCreate,
    UserOut,
)
from services.profile.passwords import PasswordChange, PasswordHashing, check_policy
from services.profile.pictures import PictureStore
from services.profile.signatures import SignatureStore
from services.profile.throttle import SignInThrottle

MIGRATIONS = Path(__file__).parent / "migrations"


class ProfileConfig(ServiceConfig):
    http_port: int = 8102
    database_url: SecretStr = SecretStr(
        "postgresql://profile_svc:profile-dev-only@127.0.0.1:15432/pat"
    )
    admin_username: str = "admin"
    admin_email: str = "admin@example.org"
    admin_password: SecretStr = SecretStr("admin-dev-only-password")
    session_hours: int = Field(default=12, ge=1, le=720)
    sign_in_max_failures_per_username: int = Field(default=5, ge=1)
    sign_in_max_failures_per_address: int = Field(default=50, ge=1)
    sign_in_window_seconds: int = Field(default=900, ge=1)
    password_hash_threads: int = Field(
        default=2,
        ge=1,
        le=64,
        description="Maximum number of password hashes and verifications that run "
        "at once. More wait in a queue. Each uses 64 MiB and up to 4 cores.",
    )
    password_hash_niceness: int = Field(
        default=10,
        ge=0,
        le=19,
        description="Added to the Linux nice value of the threads that hash "
        "passwords, so that the event loop of this process runs before them.",
    )


def _user_out(row: Any) -> UserOut:
    return UserOut(**{name: row[name] for name in UserOut.model_fields})


def _presents_pat(authorization: str | None) -> bool:
    """Tell whether an Authorization header carries a personal access token."""
    scheme, _, credential = (authorization or "").partition(" ")
    return scheme.lower() == "bearer" and credential.strip().startswith(PAT_PREFIX)


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class ProfileService:
    def __init__(self, runtime: Runtime, config: ProfileConfig) -> None:
        self.runtime = runtime
        self.config = config
        self.hashing = PasswordHashing(
            config.password_hash_threads, config.password_hash_niceness
        )
        # Verified when a username is unknown, so that sign-in takes as long
        # for unknown names as for wrong passwords.
        self._decoy_hash = self.hashing.hasher.hash(secrets.token_hex(16))
        self.attributes = AttributeStore(runtime)
        self.pictures = PictureStore(runtime)
        self.signatures = SignatureStore(runtime)

    async def hash_password(self, password: str) -> str:
        return await self.hashing.hash(password)

    async def verify_password(self, stored_hash: str, password: str) -> bool:
        return await self.hashing.verify(stored_hash, password)

    async def _publish_user(
        self, conn: Connection, row: Any, created: bool, at: datetime
    ) -> None:
        fields = {
            "user_id": row["id"],
            "username": row["username"],
            "display_name": row["display_name"],
            "email": row["email"],
            "time_zone": row["time_zone"],
            "role": row["role"],
            "active": row["active"],
        }
        event = UserCreated(**fields) if created else UserUpdated(**fields)
        topic = self.runtime.topics.profile_events
        await add_event(conn, self.runtime.schema, topic, event, at)

    async def create_user(self, new: UserCreate) -> UserOut:
        password_hash = await self.hash_password(new.password)
        now = datetime.now(UTC)
        async with self.runtime.pool.acquire() as conn, conn.transaction():
            try:
                row = await conn.fetchrow(
                    "INSERT INTO users (id, username, display_name, email, time_zone,"
                    " role, password_hash, created_at, updated_at)"
                    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8) RETURNING *",
                    uuid.uuid4(),
                    new.username,
                    new.display_name,
                    new.email,
                    new.time_zone,
                    new.role,
                    password_hash,
                    now,
                )
            except asyncpg.UniqueViolationError as error:
                message = f"username {new.username!r} is already taken"
                raise invalid_field(
                    ("body", "username"), message, "value_error.taken"
                ) from error
            await self._publish_user(conn, row, created=True, at=now)
        return _user_out(row)

    async def ensure_first_admin(self) -> None:
        """Create the administrator named in the configuration if missing."""
        exists = await self.runtime.pool.fetchval(
            "SELECT true FROM users WHERE lower(username) = lower($1)",
            self.config.admin_username,
        )
        if exists:
            return
        admin = UserCreate(
            username=self.config.admin_username,
            display_name="Administrator",
            email=self.config.admin_email,
            password=self.config.admin_password.get_secret_value(),
            role="administrator",
        )
        # A replica starting at the same time may create it first.
        with contextlib.suppress(HTTPException):
            await self.create_user(admin)

    async def get_user(self, user_id: uuid.UUID) -> UserOut:
        row = await self.runtime.pool.fetchrow(
            "SELECT * FROM users WHERE id = $1", user_id
        )
        if row is None:
            raise not_found("user")
        return _user_out(row)

    async def profile(self, user_id: uuid.UUID) -> ProfileOut:
        """Collect the user's profile details and contact attributes."""
        user = await self.get_user(user_id)
        values = await self.attributes.values_of(user_id)
        return ProfileOut(
            **user.model_dump(),
            has_picture=await self.pictures.has_picture(user_id),
            has_signature=await self.signatures.has_signature(user_id),
            attributes=values,
        )

    async def list_users(self) -> list[UserOut]:
        rows = await self.runtime.pool.fetch("SELECT * FROM users ORDER BY username")
        return [_user_out(row) for row in rows]

    async def change_user(self, user_id: uuid.UUID, changes: dict[str, Any]) -> UserOut:
        now = datetime.now(UTC)
        async with self.runtime.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "SELECT * FROM users WHERE id = $1 FOR UPDATE", user_id
            )
            if row is None:
                raise not_found("user")
            changed = {k: v for k, v in changes.items() if row[k] != v}
            if not changed:
                return _user_out(row)
            assignments = ", ".join(
                f"{name} = ${index}" for index, name in enumerate(changed, start=3)
            )
            row = await conn.fetchrow(
                f"UPDATE users SET updated_at = $2, {assignments}"
                " WHERE id = $1 RETURNING *",
                user_id,
                now,
                *changed.values(),
            )
            if changed.get("active") is False:
                await conn.execute(
                    "UPDATE sessions SET ended_at = $2"
                    " WHERE user_id = $1 AND ended_at IS NULL",
                    user_id,
                    now,
                )
                deactivated = UserDeactivated(user_id=user_id, deactivated_at=now)
                topic = self.runtime.topics.profile_events
                await add_event(conn, self.runtime.schema, topic, deactivated, now)
            await self._publish_user(conn, row, created=False, at=now)
        return _user_out(row)

    async def change_password(
        self, user_id: uuid.UUID, change: PasswordChange, session_token: str
    ) -> None:
        """Replace the caller's password and end their other sessions.

        The session that made the request stays signed in.
        """
        row = await self.runtime.pool.fetchrow(
            "SELECT username, email, password_hash FROM users WHERE id = $1", user_id
        )
        if row is None:
            raise not_found("user")
        if not await self.verify_password(
            row["password_hash"], change.current_password
        ):
            raise invalid_field(
                ("body", "current_password"),
                "the current password is wrong",
                "value_error.wrong_password",
            )
        check_policy("new_password", change.new_password, row["username"], row["email"])
        if change.new_password == change.current_password:
            raise invalid_field(
                ("body", "new_password"),
                "must differ from the current password",
                "value_error.unchanged",
            )
        new_hash = await self.hash_password(change.new_password)
        now = datetime.now(UTC)
        async with self.runtime.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "UPDATE users SET password_hash = $2, updated_at = $3 WHERE id = $1",
                user_id,
                new_hash,
                now,
            )
            await conn.execute(
                "UPDATE sessions SET ended_at = $3 WHERE user_id = $1"
                " AND token_digest <> $2 AND ended_at IS NULL",
                user_id,
                _digest(session_token),
                now,
            )
            event = PasswordChanged(user_id=user_id, changed_at=now)
            topic = self.runtime.topics.profile_events
            await add_event(conn, self.runtime.schema, topic, event, now)

    def throttle(self) -> SignInThrottle:
        return SignInThrottle(
            self.runtime.pool,
            self.config.sign_in_max_failures_per_username,
            self.config.sign_in_max_failures_per_address,
            timedelta(seconds=self.config.sign_in_window_seconds),
        )

    async def sign_in(self, username: str, password: str, address: str) -> SessionOut:
        throttle = self.throttle()
        attempted_at = datetime.now(UTC)
        await throttle.check(username.strip(), address, attempted_at)
        row = await self.runtime.pool.fetchrow(
            "SELECT id, password_hash, active FROM users"
            " WHERE lower(username) = lower($1)",
            username.strip(),
        )
        stored_hash = row["password_hash"] if row else self._decoy_hash
        verified = await self.verify_password(stored_hash, password)
        if row is None or not verified or not row["active"]:
            await throttle.record_failure(username.strip(), address, attempted_at)
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                "invalid username or password",
                headers=CHALLENGE,
            )
        await throttle.record_success(username.strip())
        token = SESSION_PREFIX + secrets.token_urlsafe(32)
        now = datetime.now(UTC)
        expires_at = now + timedelta(hours=self.config.session_hours)
        await self.runtime.pool.execute(
            "INSERT INTO sessions (id, user_id, token_digest, created_at, expires_at)"
            " VALUES ($1, $2, $3, $4, $5)",
            uuid.uuid4(),
            row["id"],
            _digest(token),
            now,
            expires_at,
        )
        return SessionOut(token=token, user_id=row["id"], expires_at=expires_at)

    async def current_session(self, token: str) -> CurrentSession:
        row = await self.runtime.pool.fetchrow(
            "SELECT u.id, u.username, u.role, s.expires_at"
            " FROM sessions s JOIN users u ON u.id = s.user_id"
            " WHERE s.token_digest = $1 AND s.ended_at IS NULL"
            " AND s.expires_at > now() AND u.active",
            _digest(token),
        )
        if row is None:
            raise AuthenticationError("the session is unknown or has ended")
        return CurrentSession(
            user_id=row["id"],
            username=row["username"],
            role=row["role"],
            expires_at=row["expires_at"],
        )

    async def validate_session(self, token: str) -> Identity:
        session = await self.current_session(token)
        return Identity(session.user_id, session.username, session.role, "session")

    async def end_session(self, token: str) -> None:
        await self.runtime.pool.execute(
            "UPDATE sessions SET ended_at = now()"
            " WHERE token_digest = $1 AND ended_at IS NULL",
            _digest(token),
        )


def build_router(service: ProfileService) -> APIRouter:
    router = APIRouter(prefix="/v1")

    @router.post("/sessions", status_code=201, tags=["sessions"])
    async def sign_in(
        credentials: SignIn, request: Request, response: Response
    ) -> SessionOut:
        """Sign in with username and password; returns a session token.

        Failed attempts are limited per username and per client address;
        past a limit the response is 429 with Retry-After. A request that
        presents a personal access token gets 403, valid or not."""
        response.headers["Cache-Control"] = "no-store"
        if _presents_pat(request.headers.get("authorization")):
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                "a personal access token cannot open a session; sign in with "
                "username and password and no Authorization header",
            )
        # NOTE: behind a proxy this is the proxy's address; per-address limits
        # then apply to everyone behind it.
        address = request.client.host if request.client else "unknown"
        return await service.sign_in(
            credentials.username, credentials.password, address
        )

    @router.get("/sessions/current", tags=["sessions"])
    async def current_session(
        authorization: Annotated[str | None, Header()] = None,
    ) -> CurrentSession:
        """Describe the session that signed this request."""
        # Every service calls this to check a session, so it looks the session
        # up once instead of through SessionCaller and again here. The
        # rejections are those of SessionCaller: 403 for a PAT, else 401.
        try:
            credential = bearer_credential(authorization)
            if credential.startswith(PAT_PREFIX):
                raise PatNotAllowed
            if not credential.startswith(SESSION_PREFIX):
                raise AuthenticationError("the credential is not a session")
            return await service.current_session(credential)
        except AuthenticationError as error:
            raise to_http_error(error) from error

    @router.delete("/sessions/current", status_code=204, tags=["sessions"])
    async def sign_out(
        caller: SessionCaller,
        authorization: Annotated[str | None, Header()] = None,
    ) -> None:
        """End the session that signed this request."""
        await service.end_session(bearer_credential(authorization))

    @router.get("/me", tags=["me"])
    async def my_profile(caller: Caller) -> ProfileOut:
        """Show the caller's profile with their contact attributes."""
        return await service.profile(caller.user_id)

    @router.patch("/me", tags=["me"])
    async def change_my_profile(change: MyProfileChange, caller: Caller) -> UserOut:
        """Change the caller's display name or time zone."""
        changes = change.model_dump(exclude_none=True)
        return await service.change_user(caller.user_id, changes)

    @router.post("/me/password", status_code=204, tags=["me"])
    async def change_my_password(
        change: PasswordChange,
        caller: SessionCaller,
        authorization: Annotated[str | None, Header()] = None,
    ) -> None:
        """Change the caller's password and sign out their other sessions."""
        session_token = bearer_credential(authorization)
        await service.change_password(caller.user_id, change, session_token)

    @router.post("/users", status_code=201, tags=["users"])
    async def create_user(new: UserCreate, caller: SessionCaller) -> UserOut:
        """Create a user (administrators only)."""
        require_admin(caller)
        check_policy("password", new.password, new.username, new.email)
        return await service.create_user(new)

    @router.get("/users", tags=["users"])
    async def list_users(caller: Caller) -> list[UserOut]:
        """List users (administrators only)."""
        require_admin(caller)
        return await service.list_users()

    @router.get("/users/{user_id}", tags=["users"])
    async def get_user(user_id: uuid.UUID, caller: Caller) -> ProfileOut:
        """Show a user to an administrator, or to the user themself.

        Other users get 404, so that they cannot tell which ids exist.
        """
        require_self_or_admin(caller, user_id)
        return await service.profile(user_id)

    @router.patch("/users/{user_id}", tags=["users"])
    async def change_user(
        user_id: uuid.UUID, change: UserChange, caller: SessionCaller
    ) -> UserOut:
        """Change a user's name, email, role, time zone or active state
        (administrators only)."""
        if not caller.is_admin and user_id != caller.user_id:
            raise not_found("user")
        require_admin(caller)
        changes = change.model_dump(exclude_none=True)
        if user_id == caller.user_id and (
            changes.get("active") is False
            or changes.get("role", "administrator") != "administrator"
        ):
            raise invalid_field(
                ("body",),
                "administrators cannot deactivate or demote themselves",
                "value_error.self",
            )
        return await service.change_user(user_id, changes)

    return router


def create_app(config: ProfileConfig | None = None) -> FastAPI:
    config = config or ProfileConfig()
    runtime = Runtime("profile", config, MIGRATIONS)
    runtime.document_publisher(
        runtime.topics.profile_events, (UserCreated, UserUpdated)
    )
    service = ProfileService(runtime, config)
    runtime.session_validator = service.validate_session
    runtime.on_startup(service.ensure_first_admin)
    app = runtime.create_app("profile")
    app.include_router(build_router(service))
    app.include_router(attributes.build_router(service.attributes))
    app.include_router(pictures.build_router(service.pictures))
    app.include_router(signatures.build_router(service.signatures))
    return app


def main() -> None:
    config = ProfileConfig()
    app = create_app(config)
    app.state.runtime.serve(app)


def asyncapi_app() -> FastStream:
    """Build the application that ``faststream docs gen --factory`` documents."""
    app = create_app(ProfileConfig(environment="development"))
    runtime: Runtime = app.state.runtime
    return runtime.faststream_app()
