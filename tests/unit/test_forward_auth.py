"""Forward auth returns only 200, 401 or 403, also when validation fails inside."""

from __future__ import annotations

from typing import Any, cast

import httpx
import pytest
from fastapi import FastAPI, Request

from services.tokens import secret
from services.tokens.gateway import build_gateway_router, client_address
from services.tokens.service import TokenService, ValidationUnavailable


class FailingService:
    def __init__(self, error: Exception) -> None:
        self.error = error
        self.addresses: list[str | None] = []

    async def validate(self, token: str, address: str | None = None) -> Any:
        self.addresses.append(address)
        raise self.error


def client_for(app: FastAPI) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=("192.0.2.1", 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://tokens")


def gateway_app(service: FailingService) -> FastAPI:
    app = FastAPI()
    app.include_router(build_gateway_router(cast(TokenService, service), {}))
    return app


@pytest.mark.parametrize(
    "error", [ValidationUnavailable("connection refused"), RuntimeError("bug")]
)
async def test_failure_inside_gets_401(error: Exception) -> None:
    async with client_for(gateway_app(FailingService(error))) as client:
        response = await client.get(
            "/v1/auth/forward",
            headers={"Authorization": f"Bearer {secret.generate()}"},
        )

    assert response.status_code == 401
    challenge = response.headers["WWW-Authenticate"]
    assert 'error="temporarily_unavailable"' in challenge
    assert "invalid_token" not in challenge
    assert response.headers["Retry-After"] == "1"


async def test_missing_header_skips_validation() -> None:
    service = FailingService(RuntimeError("must not be called"))

    async with client_for(gateway_app(service)) as client:
        response = await client.post("/v1/auth/forward/any/path")

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
    assert service.addresses == []


async def test_introspection_without_clients_rejects_all() -> None:
    app = gateway_app(FailingService(RuntimeError("must not be called")))

    async with client_for(app) as client:
        response = await client.post(
            "/v1/auth/introspect", data={"token": "x"}, auth=("anyone", "secret")
        )

    assert response.status_code == 401
    assert response.json() == {"error": "invalid_client"}


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"x-forwarded-for": "203.0.113.9, 198.51.100.7"}, "198.51.100.7"),
        (
            {"x-forwarded-for": "not an address", "x-real-ip": "2001:db8::1"},
            "2001:db8::1",
        ),
        ({"x-real-ip": "garbage"}, "192.0.2.1"),
    ],
)
async def test_client_address_sources(headers: dict[str, str], expected: str) -> None:
    seen: list[str | None] = []
    app = FastAPI()

    @app.get("/")
    async def echo_address(request: Request) -> None:
        seen.append(client_address(request))

    async with client_for(app) as client:
        await client.get("/", headers=headers)

    assert seen == [expected]
