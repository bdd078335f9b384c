"""Forward auth rejects an address that sent too many invalid tokens.

The tests use a tokens replica of their own with a low limit, so that the
other tests, which all send from 127.0.0.1, never reach it. Each test sends
from its own address: in ``X-Forwarded-For`` to the replica, or from another
loopback address to nginx.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from infra.nginx import NginxGateway
from services.launcher import free_port
from services.tokens import secret
from tests.conftest import Person, RunContext

LIMIT = 5
WINDOW_SECONDS = 2


@dataclass
class Limited:
    tokens_url: str
    gateway_url: str


def _wait_until_ready(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} was not ready within {timeout} s")


@pytest.fixture(scope="module")
def limited(run: RunContext) -> Iterator[Limited]:
    replica_url = run.stack.start_replica(
        "tokens",
        "tokens-limited",
        free_port(),
        {
            "PAT_VALIDATION_FAILURE_LIMIT": str(LIMIT),
            "PAT_VALIDATION_FAILURE_WINDOW_SECONDS": str(WINDOW_SECONDS),
        },
    )
    _wait_until_ready(replica_url)
    nginx = NginxGateway(
        work_dir=run.infra.run_dir / "nginx" / f"{run.run_id}-limited",
        port=free_port(),
        tokens_url=replica_url,
        locations={"/v1/": run.stack.urls["profile"]},
    )
    nginx.start()
    try:
        yield Limited(replica_url, nginx.url)
    finally:
        nginx.stop()
        run.stack.stop_process("tokens-limited")


def bearer(credential: str, address: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {credential}", "X-Forwarded-For": address}


def _fail_until_limited(url: str, address: str) -> list[int]:
    statuses = []
    for number in range(LIMIT):
        credential = secret.generate() if number % 2 else "ecpat_malformed"
        response = httpx.get(url, headers=bearer(credential, address))
        statuses.append(response.status_code)
    return statuses


def test_limit_rejects_valid_token(
    limited: Limited, person: Person, run: RunContext
) -> None:
    token = run.api.create_token(person.session, "limited address", 5)["token"]
    url = f"{limited.tokens_url}/v1/auth/forward"
    started = time.monotonic()

    failures = _fail_until_limited(url, "198.51.100.7")
    rejected = httpx.get(url, headers=bearer(token, "198.51.100.7"))
    elsewhere = httpx.get(url, headers=bearer(token, "198.51.100.8"))
    elapsed = time.monotonic() - started

    assert elapsed < WINDOW_SECONDS, "the requests took longer than the window"
    assert failures == [401] * LIMIT
    assert rejected.status_code == 401
    assert rejected.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
    retry_after = int(rejected.headers["Retry-After"])
    assert 1 <= retry_after <= WINDOW_SECONDS
    assert elsewhere.status_code == 200


def test_limit_expires_after_window(
    limited: Limited, person: Person, run: RunContext
) -> None:
    token = run.api.create_token(person.session, "limit expiry", 5)["token"]
    url = f"{limited.tokens_url}/v1/auth/validate"

    failures = _fail_until_limited(url, "2001:db8::17")
    rejected = httpx.get(url, headers=bearer(token, "2001:db8::17"))
    time.sleep(WINDOW_SECONDS + 0.5)
    after = httpx.get(url, headers=bearer(token, "2001:db8::17"))

    assert failures == [401] * LIMIT
    assert rejected.status_code == 401
    assert "Retry-After" in rejected.headers
    assert after.status_code == 200
    assert "Retry-After" not in after.headers


def test_missing_header_not_counted(
    limited: Limited, person: Person, run: RunContext
) -> None:
    token = run.api.create_token(person.session, "anonymous neighbours", 5)["token"]
    url = f"{limited.tokens_url}/v1/auth/forward"
    address = {"X-Forwarded-For": "198.51.100.9"}

    anonymous = [httpx.get(url, headers=address).status_code for _ in range(LIMIT * 2)]
    response = httpx.get(url, headers=bearer(token, "198.51.100.9"))

    assert anonymous == [401] * (LIMIT * 2)
    assert response.status_code == 200


def _from_address(address: str) -> httpx.Client:
    return httpx.Client(transport=httpx.HTTPTransport(local_address=address))


def test_limit_at_nginx_is_401(
    limited: Limited, person: Person, run: RunContext
) -> None:
    token = run.api.create_token(person.session, "limited at nginx", 5)["token"]
    url = f"{limited.gateway_url}/v1/me"
    with _from_address("127.0.0.11") as client:
        failures = [
            client.get(url, headers={"Authorization": "Bearer ecpat_bad"}).status_code
            for _ in range(LIMIT)
        ]
        rejected = client.get(url, headers={"Authorization": f"Bearer {token}"})
    with _from_address("127.0.0.12") as client:
        elsewhere = client.get(url, headers={"Authorization": f"Bearer {token}"})

    assert failures == [401] * LIMIT
    assert rejected.status_code == 401
    assert 'error="invalid_token"' in rejected.headers["WWW-Authenticate"]
    assert elsewhere.status_code == 200
