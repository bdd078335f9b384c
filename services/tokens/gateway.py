"""Endpoints that gateways call to validate a token on every request.

Forward auth (nginx ``auth_request``, Traefik ForwardAuth, Envoy ``ext_authz``
over HTTP) returns only 200, 401 or 403, because nginx treats any other status
of the subrequest as an error and sends the client a 500. Introspection
follows RFC 7662. The reason for a rejection goes to the log and to the
token's row, never to the caller.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
import time
import uuid
from datetime import datetime
from typing import Annotated, Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Header, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, SecretStr
from starlette.routing import Route

from services.common.auth import AuthenticationError, bearer_credential
from services.tokens.failures import FailureLimiter
from services.tokens.service import (
    Outcome,
    TokenService,
    Validation,
    ValidationUnavailable,
)
from services.tokens.usage import parse_address

log = logging.getLogger(__name__)

INVALID_TOKEN = {"WWW-Authenticate": 'Bearer error="invalid_token"'}
# A database outage gets a 401 as well, but without invalid_token, so that
# clients do not throw the token away
# (docs/decisions/forward-auth-and-validation-cache.md).
UNAVAILABLE = {
    "WWW-Authenticate": 'Bearer error="temporarily_unavailable", '
    'error_description="the token could not be checked; retry shortly"',
    "Retry-After": "1",
}
NO_STORE = {"Cache-Control": "no-store"}
FORWARD_METHODS = ["HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
MAX_FORM_BYTES = 4096


class ValidationOut(BaseModel):
    token_id: uuid.UUID
    user_id: uuid.UUID
    username: str
    role: str
    expires_at: datetime


def client_address(request: Request) -> str | None:
    """Return the address of the gateway's client.

    The rightmost ``X-Forwarded-For`` entry is the one the gateway itself
    appended, then ``X-Real-IP``, then the connection's peer. Only gateways
    should reach this service, so the headers are theirs.
    """
    forwarded = request.headers.get("x-forwarded-for")
    if forwarded:
        address = parse_address(forwarded.split(",")[-1])
        if address:
            return address
    address = parse_address(request.headers.get("x-real-ip"))
    if address:
        return address
    return parse_address(request.client.host) if request.client else None


class RejectionLog:
    """Logs rejections at most ``per_second`` times a second, counting the rest.

    A client that retries a bad token in a loop would otherwise fill the log.
    """

    def __init__(self, per_second: int = 20) -> None:
        self._per_second = per_second
        self._window = 0
        self._logged = 0
        self._suppressed = 0

    def __call__(self, result: Validation, address: str | None) -> None:
        window = int(time.monotonic())
        if window != self._window:
            if self._suppressed:
                log.info("%d more token rejections were not logged", self._suppressed)
            self._window, self._logged, self._suppressed = window, 0, 0
        if self._logged >= self._per_second:
            self._suppressed += 1
            return
        self._logged += 1
        log.info(
            "token rejected: %s token_id=%s client=%s",
            result.reason,
            result.token_id,
            address,
        )


_log_rejection = RejectionLog()


class ForwardAuth:
    """The forward-auth handler, shared by the documented and the fast routes.

    With a ``limiter``, an address that sent too many malformed or invalid
    tokens gets 401 with ``Retry-After`` before any lookup, whatever token
    it sends. Not 429, because nginx turns that into a 500.
    """

    def __init__(
        self, service: TokenService, limiter: FailureLimiter | None = None
    ) -> None:
        self._service = service
        self._limiter = limiter

    async def __call__(self, request: Request) -> Response:
        address = client_address(request)
        authorization = request.headers.get("authorization")
        if self._limiter is not None and authorization is not None:
            retry_after = self._limiter.retry_after(address)
            if retry_after is not None:
                return _rejection(
                    401,
                    "too many invalid tokens from this address",
                    {**INVALID_TOKEN, "Retry-After": str(retry_after)},
                )
        try:
            credential = bearer_credential(authorization)
        except AuthenticationError:
            if self._limiter is not None and authorization is not None:
                self._limiter.record_failure(address)
            return _rejection(401, "invalid token", INVALID_TOKEN)

        try:
            result = await self._service.validate(credential, address)
        except ValidationUnavailable as error:
            log.error("forward auth could not check a token: %s", error)
            return _rejection(401, "token validation is unavailable", UNAVAILABLE)
        except Exception:
            # Any status but 200, 401 and 403 becomes a 500 in nginx.
            log.exception("forward auth failed")
            return _rejection(401, "token validation is unavailable", UNAVAILABLE)

        if result.outcome is Outcome.INVALID:
            _log_rejection(result, address)
            if self._limiter is not None:
                self._limiter.record_failure(address)
            return _rejection(401, "invalid token", INVALID_TOKEN)
        if result.outcome is Outcome.FORBIDDEN:
            _log_rejection(result, address)
            return _rejection(403, "token not allowed", {})
        return _accepted(result)


def _accepted(result: Validation) -> Response:
    assert result.token_id is not None
    assert result.user_id is not None
    assert result.username is not None
    assert result.role is not None
    assert result.expires_at is not None
    user_id = str(result.user_id)
    token_id = str(result.token_id)
    body = {
        "token_id": token_id,
        "user_id": user_id,
        "username": result.username,
        "role": result.role,
        "expires_at": result.expires_at.isoformat(),
    }
    headers = {
        "X-Auth-User-Id": user_id,
        "X-Auth-Username": result.username,
        "X-Auth-Role": result.role,
        "X-Auth-Token-Id": token_id,
        **NO_STORE,
    }
    return JSONResponse(body, 200, headers=headers)


# nginx and Traefik keep the client's method, and Envoy also appends the
# client's path, so every method and every path below /forward is served.
FORWARD_AUTH_PATHS = ("/validate", "/forward", "/forward/{path:path}")


def forward_auth_routes(
    service: TokenService, limiter: FailureLimiter | None = None
) -> list[Route]:
    """Return plain Starlette routes of forward auth for the front of the app.

    They skip FastAPI's parameter and response handling, which took more than
    half of a request's time on a cache hit. One process with the validation
    stubbed measured 307 against 130 microseconds per request. They also
    match before any other route. The
    routes of ``build_gateway_router`` serve the same handler and document it.
    """
    # A bound method, because Starlette treats any other callable object as
    # an ASGI application rather than a request handler.
    handler = ForwardAuth(service, limiter).__call__
    methods = ["GET", *FORWARD_METHODS]
    return [
        Route(f"/v1/auth{path}", handler, methods=methods, include_in_schema=False)
        for path in FORWARD_AUTH_PATHS
    ]


def build_gateway_router(
    service: TokenService,
    clients: dict[str, SecretStr],
    limiter: FailureLimiter | None = None,
) -> APIRouter:
    router = APIRouter(prefix="/v1/auth", tags=["gateway"])
    rejections: dict[int | str, dict[str, Any]] = {
        401: {
            "description": "Missing, malformed, unknown, expired or deleted, or "
            "too many invalid tokens from the client's address (with Retry-After)"
        },
        403: {"description": "Tokens are switched off, or the owner may not use them"},
    }
    handler = ForwardAuth(service, limiter)

    async def forward_auth(
        request: Request, authorization: Annotated[str | None, Header()] = None
    ) -> Response:
        """Validate the Bearer token of a request that a gateway holds back.

        200 with ``X-Auth-User-Id``, ``X-Auth-Username``, ``X-Auth-Role`` and
        ``X-Auth-Token-Id``. 401 for a missing, malformed, unknown, expired or
        deleted token. 401 with ``Retry-After`` for any token from an address
        that sent too many invalid ones. 403 while tokens are switched off or
        when the owner may not use them. Any failure inside also gets a 401."""
        return await handler(request)

    # The schema lists GET only, because one operation per path is enough.
    for path in FORWARD_AUTH_PATHS:
        for methods, listed in ((["GET"], True), (FORWARD_METHODS, False)):
            router.add_api_route(
                path,
                forward_auth,
                methods=methods,
                response_model=ValidationOut,
                responses=rejections,
                include_in_schema=listed and not path.endswith("{path:path}"),
            )

    @router.post(
        "/introspect",
        responses={
            400: {"description": "The form has no token field"},
            401: {"description": "The client credential is missing or wrong"},
        },
    )
    async def introspect(request: Request) -> JSONResponse:
        """RFC 7662 token introspection for gateways and resource servers.

        The caller authenticates with HTTP Basic and a client credential from
        the configuration, and posts a form with the field ``token``."""
        if not _client_authenticated(request.headers.get("authorization"), clients):
            return JSONResponse(
                {"error": "invalid_client"},
                401,
                headers={"WWW-Authenticate": 'Basic realm="introspection"', **NO_STORE},
            )
        token = await _form_token(request)
        if token is None:
            return JSONResponse(
                {
                    "error": "invalid_request",
                    "error_description": "the form field token is missing; send "
                    "application/x-www-form-urlencoded with token=<value>",
                },
                400,
                headers=NO_STORE,
            )
        try:
            result = await service.validate(token)
        except ValidationUnavailable as error:
            log.error("introspection could not check a token: %s", error)
            return JSONResponse(
                {"error": "temporarily_unavailable"},
                503,
                headers={"Retry-After": "1", **NO_STORE},
            )
        if result.outcome is not Outcome.VALID:
            _log_rejection(result, None)
            return JSONResponse({"active": False}, 200, headers=NO_STORE)
        assert result.expires_at is not None
        assert result.issued_at is not None
        body = {
            "active": True,
            "sub": str(result.user_id),
            "username": result.username,
            "role": result.role,
            "exp": int(result.expires_at.timestamp()),
            "iat": int(result.issued_at.timestamp()),
            "token_type": "bearer",
            "jti": str(result.token_id),
            "token_id": str(result.token_id),
        }
        return JSONResponse(body, 200, headers=NO_STORE)

    return router


def _rejection(code: int, message: str, headers: dict[str, str]) -> JSONResponse:
    return JSONResponse({"detail": message}, code, headers={**headers, **NO_STORE})


def _client_authenticated(
    authorization: str | None, clients: dict[str, SecretStr]
) -> bool:
    if not authorization or not clients:
        return False
    scheme, _, encoded = authorization.partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return False
    client_id, separator, client_secret = decoded.partition(":")
    expected = clients.get(client_id)
    if not separator or expected is None:
        return False
    return hmac.compare_digest(
        client_secret.encode(), expected.get_secret_value().encode()
    )


async def _form_token(request: Request) -> str | None:
    content_type = request.headers.get("content-type", "")
    if (
        content_type.split(";")[0].strip().lower()
        != "application/x-www-form-urlencoded"
    ):
        return None
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        return None
    try:
        fields = parse_qs(body.decode(), max_num_fields=10)
    except (UnicodeDecodeError, ValueError):
        return None
    values = fields.get("token")
    if not values or not values[0]:
        return None
    return values[0]
