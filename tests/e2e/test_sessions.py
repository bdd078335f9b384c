"""Sessions end when they expire, when their owner signs out, and never leak."""

from __future__ import annotations

import asyncio

import asyncpg
import httpx

from tests.conftest import Person, RunContext, bearer


def test_expired_session_rejected(run: RunContext, person: Person) -> None:
    url = f"{run.stack.urls['profile']}/v1/me"
    before = httpx.get(url, headers=bearer(person.session))

    async def expire_sessions() -> None:
        conn = await asyncpg.connect(run.infra.pg_dsn_for(run.database))
        try:
            await conn.execute(
                "UPDATE profile.sessions SET expires_at = now() - interval '1 second'"
                " WHERE user_id = $1",
                before.json()["id"],
            )
        finally:
            await conn.close()

    asyncio.run(expire_sessions())
    after = httpx.get(url, headers=bearer(person.session))
    tokens = httpx.get(
        f"{run.stack.urls['tokens']}/v1/tokens", headers=bearer(person.session)
    )

    assert before.status_code == 200
    assert after.status_code == 401
    assert tokens.status_code == 401


def test_sign_out_ends_session(run: RunContext, person: Person) -> None:
    current = f"{run.stack.urls['profile']}/v1/sessions/current"

    signed_out = httpx.delete(current, headers=bearer(person.session))
    after = httpx.get(current, headers=bearer(person.session))
    settings = httpx.get(
        f"{run.stack.urls['settings']}/v1/settings", headers=bearer(person.session)
    )

    assert signed_out.status_code == 204
    assert after.status_code == 401
    assert settings.status_code == 401


def test_session_response_not_cached(run: RunContext, person: Person) -> None:
    response = httpx.post(
        f"{run.stack.urls['profile']}/v1/sessions",
        json={"username": person.user["username"], "password": person.password},
    )

    assert response.status_code == 201
    assert response.headers["Cache-Control"] == "no-store"
