"""Rotation of the hash key: tokens stored under an earlier key keep working."""

from __future__ import annotations

import asyncio
import json

import asyncpg
import httpx

from services.launcher import free_port
from tests.conftest import Person, RunContext, bearer

# The first tokens process of the run uses the development default key.
FIRST_KEY_ID = "k1"
FIRST_KEY = "tokens-hash-key-dev-only"


def stored_key_id(run: RunContext, token_id: str) -> str:
    async def read() -> str:
        conn = await asyncpg.connect(run.infra.pg_dsn_for(run.database))
        try:
            key_id: str = await conn.fetchval(
                "SELECT hash_key_id FROM tokens.tokens WHERE id = $1::uuid", token_id
            )
            return key_id
        finally:
            await conn.close()

    return asyncio.run(read())


def test_new_key_validates_old_tokens(run: RunContext, person: Person) -> None:
    old = run.api.create_token(person.session, "before rotation", 5)
    replica = "tokens-new-key"
    url = run.stack.start_replica(
        "tokens",
        replica,
        free_port(),
        extra_env={
            "PAT_HASH_KEY": "tokens-hash-key-2-dev-only",
            "PAT_HASH_KEY_ID": "k2",
            "PAT_ACCEPTED_HASH_KEYS": json.dumps({FIRST_KEY_ID: FIRST_KEY}),
        },
    )
    try:
        before = stored_key_id(run, old["id"])
        validated = httpx.get(f"{url}/v1/auth/forward", headers=bearer(old["token"]))
        after = stored_key_id(run, old["id"])
        again = httpx.get(f"{url}/v1/auth/forward", headers=bearer(old["token"]))
        new = httpx.post(
            f"{url}/v1/tokens",
            json={"name": "after rotation", "expire_in_days": 5},
            headers=bearer(person.session),
        )
    finally:
        run.stack.stop_process(replica)

    assert before == FIRST_KEY_ID
    assert validated.status_code == 200
    assert validated.headers["X-Auth-Token-Id"] == old["id"]
    assert after == "k2"
    assert again.status_code == 200
    assert new.status_code == 201
    assert stored_key_id(run, new.json()["id"]) == "k2"
