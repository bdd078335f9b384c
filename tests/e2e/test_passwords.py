"""Changing one's own password: policy, sessions, event and email."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from infra import mailbox
from tests.conftest import Person, RunContext, bearer


def change_password(
    run: RunContext, credential: str, current: str, new: str
) -> httpx.Response:
    return httpx.post(
        f"{run.stack.urls['profile']}/v1/me/password",
        json={"current_password": current, "new_password": new},
        headers=bearer(credential),
    )


def sign_in(run: RunContext, username: str, password: str) -> httpx.Response:
    return httpx.post(
        f"{run.stack.urls['profile']}/v1/sessions",
        json={"username": username, "password": password},
    )


def session_status(run: RunContext, session: str) -> int:
    response = httpx.get(
        f"{run.stack.urls['profile']}/v1/sessions/current", headers=bearer(session)
    )
    return response.status_code


def password_events(run: RunContext, user_id: str) -> list[dict[str, Any]]:
    return [
        e
        for e in run.events.of_type("password.changed.v1")
        if e["value"] and e["value"].get("user_id") == user_id
    ]


def test_password_change_ends_other_sessions(run: RunContext, person: Person) -> None:
    other_session = run.api.sign_in(person.user["username"], person.password)
    token = run.api.create_token(person.session, "survives password change", 5)
    new_password = "a-new-and-long-password"

    response = change_password(run, person.session, person.password, new_password)
    with_token = httpx.get(
        f"{run.stack.urls['profile']}/v1/me", headers=bearer(token["token"])
    )

    assert response.status_code == 204
    assert with_token.status_code == 200  # tokens outlive a password change
    assert session_status(run, person.session) == 200
    assert session_status(run, other_session) == 401
    assert sign_in(run, person.user["username"], person.password).status_code == 401
    assert sign_in(run, person.user["username"], new_password).status_code == 201


def test_password_change_event_and_email(run: RunContext, person: Person) -> None:
    password = "another-long-password"
    email = person.user["email"]

    response = change_password(run, person.session, person.password, password)
    [notice] = mailbox.wait_for_messages(
        lambda m: email in m["rcpt_tos"] and "password" in (m["subject"] or ""),
        timeout=30,
    )
    deadline = time.monotonic() + 20
    while not password_events(run, person.id) and time.monotonic() < deadline:
        time.sleep(0.1)
    [event] = password_events(run, person.id)

    assert response.status_code == 204
    assert notice["subject"] == "Your password was changed"
    assert "(UTC)" in notice["text"]
    assert set(event["value"]) == {"user_id", "changed_at"}
    assert event["key"] == person.id
    assert password.encode() not in event["raw"]
    assert person.password.encode() not in event["raw"]


def test_password_email_uses_new_time_zone(run: RunContext, person: Person) -> None:
    email = person.user["email"]
    changed = httpx.patch(
        f"{run.stack.urls['profile']}/v1/me",
        json={"time_zone": "Asia/Tokyo"},
        headers=bearer(person.session),
    )

    response = change_password(run, person.session, person.password, "tokyo-passw0rd")
    [notice] = mailbox.wait_for_messages(
        lambda m: email in m["rcpt_tos"] and "password" in (m["subject"] or ""),
        timeout=30,
    )

    assert changed.status_code == 200
    assert response.status_code == 204
    assert "JST (Asia/Tokyo)" in notice["text"]


def test_wrong_current_password_changes_nothing(
    run: RunContext, person: Person
) -> None:
    response = change_password(
        run, person.session, "not-the-password", "a-new-and-long-password"
    )

    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "current_password"]
    assert "wrong" in response.json()["detail"][0]["msg"]
    assert sign_in(run, person.user["username"], person.password).status_code == 201


@pytest.mark.parametrize(
    ("new_password", "reason"),
    [
        ("short", "at least 12"),
        ("x" * 257, "at most 256"),
        ("{username}", "username"),
        ("{email}", "email"),
        ("PasswordPassword", "common"),
        ("qwertyuiop123", "common"),
    ],
)
def test_new_password_policy(
    run: RunContext, person: Person, new_password: str, reason: str
) -> None:
    # Usernames made by make_person are 12 characters, the minimum length.
    new_password = new_password.format(
        username=person.user["username"].upper(), email=person.user["email"]
    )

    response = change_password(run, person.session, person.password, new_password)

    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "new_password"]
    assert reason in response.json()["detail"][0]["msg"]
    assert sign_in(run, person.user["username"], person.password).status_code == 201


def test_password_change_needs_session(run: RunContext, person: Person) -> None:
    token = run.api.create_token(person.session, "no passwords", 5)

    response = change_password(
        run, token["token"], person.password, "a-new-and-long-password"
    )

    assert response.status_code == 403
    assert sign_in(run, person.user["username"], person.password).status_code == 201


def test_create_user_applies_password_policy(run: RunContext, admin: str) -> None:
    response = httpx.post(
        f"{run.stack.urls['profile']}/v1/users",
        json={
            "username": "weakling",
            "display_name": "Weak",
            "email": "weakling@example.org",
            "password": "passwordpassword",
        },
        headers=bearer(admin),
    )

    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "password"]
