"""A small synchronous client of the services' REST APIs, for scripts.

It covers the calls that the demo and the tests make; each method returns
the decoded JSON body and raises ``ApiError`` on an unexpected status.
"""

from __future__ import annotations

import time
from typing import Any

import httpx


class ApiError(Exception):
    def __init__(self, response: httpx.Response) -> None:
        request = response.request
        message = (
            f"{request.method} {request.url} returned {response.status_code}: "
            f"{response.text[:500]}"
        )
        super().__init__(message)
        self.response = response


def bearer(credential: str) -> dict[str, str]:
    """Return the Authorization header that presents ``credential``."""
    return {"Authorization": f"Bearer {credential}"}


class Api:
    """Calls the four services at the given base URLs."""

    def __init__(self, urls: dict[str, str], timeout: float = 10.0) -> None:
        self.urls = urls
        self.http = httpx.Client(timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def request(
        self,
        method: str,
        service: str,
        path: str,
        credential: str | None = None,
        expect: int = 200,
        **kwargs: Any,
    ) -> Any:
        headers = bearer(credential) if credential else {}
        response = self.http.request(
            method, self.urls[service] + path, headers=headers, **kwargs
        )
        if response.status_code != expect:
            raise ApiError(response)
        return response.json() if response.content else None

    def sign_in(self, username: str, password: str) -> str:
        body = {"username": username, "password": password}
        session = self.request("POST", "profile", "/v1/sessions", json=body, expect=201)
        token: str = session["token"]
        return token

    def create_user(self, admin: str, **fields: Any) -> dict[str, Any]:
        user: dict[str, Any] = self.request(
            "POST", "profile", "/v1/users", admin, json=fields, expect=201
        )
        return user

    def change_setting(self, admin: str, key: str, value: Any) -> dict[str, Any]:
        setting: dict[str, Any] = self.request(
            "PUT", "settings", f"/v1/settings/{key}", admin, json={"value": value}
        )
        return setting

    def create_token(self, session: str, name: str, days: int) -> dict[str, Any]:
        body = {"name": name, "expire_in_days": days}
        token: dict[str, Any] = self.request(
            "POST", "tokens", "/v1/tokens", session, json=body, expect=201
        )
        return token

    def wait_for_feature(
        self, credential: str, enabled: bool, timeout: float = 30.0
    ) -> None:
        """Wait until the tokens service has learned the setting's new value."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            feature = self.request("GET", "tokens", "/v1/tokens/feature", credential)
            if feature["enabled"] is enabled:
                return
            time.sleep(0.1)
        raise TimeoutError(f"tokens did not see pat_enabled={enabled} in {timeout} s")

    def wait_for_user(self, admin: str, user_id: str, timeout: float = 30.0) -> None:
        """Wait until the tokens service has learned about a new user."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            response = self.http.get(
                f"{self.urls['tokens']}/v1/users/{user_id}/tokens",
                headers=bearer(admin),
            )
            if response.status_code == 200:
                return
            time.sleep(0.1)
        raise TimeoutError(f"tokens did not learn user {user_id} in {timeout} s")

    def advance_clock(self, seconds: int) -> dict[str, Any]:
        clock: dict[str, Any] = self.request(
            "POST", "tokens", "/v1/dev/clock/advance", json={"seconds": seconds}
        )
        return clock


def wait_for_validation_cache(tokens_url: str, timeout: float = 30.0) -> None:
    """Wait until a tokens process has enabled its validation cache.

    The cache is enabled once the process reads its invalidation events, so
    a deletion through another process reaches it only after this returns.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if httpx.get(f"{tokens_url}/v1/dev/validation-cache").json()["enabled"]:
            return
        time.sleep(0.1)
    message = f"the validation cache of {tokens_url} was not enabled in {timeout} s"
    raise TimeoutError(message)
