"""The signed-in person's profile, time zone and the administration of users."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from tests.conftest import Person, RunContext, bearer, make_person


def user_events(run: RunContext, user_id: str) -> list[dict[str, Any]]:
    return [
        e
        for e in run.events.of_type("user.updated.v1")
        if e["value"] and e["value"].get("user_id") == user_id
    ]


def wait_for_status(
    url: str, credential: str, expected: int, timeout: float = 20.0
) -> int:
    """Poll ``url`` until it returns ``expected``; return the last status."""
    deadline = time.monotonic() + timeout
    while True:
        status = httpx.get(url, headers=bearer(credential)).status_code
        if status == expected or time.monotonic() > deadline:
            return status
        time.sleep(0.1)


def test_time_zone_change_publishes_event(run: RunContext, person: Person) -> None:
    response = httpx.patch(
        f"{run.stack.urls['profile']}/v1/me",
        json={"time_zone": "Europe/Berlin"},
        headers=bearer(person.session),
    )
    deadline = time.monotonic() + 20
    while not user_events(run, person.id) and time.monotonic() < deadline:
        time.sleep(0.1)
    [event] = user_events(run, person.id)

    assert response.status_code == 200
    assert response.json()["time_zone"] == "Europe/Berlin"
    assert event["value"]["time_zone"] == "Europe/Berlin"


def test_time_zone_defaults_to_utc(run: RunContext, admin: str) -> None:
    response = httpx.post(
        f"{run.stack.urls['profile']}/v1/users",
        json={
            "username": "zoneless",
            "display_name": "Zoneless",
            "email": "zoneless@example.org",
            "password": "zoneless-password",
        },
        headers=bearer(admin),
    )

    assert response.status_code == 201
    assert response.json()["time_zone"] == "UTC"


@pytest.mark.parametrize(
    "time_zone",
    ["Mars/Olympus", "", "A" * 10_000, "../../etc/passwd", "europe/berlin", 3],
)
def test_invalid_time_zone_rejected(
    run: RunContext, person: Person, time_zone: object
) -> None:
    response = httpx.patch(
        f"{run.stack.urls['profile']}/v1/me",
        json={"time_zone": time_zone},
        headers=bearer(person.session),
    )
    profile = run.api.request("GET", "profile", "/v1/me", person.session)

    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "time_zone"]
    assert profile["time_zone"] == "UTC"


def test_other_users_profile_not_found(
    run: RunContext, admin: str, person: Person
) -> None:
    other = make_person(run, admin)
    url = f"{run.stack.urls['profile']}/v1/users/{other.id}"

    read = httpx.get(url, headers=bearer(person.session))
    changed = httpx.patch(
        url, json={"display_name": "Taken over"}, headers=bearer(person.session)
    )
    own = httpx.get(
        f"{run.stack.urls['profile']}/v1/users/{person.id}",
        headers=bearer(person.session),
    )
    after = run.api.request("GET", "profile", f"/v1/users/{other.id}", admin)

    assert read.status_code == 404
    assert changed.status_code == 404
    assert own.status_code == 200
    assert after["display_name"] == other.user["display_name"]


def test_user_cannot_promote_themself(run: RunContext, person: Person) -> None:
    response = httpx.patch(
        f"{run.stack.urls['profile']}/v1/users/{person.id}",
        json={"role": "administrator"},
        headers=bearer(person.session),
    )
    profile = run.api.request("GET", "profile", "/v1/me", person.session)

    assert response.status_code == 403
    assert profile["role"] == "user"


def test_admin_edits_user(run: RunContext, admin: str, person: Person) -> None:
    response = httpx.patch(
        f"{run.stack.urls['profile']}/v1/users/{person.id}",
        json={"display_name": "Renamed", "email": "renamed@example.org"},
        headers=bearer(admin),
    )
    profile = run.api.request("GET", "profile", "/v1/me", person.session)

    assert response.status_code == 200
    assert profile["display_name"] == "Renamed"
    assert profile["email"] == "renamed@example.org"


def test_deactivated_user_cannot_sign_in(
    run: RunContext, admin: str, person: Person
) -> None:
    run.api.request(
        "PATCH", "profile", f"/v1/users/{person.id}", admin, json={"active": False}
    )

    response = httpx.post(
        f"{run.stack.urls['profile']}/v1/sessions",
        json={"username": person.user["username"], "password": person.password},
    )
    deadline = time.monotonic() + 20
    while True:
        events = [
            e
            for e in run.events.of_type("user.deactivated.v1")
            if e["value"] and e["value"].get("user_id") == person.id
        ]
        if events or time.monotonic() > deadline:
            break
        time.sleep(0.1)

    assert response.status_code == 401
    assert len(events) == 1
    assert set(events[0]["value"]) == {"user_id", "deactivated_at"}
    assert events[0]["key"] == person.id


def test_demoted_user_tokens_stop(run: RunContext, admin: str, person: Person) -> None:
    token = run.api.create_token(person.session, "before demotion", 5)
    validate = f"{run.stack.urls['tokens']}/v1/auth/validate"
    before = httpx.get(validate, headers=bearer(token["token"])).status_code

    run.api.request(
        "PATCH",
        "profile",
        f"/v1/users/{person.id}",
        admin,
        json={"role": "collaborator"},
    )
    after = wait_for_status(validate, token["token"], 403)
    created = httpx.post(
        f"{run.stack.urls['tokens']}/v1/tokens",
        json={"name": "after demotion", "expire_in_days": 5},
        headers=bearer(person.session),
    )

    assert before == 200
    assert after == 403
    assert created.status_code == 403
    assert "collaborator" in created.json()["detail"]


def test_promoted_collaborator_creates_tokens(run: RunContext, admin: str) -> None:
    collaborator = make_person(run, admin, role="collaborator")
    refused = httpx.post(
        f"{run.stack.urls['tokens']}/v1/tokens",
        json={"name": "too early", "expire_in_days": 5},
        headers=bearer(collaborator.session),
    )

    run.api.request(
        "PATCH",
        "profile",
        f"/v1/users/{collaborator.id}",
        admin,
        json={"role": "user"},
    )
    deadline = time.monotonic() + 20
    while True:
        created = httpx.post(
            f"{run.stack.urls['tokens']}/v1/tokens",
            json={"name": "promoted", "expire_in_days": 5},
            headers=bearer(collaborator.session),
        )
        if created.status_code == 201 or time.monotonic() > deadline:
            break
        time.sleep(0.1)

    assert refused.status_code == 403
    assert created.status_code == 201
