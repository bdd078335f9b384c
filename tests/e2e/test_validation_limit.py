"""Forward auth refuses an address that sent too many invalid tokens.

Each test sends from its own address in ``X-Forwarded-For``, so no other
test shares its count. tests/e2e/test_gateway.py checks the limit behind
nginx.
"""

from __future__ import annotations

import time

import httpx

from services.tokens import secret
from tests.conftest import (
    VALIDATION_FAILURE_LIMIT,
    VALIDATION_FAILURE_WINDOW_SECONDS,
    Person,
    RunContext,
)


def bearer(credential: str, address: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {credential}", "X-Forwarded-For": address}


def _fail_until_limited(url: str, address: str) -> list[int]:
    statuses = []
    for number in range(VALIDATION_FAILURE_LIMIT):
        credential = secret.generate() if number % 2 else "ecpat_malformed"
        statuses.append(httpx.get(url, headers=bearer(credential, address)).status_code)
    return statuses


def test_limit_refuses_valid_token(run: RunContext, person: Person) -> None:
    token = run.api.create_token(person.session, "limited address", 5)["token"]
    url = f"{run.stack.urls['tokens']}/v1/auth/forward"
    started = time.monotonic()

    failures = _fail_until_limited(url, "198.51.100.7")
    limited = httpx.get(url, headers=bearer(token, "198.51.100.7"))
    elsewhere = httpx.get(url, headers=bearer(token, "198.51.100.8"))
    elapsed = time.monotonic() - started

    assert elapsed < VALIDATION_FAILURE_WINDOW_SECONDS, "the loop was too slow"
    assert failures == [401] * VALIDATION_FAILURE_LIMIT
    assert limited.status_code == 401
    assert limited.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
    retry_after = int(limited.headers["Retry-After"])
    assert 1 <= retry_after <= VALIDATION_FAILURE_WINDOW_SECONDS
    assert elsewhere.status_code == 200


def test_limit_expires_after_window(run: RunContext, person: Person) -> None:
    token = run.api.create_token(person.session, "limit expiry", 5)["token"]
    url = f"{run.stack.urls['tokens']}/v1/auth/validate"

    _fail_until_limited(url, "2001:db8::17")
    limited = httpx.get(url, headers=bearer(token, "2001:db8::17"))
    time.sleep(VALIDATION_FAILURE_WINDOW_SECONDS + 0.5)
    after = httpx.get(url, headers=bearer(token, "2001:db8::17"))

    assert limited.status_code == 401
    assert "Retry-After" in limited.headers
    assert after.status_code == 200
    assert "Retry-After" not in after.headers


def test_missing_header_not_counted(run: RunContext, person: Person) -> None:
    token = run.api.create_token(person.session, "anonymous neighbours", 5)["token"]
    url = f"{run.stack.urls['tokens']}/v1/auth/forward"
    address = {"X-Forwarded-For": "198.51.100.9"}

    anonymous = [
        httpx.get(url, headers=address).status_code
        for _ in range(VALIDATION_FAILURE_LIMIT + 5)
    ]
    response = httpx.get(url, headers=bearer(token, "198.51.100.9"))

    assert anonymous == [401] * (VALIDATION_FAILURE_LIMIT + 5)
    assert response.status_code == 200
