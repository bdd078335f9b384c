"""RFC 7662 introspection and forward auth called directly."""

from __future__ import annotations

import time

import httpx
import pytest

from services.tokens import secret
from tests.conftest import (
    INTROSPECTION_CLIENT,
    INTROSPECTION_SECRET,
    Person,
    RunContext,
)

CLIENT = (INTROSPECTION_CLIENT, INTROSPECTION_SECRET)


def introspect(
    run: RunContext, token: str, auth: tuple[str, str] | None = CLIENT
) -> httpx.Response:
    return httpx.post(
        f"{run.stack.urls['tokens']}/v1/auth/introspect",
        data={"token": token},
        auth=auth,
    )


def test_valid_token_introspected(run: RunContext, person: Person) -> None:
    token = run.api.create_token(person.session, "introspected", 5)

    response = introspect(run, token["token"])

    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    body = response.json()
    assert body["active"] is True
    assert body["sub"] == person.id
    assert body["username"] == person.user["username"]
    assert body["token_type"] == "bearer"
    assert body["token_id"] == token["id"]
    assert body["jti"] == token["id"]
    assert isinstance(body["exp"], int)
    assert isinstance(body["iat"], int)
    assert body["exp"] - body["iat"] == 5 * 86400


def test_inactive_answers_only_active_false(run: RunContext, person: Person) -> None:
    token = run.api.create_token(person.session, "deleted soon", 5)
    run.api.request(
        "DELETE", "tokens", f"/v1/tokens/{token['id']}", person.session, expect=204
    )

    for value in (token["token"], secret.generate(), "ecpat_short", "garbage"):
        response = introspect(run, value)
        assert response.status_code == 200, value
        assert response.json() == {"active": False}, value


@pytest.mark.parametrize(
    "auth",
    [None, (INTROSPECTION_CLIENT, "wrong"), ("someone", INTROSPECTION_SECRET)],
)
def test_introspection_needs_client_credential(
    run: RunContext, person: Person, auth: tuple[str, str] | None
) -> None:
    token = run.api.create_token(person.session, f"client {time.time_ns()}", 5)

    response = introspect(run, token["token"], auth=auth)

    assert response.status_code == 401
    assert response.json() == {"error": "invalid_client"}
    assert response.headers["WWW-Authenticate"].startswith("Basic")


def test_introspection_without_token_field(run: RunContext) -> None:
    url = f"{run.stack.urls['tokens']}/v1/auth/introspect"

    empty = httpx.post(url, data={"other": "x"}, auth=CLIENT)
    as_json = httpx.post(url, json={"token": "x"}, auth=CLIENT)

    assert empty.status_code == 400
    assert empty.json()["error"] == "invalid_request"
    assert as_json.status_code == 400


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS"])
def test_forward_auth_accepts_any_method_and_path(
    run: RunContext, person: Person, method: str
) -> None:
    token = run.api.create_token(person.session, f"method {method}", 5)
    base = f"{run.stack.urls['tokens']}/v1/auth/forward"

    for url in (base, f"{base}/v1/projects/7?x=1"):
        response = httpx.request(
            method, url, headers={"Authorization": f"Bearer {token['token']}"}
        )
        assert response.status_code == 200, url
        assert response.headers["X-Auth-Token-Id"] == token["id"], url
        assert response.headers["X-Auth-User-Id"] == person.id, url
