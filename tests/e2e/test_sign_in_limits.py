"""Failed sign-ins are limited per username and per client address."""

from __future__ import annotations

import time
import uuid

import httpx

from tests.conftest import (
    SIGN_IN_MAX_PER_ADDRESS,
    SIGN_IN_WINDOW_SECONDS,
    Person,
    RunContext,
)

PER_USERNAME = 5


def sign_in(run: RunContext, username: str, password: str) -> httpx.Response:
    return httpx.post(
        f"{run.stack.urls['profile']}/v1/sessions",
        json={"username": username, "password": password},
    )


def test_account_limited_after_failures(run: RunContext, person: Person) -> None:
    username = person.user["username"]
    failures = [sign_in(run, username, "wrong-password!") for _ in range(PER_USERNAME)]

    limited = sign_in(run, username, person.password)
    time.sleep(int(limited.headers.get("Retry-After", "0")) + 1)
    after_wait = sign_in(run, username, person.password)

    assert [r.status_code for r in failures] == [401] * PER_USERNAME
    assert limited.status_code == 429
    assert 1 <= int(limited.headers["Retry-After"]) <= SIGN_IN_WINDOW_SECONDS
    assert after_wait.status_code == 201


def test_unknown_username_limited_alike(run: RunContext, person: Person) -> None:
    unknown = f"ghost{uuid.uuid4().hex[:8]}"
    for _ in range(PER_USERNAME):
        sign_in(run, unknown, "wrong-password!")
        sign_in(run, person.user["username"], "wrong-password!")

    ghost = sign_in(run, unknown, "wrong-password!")
    real = sign_in(run, person.user["username"], "wrong-password!")
    time.sleep(SIGN_IN_WINDOW_SECONDS + 1)

    assert ghost.status_code == real.status_code == 429
    assert ghost.json()["detail"].split(";")[0] == real.json()["detail"].split(";")[0]


def test_address_limited_across_usernames(run: RunContext, person: Person) -> None:
    for _ in range(SIGN_IN_MAX_PER_ADDRESS):
        sign_in(run, f"spray{uuid.uuid4().hex[:8]}", "wrong-password!")

    limited = sign_in(run, person.user["username"], person.password)
    time.sleep(int(limited.headers.get("Retry-After", "0")) + 1)
    after_wait = sign_in(run, person.user["username"], person.password)

    assert limited.status_code == 429
    assert "Retry-After" in limited.headers
    assert after_wait.status_code == 201
