"""Authentication of API callers, done by every service for every request.

A caller presents ``Authorization: Bearer <credential>``. A sign-in session
(prefix ``ecses_``) is checked with the profile service, a personal access
token (prefix ``ecpat_``) with the tokens service. No service trusts an
identity header sent by a client.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

import aiohttp
from fastapi import HTTPException, status

from services.contracts import Role

SESSION_PREFIX = "ecses_"
PAT_PREFIX = "ecpat_"

CHALLENGE = {"WWW-Authenticate": "Bearer"}


@dataclass(frozen=True)
class Identity:
    """The person behind a request, and how they proved it."""

    user_id: uuid.UUID
    username: str
    role: Role
    method: Literal["session", "pat"]
    token_id: uuid.UUID | None = None

    @property
    def is_admin(self) -> bool:
        return self.role == "administrator"


class AuthenticationError(Exception):
    """The credential is missing, malformed, unknown or no longer valid."""


class ServiceUnavailable(Exception):
    """The service that checks the credential could not be reached."""


CredentialValidator = Callable[[str], Awaitable[Identity]]
PatValidator = Callable[[str, str | None], Awaitable[Identity]]
"""Checks a PAT; the second argument is the caller's address, if known."""


def bearer_credential(authorization: str | None) -> str:
    """Return the credential of a ``Bearer`` Authorization header."""
    if not authorization:
        raise AuthenticationError("the Authorization header is missing")
    scheme, _, credential = authorization.partition(" ")
    credential = credential.strip()
    if scheme.lower() != "bearer" or not credential:
        raise AuthenticationError("the Authorization header is not 'Bearer <token>'")
    if not credential.isascii() or not credential.isprintable():
        raise AuthenticationError("the credential contains invalid characters")
    return credential


class Authenticator:
    """Resolves a bearer credential to an ``Identity``."""

    def __init__(
        self,
        client: aiohttp.ClientSession,
        profile_url: str,
        tokens_url: str,
        session_validator: CredentialValidator | None = None,
        pat_validator: PatValidator | None = None,
    ) -> None:
        self._client = client
        self._profile_url = profile_url.rstrip("/")
        self._tokens_url = tokens_url.rstrip("/")
        self._session_validator = session_validator or self._validate_session
        self._pat_validator = pat_validator or self._validate_pat_remotely

    async def authenticate(
        self,
        authorization: str | None,
        allow_pat: bool = True,
        client_address: str | None = None,
    ) -> Identity:
        """Resolve the credential; ``client_address`` is recorded as a PAT's use."""
        credential = bearer_credential(authorization)
        if credential.startswith(SESSION_PREFIX):
            return await self._session_validator(credential)
        if credential.startswith(PAT_PREFIX):
            if not allow_pat:
                raise PatNotAllowed
            return await self._pat_validator(credential, client_address)
        raise AuthenticationError("the credential is not a session or a token")

    async def _validate_session(self, credential: str) -> Identity:
        answer = await self._get(f"{self._profile_url}/v1/sessions/current", credential)
        if answer.status != status.HTTP_200_OK:
            raise AuthenticationError("the session is unknown or has ended")
        body = json.loads(answer.body)
        return Identity(
            user_id=uuid.UUID(body["user_id"]),
            username=body["username"],
            role=body["role"],
            method="session",
        )

    async def _validate_pat_remotely(
        self, credential: str, client_address: str | None
    ) -> Identity:
        # The tokens service records the rightmost X-Forwarded-For entry as
        # the address of the token's last use.
        extra = {"X-Forwarded-For": client_address} if client_address else {}
        answer = await self._get(
            f"{self._tokens_url}/v1/auth/validate", credential, extra
        )
        if "temporarily_unavailable" in answer.challenge:
            # The tokens service could not check the token (database down).
            raise ServiceUnavailable("the tokens service could not check the token")
        if answer.status != status.HTTP_200_OK:
            raise AuthenticationError("the token is not valid")
        body = json.loads(answer.body)
        return Identity(
            user_id=uuid.UUID(body["user_id"]),
            username=body["username"],
            role=body["role"],
            method="pat",
            token_id=uuid.UUID(body["token_id"]),
        )

    async def _get(
        self, url: str, credential: str, extra: dict[str, str] | None = None
    ) -> _Answer:
        headers = {"Authorization": f"Bearer {credential}", **(extra or {})}
        try:
            async with self._client.get(url, headers=headers) as response:
                return _Answer(
                    response.status,
                    response.headers.get("WWW-Authenticate", ""),
                    await response.read(),
                )
        except (aiohttp.ClientError, TimeoutError) as error:
            raise ServiceUnavailable(f"{url} could not be reached") from error


@dataclass(frozen=True)
class _Answer:
    """The status, challenge and body of a credential check's response."""

    status: int
    challenge: str
    body: bytes


class PatNotAllowed(AuthenticationError):
    """A personal access token was presented where only a session is accepted."""


def to_http_error(error: Exception) -> HTTPException:
    """Translate an authentication failure into the response the caller gets."""
    if isinstance(error, PatNotAllowed):
        return HTTPException(
            status.HTTP_403_FORBIDDEN,
            "this request needs a sign-in session; a personal access token "
            "cannot manage credentials",
        )
    if isinstance(error, ServiceUnavailable):
        return HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            "authentication is unavailable; retry shortly",
            headers={"Retry-After": "1"},
        )
    return HTTPException(status.HTTP_401_UNAUTHORIZED, str(error), headers=CHALLENGE)
