"""Token creation rules, visibility between people, and the PAT setting."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import httpx
import pytest

from tests.conftest import Person, RunContext, bearer, make_person


def create(run: RunContext, session: str, body: Any) -> httpx.Response:
    return httpx.post(
        f"{run.stack.urls['tokens']}/v1/tokens", json=body, headers=bearer(session)
    )


def token_count(run: RunContext, person: Person) -> int:
    response = httpx.get(
        f"{run.stack.urls['tokens']}/v1/tokens", headers=bearer(person.session)
    )
    assert response.status_code == 200
    return len(response.json())


@pytest.mark.parametrize("days", [1, 180])
def test_expire_in_days_accepted(run: RunContext, person: Person, days: int) -> None:
    response = create(
        run, person.session, {"name": f"days {days}", "expire_in_days": days}
    )

    assert response.status_code == 201
    assert response.headers["Cache-Control"] == "no-store"


@pytest.mark.parametrize("days", [0, -1, 181, 1.5, "30", "abc", None, True])
def test_expire_in_days_rejected(run: RunContext, person: Person, days: Any) -> None:
    before = token_count(run, person)

    response = create(run, person.session, {"name": "bad", "expire_in_days": days})

    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", "expire_in_days"]
    assert token_count(run, person) == before


def test_expire_in_days_missing(run: RunContext, person: Person) -> None:
    response = create(run, person.session, {"name": "no expiry"})

    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "expire_in_days"]
    assert token_count(run, person) == 0


@pytest.mark.parametrize("name", ["", "   ", "\t\n"])
def test_blank_token_name_rejected(run: RunContext, person: Person, name: str) -> None:
    response = create(run, person.session, {"name": name, "expire_in_days": 5})

    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "name"]
    assert token_count(run, person) == 0


def test_malformed_json_body_rejected(run: RunContext, person: Person) -> None:
    response = httpx.post(
        f"{run.stack.urls['tokens']}/v1/tokens",
        content=b"{not json",
        headers={**bearer(person.session), "Content-Type": "application/json"},
    )

    assert response.status_code == 422


def test_administrator_maximum_applies(
    run: RunContext, admin: str, person: Person
) -> None:
    run.api.change_setting(admin, "pat_max_expire_days", 30)
    try:
        deadline_ok = False
        for _ in range(100):
            feature = run.api.request("GET", "tokens", "/v1/tokens/feature", admin)
            if feature["max_expire_days"] == 30:
                deadline_ok = True
                break
            asyncio.run(asyncio.sleep(0.1))
        response = create(run, person.session, {"name": "long", "expire_in_days": 31})
        accepted = create(run, person.session, {"name": "ok", "expire_in_days": 30})
    finally:
        run.api.change_setting(admin, "pat_max_expire_days", 180)

    assert deadline_ok
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "expire_in_days"]
    assert "30" in response.json()["detail"][0]["msg"]
    assert accepted.status_code == 201


def test_setting_rejects_out_of_bounds_value(run: RunContext, admin: str) -> None:
    for value in (0, 181, "yes", 1.5, None):
        response = httpx.put(
            f"{run.stack.urls['settings']}/v1/settings/pat_max_expire_days",
            json={"value": value},
            headers=bearer(admin),
        )
        assert response.status_code == 422, value
        assert response.json()["detail"][0]["loc"] == ["body", "value"]


def test_only_administrators_change_settings(run: RunContext, person: Person) -> None:
    response = httpx.put(
        f"{run.stack.urls['settings']}/v1/settings/pat_enabled",
        json={"value": False},
        headers=bearer(person.session),
    )

    assert response.status_code == 403


def test_settings_search_finds_pat(run: RunContext, person: Person) -> None:
    response = httpx.get(
        f"{run.stack.urls['settings']}/v1/settings",
        params={"q": "PAT"},
        headers=bearer(person.session),
    )

    assert response.status_code == 200
    found = {s["key"]: s for s in response.json()}
    assert "pat_enabled" in found
    setting = found["pat_enabled"]
    assert setting["label"] == "Creation and Authentication of Personal Access Tokens"
    assert setting["section"] == "Web"
    assert setting["default"] is False


def test_settings_need_sign_in(run: RunContext) -> None:
    response = httpx.get(f"{run.stack.urls['settings']}/v1/settings")

    assert response.status_code == 401


def test_setting_change_recorded(run: RunContext, admin: str) -> None:
    run.api.change_setting(admin, "pat_max_expire_days", 90)
    run.api.change_setting(admin, "pat_max_expire_days", 180)

    history = run.api.request(
        "GET", "settings", "/v1/settings/pat_max_expire_days/history", admin
    )

    last_two = history[-2:]
    assert [c["value"] for c in last_two] == [90, 180]
    assert all(c["changed_by"] for c in last_two)
    assert last_two[0]["changed_at"] <= last_two[1]["changed_at"]


def test_collaborator_cannot_create(run: RunContext, admin: str) -> None:
    collaborator = make_person(run, admin, role="collaborator")

    response = create(run, collaborator.session, {"name": "x", "expire_in_days": 5})

    assert response.status_code == 403
    assert token_count(run, collaborator) == 0


def test_token_cannot_create_tokens(run: RunContext, person: Person) -> None:
    token = run.api.create_token(person.session, "robot", 5)

    response = create(run, token["token"], {"name": "child", "expire_in_days": 5})

    assert response.status_code == 403


def test_token_cannot_open_session(run: RunContext, person: Person) -> None:
    token = run.api.create_token(person.session, "no sessions", 5)
    body = {"username": person.user["username"], "password": person.password}

    response = httpx.post(
        f"{run.stack.urls['profile']}/v1/sessions",
        json=body,
        headers=bearer(token["token"]),
    )

    assert response.status_code == 403
    assert "cannot open a session" in response.json()["detail"]
    assert "token" not in response.json()


def test_other_users_token_is_not_found(
    run: RunContext, admin: str, person: Person
) -> None:
    other = make_person(run, admin)
    token = run.api.create_token(person.session, "mine", 5)
    url = f"{run.stack.urls['tokens']}/v1/tokens/{token['id']}"

    seen_by_other = httpx.get(url, headers=bearer(other.session))
    deleted_by_other = httpx.delete(url, headers=bearer(other.session))
    seen_by_admin = httpx.get(url, headers=bearer(admin))
    listed_by_admin = httpx.get(
        f"{run.stack.urls['tokens']}/v1/users/{person.id}/tokens", headers=bearer(admin)
    )
    deleted_by_owner = httpx.delete(url, headers=bearer(person.session))
    deleted_again = httpx.delete(url, headers=bearer(person.session))

    assert seen_by_other.status_code == 404
    assert deleted_by_other.status_code == 404
    assert seen_by_admin.status_code == 200
    assert [t["id"] for t in listed_by_admin.json()] == [token["id"]]
    assert deleted_by_owner.status_code == 204
    assert deleted_again.status_code == 404


def test_admin_deletes_other_users_token(
    run: RunContext, admin: str, person: Person
) -> None:
    token = run.api.create_token(person.session, "theirs", 5)

    response = httpx.delete(
        f"{run.stack.urls['tokens']}/v1/tokens/{token['id']}", headers=bearer(admin)
    )

    assert response.status_code == 204
    assert token_count(run, person) == 0


def test_listing_never_shows_value(run: RunContext, person: Person) -> None:
    token = run.api.create_token(person.session, "listed", 5)

    listing = httpx.get(
        f"{run.stack.urls['tokens']}/v1/tokens", headers=bearer(person.session)
    )

    assert token["token"] not in listing.text
    [entry] = listing.json()
    assert set(entry) == {
        "id",
        "user_id",
        "name",
        "created_at",
        "rotated_at",
        "expires_at",
        "last_used_at",
        "last_used_address",
        "state",
    }
    assert entry["state"] == "active"


def test_switched_off_refuses_then_restores(
    run: RunContext, admin: str, person: Person
) -> None:
    token = run.api.create_token(person.session, "survivor", 5)
    validate = f"{run.stack.urls['tokens']}/v1/auth/validate"

    run.api.change_setting(admin, "pat_enabled", False)
    try:
        run.api.wait_for_feature(admin, enabled=False)
        creation_off = create(run, person.session, {"name": "off", "expire_in_days": 5})
        validation_off = httpx.get(validate, headers=bearer(token["token"]))
        listing_off = httpx.get(
            f"{run.stack.urls['tokens']}/v1/tokens", headers=bearer(person.session)
        )
    finally:
        run.api.change_setting(admin, "pat_enabled", True)
        run.api.wait_for_feature(admin, enabled=True)
    validation_on = httpx.get(validate, headers=bearer(token["token"]))
    creation_on = create(run, person.session, {"name": "on", "expire_in_days": 5})

    assert creation_off.status_code == 403
    assert "switched off" in creation_off.json()["detail"]
    assert validation_off.status_code == 403
    assert listing_off.status_code == 403
    assert validation_on.status_code == 200
    assert validation_on.json()["user_id"] == person.id
    assert validation_on.headers["X-Auth-Token-Id"] == token["id"]
    assert creation_on.status_code == 201


@pytest.mark.parametrize(
    "header",
    [None, "Bearer", "Basic abc", "Bearer ecpat_short", "Bearer ecpat_" + "A" * 36],
)
def test_validation_refuses_bad_credentials(
    run: RunContext, header: str | None
) -> None:
    headers = {"Authorization": header} if header else {}

    response = httpx.get(
        f"{run.stack.urls['tokens']}/v1/auth/validate", headers=headers
    )

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'


def test_token_value_stored_nowhere(
    run: RunContext, admin: str, person: Person
) -> None:
    token = run.api.create_token(person.session, "secret keeper", 5)
    value = token["token"]
    httpx.get(f"{run.stack.urls['profile']}/v1/me", headers=bearer(value))
    run.api.request(
        "DELETE", "tokens", f"/v1/tokens/{token['id']}", person.session, expect=204
    )

    async def dump_database() -> str:
        conn = await asyncpg.connect(run.infra.pg_dsn_for(run.database))
        try:
            tables = await conn.fetch(
                "SELECT table_schema, table_name FROM information_schema.tables"
                " WHERE table_schema IN ('settings', 'profile', 'tokens', 'notifier')"
            )
            parts: list[str] = []
            for table in tables:
                rows = await conn.fetch(
                    f'SELECT t::text AS row FROM "{table["table_schema"]}".'
                    f'"{table["table_name"]}" t'
                )
                parts.extend(row["row"] for row in rows)
            return "\n".join(parts)
        finally:
            await conn.close()

    database_text = asyncio.run(dump_database())
    event_text = "".join(
        r["raw"].decode(errors="replace") + str(r["headers"])
        for r in run.events.records
    )

    assert "secret keeper" in database_text  # the dump did read the tables
    assert value not in database_text
    assert value[6:] not in database_text
    assert value not in event_text
    assert value not in run.log_text()


def test_name_unique_among_active_tokens(run: RunContext, person: Person) -> None:
    first = run.api.create_token(person.session, "deploy", 5)

    same = create(run, person.session, {"name": "deploy", "expire_in_days": 5})
    other_case = create(run, person.session, {"name": "DEPLOY", "expire_in_days": 5})
    run.api.request(
        "DELETE", "tokens", f"/v1/tokens/{first['id']}", person.session, expect=204
    )
    after_delete = create(run, person.session, {"name": "deploy", "expire_in_days": 5})

    assert same.status_code == 409
    assert "deploy" in same.json()["detail"]
    assert other_case.status_code == 409
    assert after_delete.status_code == 201


def test_name_of_expired_token_reusable(run: RunContext, person: Person) -> None:
    run.api.create_token(person.session, "nightly", 1)
    run.api.advance_clock(86400)

    again = create(run, person.session, {"name": "nightly", "expire_in_days": 5})

    assert again.status_code == 201


def test_active_token_limit(run: RunContext, person: Person) -> None:
    for number in range(50):
        run.api.create_token(person.session, f"bulk {number}", 5)

    over = create(run, person.session, {"name": "one too many", "expire_in_days": 5})

    assert over.status_code == 409
    assert "50" in over.json()["detail"]
    assert token_count(run, person) == 50


def test_concurrent_creations_keep_name_unique(run: RunContext, person: Person) -> None:
    async def create_all() -> list[int]:
        async with httpx.AsyncClient() as client:
            responses = await asyncio.gather(
                *(
                    client.post(
                        f"{run.stack.urls['tokens']}/v1/tokens",
                        json={"name": "race", "expire_in_days": 5},
                        headers=bearer(person.session),
                    )
                    for _ in range(8)
                )
            )
        return sorted(r.status_code for r in responses)

    codes = asyncio.run(create_all())

    assert codes == [201] + [409] * 7
