"""Input that must get a 4xx naming the problem, never a 500."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import Person, RunContext, bearer


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


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b'{"name": "lone \\ud800 surrogate", "expire_in_days": 5}', "name"),
        (b'{"name": "line\\u2028separator", "expire_in_days": 5}', "name"),
        (b'{"name": "nan", "expire_in_days": NaN}', "expire_in_days"),
        (b'{"name": "infinite", "expire_in_days": Infinity}', "expire_in_days"),
        (b'{"name": "huge", "expire_in_days": 1e400}', "expire_in_days"),
    ],
)
def test_unencodable_input_gets_422(
    run: RunContext, person: Person, body: bytes, field: str
) -> None:
    response = httpx.post(
        f"{run.stack.urls['tokens']}/v1/tokens",
        content=body,
        headers={**bearer(person.session), "Content-Type": "application/json"},
    )

    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", field]


def test_rejected_password_not_echoed(run: RunContext) -> None:
    password = "p" * 2000

    response = httpx.post(
        f"{run.stack.urls['profile']}/v1/sessions",
        json={"username": "admin", "password": password},
    )

    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "password"]
    assert password not in response.text


@pytest.mark.parametrize("service", ["settings", "tokens", "profile"])
def test_non_ascii_credential_gets_401(run: RunContext, service: str) -> None:
    path = {"settings": "/v1/settings", "tokens": "/v1/tokens", "profile": "/v1/me"}
    for credential in (b"Bearer ecses_\xc3\xa9", b"Bearer ecpat_\xe9abc"):
        response = httpx.get(
            f"{run.stack.urls[service]}{path[service]}",
            headers={b"Authorization": credential},
        )
        assert response.status_code == 401, credential


@pytest.mark.parametrize("active", ["no", 1, 0, "false"])
def test_active_flag_must_be_boolean(
    run: RunContext, admin: str, person: Person, active: object
) -> None:
    response = httpx.patch(
        f"{run.stack.urls['profile']}/v1/users/{person.id}",
        json={"active": active},
        headers=bearer(admin),
    )
    profile = run.api.request("GET", "profile", f"/v1/users/{person.id}", admin)

    assert response.status_code == 422
    assert profile["active"] is True


def test_email_with_comma_rejected(run: RunContext, admin: str) -> None:
    response = httpx.post(
        f"{run.stack.urls['profile']}/v1/users",
        json={
            "username": "comma",
            "display_name": "Comma",
            "email": "x,victim@example.org",
            "password": "long-enough-password",
        },
        headers=bearer(admin),
    )

    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "email"]


def test_admin_token_cannot_change_settings(run: RunContext, admin: str) -> None:
    token = run.api.create_token(admin, "admin robot", 5)

    response = httpx.put(
        f"{run.stack.urls['settings']}/v1/settings/pat_enabled",
        json={"value": False},
        headers=bearer(token["token"]),
    )

    assert response.status_code == 403
