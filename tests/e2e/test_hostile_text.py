"""Every text field of every endpoint, tried with hostile strings.

Each string is either rejected with a 4xx that names the field, or stored
exactly as sent and read back unchanged. No response may carry a header
that the string tried to inject, and no request may get a 5xx.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from infra import mailbox
from tests.conftest import (
    INTROSPECTION_CLIENT,
    INTROSPECTION_SECRET,
    USED_PASSWORDS,
    Person,
    RunContext,
    bearer,
    make_person,
)

HOSTILE = {
    "sql": "'; DROP TABLE users; --",
    "header": '"\r\nX-Injected: 1"',
    "control": "bell\x07bell",
    "nul": "nul\x00byte-long-enough",
    "rtl": "rtl\u202eoverride",
    "huge": "x" * 1_000_000,
}

# Failed sign-ins from this address fill its own count, not the count of
# 127.0.0.1 that the other tests sign in from.
HOSTILE_ADDRESS = "127.0.0.31"


@dataclass
class Context:
    run: RunContext
    admin: str
    person: Person
    attribute_id: str

    def url(self, service: str, path: str) -> str:
        return f"{self.run.stack.urls[service]}{path}"

    def get(self, service: str, path: str, session: str) -> Any:
        response = httpx.get(self.url(service, path), headers=bearer(session))
        response.raise_for_status()
        return response.json()


@dataclass
class Target:
    """One text field of one operation, and how to read its stored value."""

    service: str
    method: str
    path: Callable[[Context], str]
    body: Callable[[Context, str], dict[str, Any]]
    field: str
    caller: Callable[[Context], str]
    read: Callable[[Context, httpx.Response], Any] | None = None
    # Free text takes any printable string, so the SQL string must be stored.
    free_text: bool = False


def _new_user(ctx: Context, field: str, value: str) -> dict[str, Any]:
    body: dict[str, Any] = {
        "username": f"hostile{uuid.uuid4().hex[:8]}",
        "display_name": "Hostile",
        "email": f"h{uuid.uuid4().hex[:8]}@example.org",
        "password": "long-enough-password",
        field: value,
    }
    return body


def _read_user(field: str) -> Callable[[Context, httpx.Response], Any]:
    def read(ctx: Context, response: httpx.Response) -> Any:
        user_id = response.json()["id"]
        return ctx.get("profile", f"/v1/users/{user_id}", ctx.admin)[field]

    return read


def _read_me(field: str) -> Callable[[Context, httpx.Response], Any]:
    def read(ctx: Context, _: httpx.Response) -> Any:
        return ctx.get("profile", "/v1/me", ctx.person.session)[field]

    return read


def _read_token(ctx: Context, response: httpx.Response) -> Any:
    token_id = response.json()["id"]
    name = ctx.get("tokens", f"/v1/tokens/{token_id}", ctx.person.session)["name"]
    httpx.delete(
        ctx.url("tokens", f"/v1/tokens/{token_id}"), headers=bearer(ctx.person.session)
    )
    return name


def _read_attribute(ctx: Context, response: httpx.Response) -> Any:
    attribute_id = response.json()["id"]
    listed = ctx.get("profile", "/v1/attributes", ctx.admin)
    name = next(a["name"] for a in listed if a["id"] == attribute_id)
    # Deleted, so that the rename target can take the same name.
    httpx.delete(
        ctx.url("profile", f"/v1/attributes/{attribute_id}"), headers=bearer(ctx.admin)
    ).raise_for_status()
    return name


def _read_attribute_value(ctx: Context, _: httpx.Response) -> Any:
    profile = ctx.get("profile", "/v1/me", ctx.person.session)
    return next(
        a["value"] for a in profile["attributes"] if a["id"] == ctx.attribute_id
    )


def _read_signature(ctx: Context, _: httpx.Response) -> Any:
    return ctx.get("profile", "/v1/me/signature", ctx.person.session)["text"]


def _admin(ctx: Context) -> str:
    return ctx.admin


def _person(ctx: Context) -> str:
    return ctx.person.session


def _user_path(ctx: Context) -> str:
    return f"/v1/users/{ctx.person.id}"


TARGETS: dict[str, Target] = {
    **{
        f"create user {field}": Target(
            "profile",
            "POST",
            lambda _: "/v1/users",
            lambda ctx, value, field=field: _new_user(ctx, field, value),  # type: ignore[misc]
            field,
            _admin,
            None if field == "password" else _read_user(field),
            free_text=field in ("display_name", "password"),
        )
        for field in ("username", "display_name", "email", "password", "time_zone")
    },
    **{
        f"edit user {field}": Target(
            "profile",
            "PATCH",
            _user_path,
            lambda _, value, field=field: {field: value},  # type: ignore[misc]
            field,
            _admin,
            _read_user(field),
            free_text=field == "display_name",
        )
        for field in ("display_name", "email", "time_zone", "role")
    },
    **{
        f"my profile {field}": Target(
            "profile",
            "PATCH",
            lambda _: "/v1/me",
            lambda _, value, field=field: {field: value},  # type: ignore[misc]
            field,
            _person,
            _read_me(field),
            free_text=field == "display_name",
        )
        for field in ("display_name", "time_zone")
    },
    "current password": Target(
        "profile",
        "POST",
        lambda _: "/v1/me/password",
        lambda _, value: {"current_password": value, "new_password": "x" * 20},
        "current_password",
        _person,
    ),
    "attribute name": Target(
        "profile",
        "POST",
        lambda _: "/v1/attributes",
        lambda _, value: {"name": value, "type": "text"},
        "name",
        _admin,
        _read_attribute,
        free_text=True,
    ),
    "attribute type": Target(
        "profile",
        "POST",
        lambda _: "/v1/attributes",
        lambda _, value: {"name": f"typed {uuid.uuid4().hex[:6]}", "type": value},
        "type",
        _admin,
    ),
    "attribute rename": Target(
        "profile",
        "PATCH",
        lambda ctx: f"/v1/attributes/{ctx.attribute_id}",
        lambda _, value: {"name": value},
        "name",
        _admin,
        lambda ctx, _: next(
            a["name"]
            for a in ctx.get("profile", "/v1/attributes", ctx.admin)
            if a["id"] == ctx.attribute_id
        ),
        free_text=True,
    ),
    "attribute value": Target(
        "profile",
        "PUT",
        lambda ctx: f"/v1/me/attributes/{ctx.attribute_id}",
        lambda _, value: {"value": value},
        "value",
        _person,
        _read_attribute_value,
        free_text=True,
    ),
    "signature text": Target(
        "profile",
        "PUT",
        lambda _: "/v1/me/signature/text",
        lambda _, value: {"text": value},
        "text",
        _person,
        _read_signature,
        free_text=True,
    ),
    "setting value": Target(
        "settings",
        "PUT",
        lambda _: "/v1/settings/pat_max_expire_days",
        lambda _, value: {"value": value},
        "value",
        _admin,
    ),
    "token name": Target(
        "tokens",
        "POST",
        lambda _: "/v1/tokens",
        lambda _, value: {"name": value, "expire_in_days": 5},
        "name",
        _person,
        _read_token,
        free_text=True,
    ),
}


@pytest.fixture(scope="module")
def context(run: RunContext, admin: str) -> Iterator[Context]:
    person = make_person(run, admin)
    response = httpx.post(
        f"{run.stack.urls['profile']}/v1/attributes",
        json={
            "name": f"hostile {uuid.uuid4().hex[:6]}",
            "type": "text",
            "user_editable": True,
        },
        headers=bearer(admin),
    )
    response.raise_for_status()
    yield Context(run, admin, person, response.json()["id"])


def _assert_not_injected(response: httpx.Response) -> None:
    assert "x-injected" not in {name.lower() for name in response.headers}
    assert "\r\nX-Injected" not in response.text
    assert response.status_code < 500, response.text[:500]


def _assert_rejected_naming(response: httpx.Response, field: str) -> None:
    assert response.status_code == 422, response.text[:500]
    locations = [item["loc"] for item in response.json()["detail"]]
    assert any(location[-1] == field for location in locations), locations


@pytest.mark.parametrize("kind", list(HOSTILE))
@pytest.mark.parametrize("target_name", list(TARGETS))
def test_text_field_rejected_or_stored(
    context: Context, target_name: str, kind: str
) -> None:
    target = TARGETS[target_name]
    value = HOSTILE[kind]

    response = httpx.request(
        target.method,
        context.url(target.service, target.path(context)),
        json=target.body(context, value),
        headers=bearer(target.caller(context)),
        timeout=30,
    )

    _assert_not_injected(response)
    if target.free_text and kind == "sql":
        assert response.is_success, response.text[:500]
    if response.is_success:
        if target.read is not None:
            assert target.read(context, response) == value
    else:
        _assert_rejected_naming(response, target.field)


@pytest.mark.parametrize("kind", list(HOSTILE))
@pytest.mark.parametrize("field", ["username", "password"])
def test_sign_in_field_rejected(run: RunContext, field: str, kind: str) -> None:
    # An unknown username, so that no real account reaches its limit.
    body = {"username": "hostile-nobody", "password": "wrong-password"}
    body[field] = HOSTILE[kind]
    transport = httpx.HTTPTransport(local_address=HOSTILE_ADDRESS)

    with httpx.Client(transport=transport, timeout=30) as client:
        response = client.post(f"{run.stack.urls['profile']}/v1/sessions", json=body)

    _assert_not_injected(response)
    assert response.status_code in (401, 422)
    if response.status_code == 422:
        _assert_rejected_naming(response, field)


@pytest.mark.parametrize("kind", list(HOSTILE))
def test_new_password_rejected_or_works(run: RunContext, admin: str, kind: str) -> None:
    person = make_person(run, admin)
    # A unique suffix, because the secrets check after the run looks for
    # every accepted password, and other fields store the same strings.
    value = f"{HOSTILE[kind]}-{uuid.uuid4().hex[:8]}"

    response = httpx.post(
        f"{run.stack.urls['profile']}/v1/me/password",
        json={"current_password": person.password, "new_password": value},
        headers=bearer(person.session),
        timeout=30,
    )

    _assert_not_injected(response)
    if response.is_success:
        USED_PASSWORDS.append(value)
        signed_in = run.api.sign_in(person.user["username"], value)
        assert signed_in
    else:
        _assert_rejected_naming(response, "new_password")


@pytest.mark.parametrize("kind", [k for k in HOSTILE if k != "huge"])
def test_query_text_not_executed(run: RunContext, admin: str, kind: str) -> None:
    settings = httpx.get(
        f"{run.stack.urls['settings']}/v1/settings",
        params={"q": HOSTILE[kind]},
        headers=bearer(admin),
    )
    tokens = httpx.get(
        f"{run.stack.urls['tokens']}/v1/users/{uuid.uuid4()}/tokens",
        params={"state": HOSTILE[kind]},
        headers=bearer(admin),
    )

    _assert_not_injected(settings)
    _assert_not_injected(tokens)
    assert settings.status_code in (200, 422)
    assert tokens.status_code == 422


@pytest.mark.parametrize("kind", list(HOSTILE))
def test_introspected_text_inactive(run: RunContext, kind: str) -> None:
    response = httpx.post(
        f"{run.stack.urls['tokens']}/v1/auth/introspect",
        data={"token": HOSTILE[kind]},
        auth=(INTROSPECTION_CLIENT, INTROSPECTION_SECRET),
    )

    _assert_not_injected(response)
    assert response.status_code in (200, 400)
    if response.status_code == 200:
        assert response.json() == {"active": False}


INVALID_UTF8 = [
    ("profile", "POST", "/v1/users", _admin),
    ("profile", "PATCH", "/v1/me", _person),
    ("profile", "POST", "/v1/attributes", _admin),
    ("profile", "PUT", "/v1/me/signature/text", _person),
    ("profile", "POST", "/v1/sessions", _person),
    ("settings", "PUT", "/v1/settings/pat_max_expire_days", _admin),
    ("tokens", "POST", "/v1/tokens", _person),
]


@pytest.mark.parametrize(("service", "method", "path", "caller"), INVALID_UTF8)
def test_invalid_utf8_body_rejected(
    context: Context,
    service: str,
    method: str,
    path: str,
    caller: Callable[[Context], str],
) -> None:
    session = caller(context)
    body = b'{"name": "\xff\xfe bad", "display_name": "\xc3\x28", "value": "\x80"}'

    response = httpx.request(
        method,
        context.url(service, path),
        content=body,
        headers={**bearer(session), "Content-Type": "application/json"},
    )

    _assert_not_injected(response)
    assert response.status_code in (400, 422), response.text[:300]


def test_display_name_in_email_as_given(run: RunContext, admin: str) -> None:
    person = make_person(run, admin)
    name = HOSTILE["sql"] + ' "quoted" <a@b.c>'
    run.api.request(
        "PATCH", "profile", "/v1/me", person.session, json={"display_name": name}
    )
    new_password = f"pw-{uuid.uuid4().hex}"
    USED_PASSWORDS.append(new_password)

    changed = httpx.post(
        f"{run.stack.urls['profile']}/v1/me/password",
        json={"current_password": person.password, "new_password": new_password},
        headers=bearer(person.session),
    )
    [message] = mailbox.wait_for_messages(
        lambda m: person.user["email"] in m["rcpt_tos"], timeout=30
    )

    assert changed.status_code < 300
    assert message["rcpt_tos"] == [person.user["email"]]
    assert "a@b.c" not in message["rcpt_tos"]
    assert "x-injected" not in {k.lower() for k in message["headers"]}
    assert f"Hello {name}," in message["text"]
