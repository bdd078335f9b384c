"""The self resource, rotation of a token's value, and administrators' filters."""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from typing import Any

import httpx

from tests.conftest import Person, RunContext, bearer

DAY = 86400


def forward_auth(run: RunContext, value: str) -> int:
    url = f"{run.stack.urls['tokens']}/v1/auth/forward"
    return httpx.get(url, headers=bearer(value)).status_code


def rotate(
    run: RunContext, credential: str, token_id: str, body: dict[str, Any]
) -> httpx.Response:
    return httpx.post(
        f"{run.stack.urls['tokens']}/v1/tokens/{token_id}/rotate",
        json=body,
        headers=bearer(credential),
    )


def test_token_reports_itself(run: RunContext, person: Person) -> None:
    token = run.api.create_token(person.session, "who am i", 5)

    response = httpx.get(
        f"{run.stack.urls['tokens']}/v1/tokens/self", headers=bearer(token["token"])
    )

    assert response.status_code == 200
    assert response.json()["id"] == token["id"]
    assert response.json()["name"] == "who am i"
    assert "token" not in response.json()


def test_token_deletes_itself(run: RunContext, person: Person) -> None:
    token = run.api.create_token(person.session, "self destruct", 5)
    other = run.api.create_token(person.session, "bystander", 5)
    url = f"{run.stack.urls['tokens']}/v1/tokens/self"

    deleted = httpx.delete(url, headers=bearer(token["token"]))

    assert deleted.status_code == 204
    assert forward_auth(run, token["token"]) == 401
    assert forward_auth(run, other["token"]) == 200


def test_token_deletes_only_itself(run: RunContext, person: Person) -> None:
    token = run.api.create_token(person.session, "deleter", 5)
    sibling = run.api.create_token(person.session, "sibling", 5)
    url = f"{run.stack.urls['tokens']}/v1/tokens"

    sibling_deleted = httpx.delete(
        f"{url}/{sibling['id']}", headers=bearer(token["token"])
    )
    self_deleted = httpx.delete(f"{url}/{token['id']}", headers=bearer(token["token"]))

    assert sibling_deleted.status_code == 403
    assert "only itself" in sibling_deleted.json()["detail"]
    assert forward_auth(run, sibling["token"]) == 200
    assert self_deleted.status_code == 204
    assert forward_auth(run, token["token"]) == 401


def test_self_needs_a_token(run: RunContext, person: Person) -> None:
    url = f"{run.stack.urls['tokens']}/v1/tokens/self"

    shown = httpx.get(url, headers=bearer(person.session))
    deleted = httpx.delete(url, headers=bearer(person.session))

    assert shown.status_code == 404
    assert "Authorization" in shown.json()["detail"]
    assert deleted.status_code == 404


def test_rotation_without_overlap(run: RunContext, person: Person) -> None:
    token = run.api.create_token(person.session, "rotate me", 5)
    old_value = token["token"]
    assert forward_auth(run, old_value) == 200

    response = rotate(run, person.session, token["id"], {"expire_in_days": 30})

    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    rotated = response.json()
    assert rotated["id"] == token["id"]
    assert rotated["name"] == "rotate me"
    assert rotated["token"] != old_value
    assert rotated["rotated_at"] is not None
    expires_at = datetime.fromisoformat(rotated["expires_at"])
    rotated_at = datetime.fromisoformat(rotated["rotated_at"])
    assert expires_at - rotated_at == timedelta(days=30)
    assert forward_auth(run, old_value) == 401
    assert forward_auth(run, rotated["token"]) == 200


def test_rotation_with_overlap(run: RunContext, person: Person) -> None:
    token = run.api.create_token(person.session, "overlapping", 5)
    old_value = token["token"]

    response = rotate(
        run,
        person.session,
        token["id"],
        {"expire_in_days": 10, "overlap_seconds": 3600},
    )
    new_value = response.json()["token"]
    during = (forward_auth(run, old_value), forward_auth(run, new_value))
    run.api.advance_clock(3601)
    after = (forward_auth(run, old_value), forward_auth(run, new_value))

    assert response.status_code == 200
    assert during == (200, 200)
    assert after == (401, 200)


def test_rotation_rules(run: RunContext, admin: str, person: Person) -> None:
    token = run.api.create_token(person.session, "rules", 5)

    by_token = rotate(run, token["token"], token["id"], {"expire_in_days": 5})
    by_admin = rotate(run, admin, token["id"], {"expire_in_days": 5})
    too_long = rotate(run, person.session, token["id"], {"expire_in_days": 181})
    long_overlap = rotate(
        run,
        person.session,
        token["id"],
        {"expire_in_days": 5, "overlap_seconds": 8 * DAY},
    )
    missing_expiry = rotate(run, person.session, token["id"], {})

    assert by_token.status_code == 403
    assert by_admin.status_code == 404
    assert too_long.status_code == 422
    assert too_long.json()["detail"][0]["loc"] == ["body", "expire_in_days"]
    assert long_overlap.status_code == 422
    assert long_overlap.json()["detail"][0]["loc"] == ["body", "overlap_seconds"]
    assert missing_expiry.status_code == 422
    assert forward_auth(run, token["token"]) == 200


def test_rotated_event_published(run: RunContext, person: Person) -> None:
    token = run.api.create_token(person.session, "evented", 5)
    rotate(run, person.session, token["id"], {"expire_in_days": 9})

    found: list[dict[str, Any]] = []
    deadline = time.monotonic() + 20
    while not found and time.monotonic() < deadline:
        found = [
            e
            for e in run.events.of_type("token.rotated.v1")
            if e["value"] and e["value"]["token_id"] == token["id"]
        ]
        time.sleep(0.1)

    [event] = found
    assert event["key"] == person.id
    assert event["value"]["name"] == "evented"
    assert "token" not in event["value"]


def test_admin_filters_tokens(run: RunContext, admin: str, person: Person) -> None:
    soon = run.api.create_token(person.session, "expires soon", 2)
    later = run.api.create_token(person.session, "expires later", 20)
    gone = run.api.create_token(person.session, "deleted", 20)
    run.api.request(
        "DELETE", "tokens", f"/v1/tokens/{gone['id']}", person.session, expect=204
    )
    used = run.api.create_token(person.session, "used", 20)
    assert forward_auth(run, used["token"]) == 200
    url = f"{run.stack.urls['tokens']}/v1/users/{person.id}/tokens"
    in_ten_days = datetime.fromisoformat(soon["created_at"]) + timedelta(days=10)
    far_future = datetime.fromisoformat(soon["created_at"]) + timedelta(days=400)

    def names(**params: str) -> set[str]:
        response = httpx.get(url, params=params, headers=bearer(admin))
        assert response.status_code == 200, response.text
        return {t["name"] for t in response.json()}

    deleted = httpx.get(url, params={"state": "deleted"}, headers=bearer(admin))
    wait_for_last_use(run, admin, person, used["id"])

    assert names() == {"expires soon", "expires later", "used"}
    assert names(state="active") == {"expires soon", "expires later", "used"}
    assert names(state="expired") == set()
    assert [t["name"] for t in deleted.json()] == ["deleted"]
    assert deleted.json()[0]["state"] == "deleted"
    assert deleted.json()[0]["revoked_by"] == person.id
    assert names(expires_before=in_ten_days.isoformat()) == {"expires soon"}
    assert names(last_used_before=far_future.isoformat()) == {
        "expires soon",
        "expires later",
        "used",
    }
    assert names(last_used_before=soon["created_at"]) == {
        "expires soon",
        "expires later",
    }
    assert later["id"] != soon["id"]


def test_admin_filter_rejects_bad_values(
    run: RunContext, admin: str, person: Person
) -> None:
    url = f"{run.stack.urls['tokens']}/v1/users/{person.id}/tokens"

    for params in (
        {"state": "revoked"},
        {"expires_before": "tomorrow"},
        {"last_used_before": "2026-01-01T00:00:00"},
    ):
        response = httpx.get(url, params=params, headers=bearer(admin))
        assert response.status_code == 422, params


def wait_for_last_use(
    run: RunContext, admin: str, person: Person, token_id: str
) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        tokens = run.api.request(
            "GET", "tokens", f"/v1/users/{person.id}/tokens", admin
        )
        if any(t["id"] == token_id and t["last_used_at"] for t in tokens):
            return
        time.sleep(0.1)
    raise TimeoutError(f"the last use of token {token_id} was not recorded")
