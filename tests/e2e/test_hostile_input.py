"""Input that must get a 4xx naming the problem, never a 500."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import Person, RunContext


def bearer(credential: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {credential}"}


@pytest.mark.parametrize("name", ["nul\x00byte", "bell\x07", "rtl\u202eoverride"])
def test_token_name_with_control_characters(
    run: RunContext, person: Person, name: str
) -> None:
    response = httpx.post(
        f"{run.stack.urls['tokens']}/v1/tokens",
        json={"name": name, "expire_in_days": 5},
        headers=bearer(person.session),
    )

    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "name"]


def test_sign_in_with_nul_in_username(run: RunContext) -> None:
    response = httpx.post(
        f"{run.stack.urls['profile']}/v1/sessions",
        json={"username": "ad\x00min", "password": "whatever"},
    )

    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "username"]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("email", "a\x00b@example.org"),
        ("email", "not-an-email"),
        ("display_name", "x\x00y"),
        ("time_zone", "Mars/Olympus"),
        ("username", "UPPER CASE!"),
        ("password", "short"),
        ("role", "superuser"),
    ],
)
def test_create_user_rejects_bad_field(
    run: RunContext, admin: str, field: str, value: str
) -> None:
    body = {
        "username": "hostile",
        "display_name": "Hostile",
        "email": "hostile@example.org",
        "password": "long-enough-password",
        field: value,
    }

    response = httpx.post(
        f"{run.stack.urls['profile']}/v1/users", json=body, headers=bearer(admin)
    )

    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", field]


def test_wrong_password_does_not_say_which_part(run: RunContext) -> None:
    unknown = httpx.post(
        f"{run.stack.urls['profile']}/v1/sessions",
        json={"username": "nobody-here", "password": "whatever-password"},
    )
    wrong = httpx.post(
        f"{run.stack.urls['profile']}/v1/sessions",
        json={"username": "admin", "password": "wrong-password"},
    )

    assert unknown.status_code == 401
    assert wrong.status_code == 401
    assert unknown.json() == wrong.json()


@pytest.mark.parametrize("path", ["/v1/tokens/not-a-uuid", "/v1/users/123/tokens"])
def test_invalid_uuid_in_path(run: RunContext, admin: str, path: str) -> None:
    response = httpx.get(f"{run.stack.urls['tokens']}{path}", headers=bearer(admin))

    assert response.status_code == 422


def test_deactivated_owner_token_refused(
    run: RunContext, admin: str, person: Person
) -> None:
    token = run.api.create_token(person.session, "soon inactive", 5)
    validate = f"{run.stack.urls['tokens']}/v1/auth/validate"
    before = httpx.get(validate, headers=bearer(token["token"]))

    run.api.request(
        "PATCH", "profile", f"/v1/users/{person.id}", admin, json={"active": False}
    )
    statuses = []
    for _ in range(100):
        statuses.append(httpx.get(validate, headers=bearer(token["token"])).status_code)
        if statuses[-1] != 200:
            break
        httpx.get(f"{run.stack.urls['tokens']}/healthz")
    session = httpx.get(
        f"{run.stack.urls['profile']}/v1/sessions/current",
        headers=bearer(person.session),
    )

    assert before.status_code == 200
    assert statuses[-1] == 403
    assert session.status_code == 401
