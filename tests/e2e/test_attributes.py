"""Contact attributes: definitions, typed values and who may change them."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from tests.conftest import Person, RunContext, bearer, make_person


def define(
    run: RunContext, admin: str, value_type: str, user_editable: bool = False
) -> dict[str, Any]:
    body = {
        "name": f"{value_type} {uuid.uuid4().hex[:8]}",
        "type": value_type,
        "user_editable": user_editable,
    }
    definition: dict[str, Any] = run.api.request(
        "POST", "profile", "/v1/attributes", admin, json=body, expect=201
    )
    return definition


def set_value(
    run: RunContext, credential: str, user_id: str, attribute_id: str, value: object
) -> httpx.Response:
    return httpx.put(
        f"{run.stack.urls['profile']}/v1/users/{user_id}/attributes/{attribute_id}",
        json={"value": value},
        headers=bearer(credential),
    )


def value_in_profile(run: RunContext, person: Person, attribute_id: str) -> Any:
    profile = run.api.request("GET", "profile", "/v1/me", person.session)
    [entry] = [a for a in profile["attributes"] if a["id"] == attribute_id]
    return entry["value"]


@pytest.mark.parametrize(
    ("value_type", "value"),
    [
        ("text", "Room 4.12"),
        ("number", 42.5),
        ("date", "2026-12-31"),
        ("email", "deputy@example.org"),
        ("yes_no", True),
    ],
)
def test_admin_sets_typed_value(
    run: RunContext, admin: str, person: Person, value_type: str, value: object
) -> None:
    definition = define(run, admin, value_type)

    unset = value_in_profile(run, person, definition["id"])
    response = set_value(run, admin, person.id, definition["id"], value)

    assert unset is None
    assert response.status_code == 200
    assert value_in_profile(run, person, definition["id"]) == value


@pytest.mark.parametrize(
    ("value_type", "value"),
    [
        ("text", 5),
        ("text", "x" * 10_000),
        ("text", "bell\x07"),
        ("number", "12"),
        ("number", True),
        ("date", "2026-13-01"),
        ("date", "31.12.2026"),
        ("email", "no-at-sign"),
        ("yes_no", "yes"),
        ("yes_no", 1),
    ],
)
def test_wrong_value_type_rejected(
    run: RunContext, admin: str, person: Person, value_type: str, value: object
) -> None:
    definition = define(run, admin, value_type)

    response = set_value(run, admin, person.id, definition["id"], value)

    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "value"]
    assert value_type in response.json()["detail"][0]["msg"]
    assert value_in_profile(run, person, definition["id"]) is None


def test_user_edits_own_editable_value(
    run: RunContext, admin: str, person: Person
) -> None:
    editable = define(run, admin, "text", user_editable=True)
    locked = define(run, admin, "text")
    url = f"{run.stack.urls['profile']}/v1/me/attributes"

    allowed = httpx.put(
        f"{url}/{editable['id']}",
        json={"value": "mine"},
        headers=bearer(person.session),
    )
    refused = httpx.put(
        f"{url}/{locked['id']}", json={"value": "mine"}, headers=bearer(person.session)
    )

    assert allowed.status_code == 200
    assert refused.status_code == 403
    assert value_in_profile(run, person, editable["id"]) == "mine"
    assert value_in_profile(run, person, locked["id"]) is None


def test_null_value_removes_it(run: RunContext, admin: str, person: Person) -> None:
    definition = define(run, admin, "number")
    set_value(run, admin, person.id, definition["id"], 7)

    response = set_value(run, admin, person.id, definition["id"], None)

    assert response.status_code == 200
    assert value_in_profile(run, person, definition["id"]) is None


def test_rename_keeps_values(run: RunContext, admin: str, person: Person) -> None:
    definition = define(run, admin, "text")
    set_value(run, admin, person.id, definition["id"], "kept")
    new_name = f"renamed {uuid.uuid4().hex[:8]}"

    response = httpx.patch(
        f"{run.stack.urls['profile']}/v1/attributes/{definition['id']}",
        json={"name": new_name},
        headers=bearer(admin),
    )
    profile = run.api.request("GET", "profile", "/v1/me", person.session)
    [entry] = [a for a in profile["attributes"] if a["id"] == definition["id"]]

    assert response.status_code == 200
    assert entry["name"] == new_name
    assert entry["value"] == "kept"


def test_removed_definition_removes_values(
    run: RunContext, admin: str, person: Person
) -> None:
    definition = define(run, admin, "text")
    set_value(run, admin, person.id, definition["id"], "gone soon")
    url = f"{run.stack.urls['profile']}/v1/attributes/{definition['id']}"

    deleted = httpx.delete(url, headers=bearer(admin))
    again = httpx.delete(url, headers=bearer(admin))
    recreated = run.api.request(
        "POST",
        "profile",
        "/v1/attributes",
        admin,
        json={"name": definition["name"], "type": "text"},
        expect=201,
    )

    assert deleted.status_code == 204
    assert again.status_code == 404
    assert value_in_profile(run, person, recreated["id"]) is None


def test_duplicate_name_rejected(run: RunContext, admin: str) -> None:
    definition = define(run, admin, "text")

    response = httpx.post(
        f"{run.stack.urls['profile']}/v1/attributes",
        json={"name": definition["name"].upper(), "type": "number"},
        headers=bearer(admin),
    )

    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "name"]


@pytest.mark.parametrize(
    "body",
    [{"name": "", "type": "text"}, {"name": "Colour", "type": "colour"}],
)
def test_invalid_definition_rejected(
    run: RunContext, admin: str, body: dict[str, str]
) -> None:
    response = httpx.post(
        f"{run.stack.urls['profile']}/v1/attributes", json=body, headers=bearer(admin)
    )

    assert response.status_code == 422


def test_only_admins_define_attributes(run: RunContext, person: Person) -> None:
    response = httpx.post(
        f"{run.stack.urls['profile']}/v1/attributes",
        json={"name": "Sneaky", "type": "text"},
        headers=bearer(person.session),
    )

    assert response.status_code == 403


def test_other_users_values_not_found(
    run: RunContext, admin: str, person: Person
) -> None:
    other = make_person(run, admin)
    definition = define(run, admin, "text", user_editable=True)
    set_value(run, admin, other.id, definition["id"], "private")

    read = httpx.get(
        f"{run.stack.urls['profile']}/v1/users/{other.id}/attributes",
        headers=bearer(person.session),
    )
    changed = set_value(run, person.session, other.id, definition["id"], "mine now")

    assert read.status_code == 404
    assert changed.status_code == 404
    assert value_in_profile(run, other, definition["id"]) == "private"
