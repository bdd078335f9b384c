"""nginx with auth_request in front of the REST API, and a second tokens replica.

nginx sends its forward-auth subrequests to the replica, while the tests
create, delete and switch off tokens through the first tokens process. So a
rejection at nginx after a change shows that the event reached the replica's
cache, whose entries otherwise live for 300 s in the tests.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from infra.nginx import NginxGateway
from services.client import wait_for_validation_cache
from services.launcher import free_port
from services.tokens import secret
from tests.conftest import Person, RunContext, bearer

DAY = 86400
HOP_SECONDS = 10.0


class _EchoHandler(BaseHTTPRequestHandler):
    """Returns the request's method, path and headers as JSON."""

    def _echo(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        body = json.dumps(
            {
                "method": self.command,
                "path": self.path,
                "headers": {k.lower(): v for k, v in self.headers.items()},
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_DELETE = _echo

    def log_message(self, format: str, *args: Any) -> None:
        pass


@dataclass
class Gateway:
    url: str
    replica_url: str
    nginx: NginxGateway


@pytest.fixture(scope="module")
def gateway(run: RunContext) -> Iterator[Gateway]:
    replica_url = run.stack.start_replica("tokens", "tokens-replica", free_port())
    wait_for_validation_cache(replica_url)
    echo = ThreadingHTTPServer(("127.0.0.1", 0), _EchoHandler)
    thread = threading.Thread(target=echo.serve_forever, daemon=True)
    thread.start()
    urls = run.stack.urls
    nginx = NginxGateway(
        work_dir=run.infra.run_dir / "nginx" / run.run_id,
        port=free_port(),
        tokens_url=replica_url,
        locations={
            "/echo/": f"http://127.0.0.1:{echo.server_address[1]}",
            "/v1/tokens": urls["tokens"],
            "~ ^/v1/users/[^/]+/tokens": urls["tokens"],
            "/v1/settings": urls["settings"],
            "/v1/": urls["profile"],
        },
        public_locations={"= /v1/sessions": urls["profile"]},
    )
    nginx.start()
    try:
        yield Gateway(nginx.url, replica_url, nginx)
    finally:
        nginx.stop()
        echo.shutdown()
        echo.server_close()
        run.stack.stop_process("tokens-replica")


def _cache_hits(url: str) -> int:
    hits: int = httpx.get(f"{url}/v1/dev/validation-cache").json()["hits"]
    return hits


def _wait_for_status(
    url: str, headers: dict[str, str], expected: int, timeout: float = HOP_SECONDS
) -> tuple[int, float]:
    """Poll ``url`` until it returns ``expected``; return the status and seconds."""
    start = time.monotonic()
    code = 0
    while time.monotonic() - start < timeout:
        code = httpx.get(url, headers=headers).status_code
        if code == expected:
            break
        time.sleep(0.02)
    return code, time.monotonic() - start


def test_valid_token_passes_with_identity(
    run: RunContext, gateway: Gateway, person: Person
) -> None:
    token = run.api.create_token(person.session, "through nginx", 5)
    spoofed = {**bearer(token["token"]), "X-Auth-User-Id": "someone-else"}

    echoed = httpx.get(f"{gateway.url}/echo/anything?x=1", headers=spoofed)
    posted = httpx.post(
        f"{gateway.url}/echo/upload", headers=bearer(token["token"]), content=b"x" * 10
    )
    profile = httpx.get(f"{gateway.url}/v1/me", headers=bearer(token["token"]))

    assert echoed.status_code == 200
    headers = echoed.json()["headers"]
    assert headers["x-auth-user-id"] == person.id
    assert headers["x-auth-username"] == person.user["username"]
    assert headers["x-auth-role"] == "user"
    assert headers["x-auth-token-id"] == token["id"]
    assert echoed.json()["path"] == "/echo/anything?x=1"
    assert posted.status_code == 200
    assert posted.json()["method"] == "POST"
    assert posted.json()["headers"]["x-auth-token-id"] == token["id"]
    assert profile.status_code == 200
    assert profile.json()["username"] == person.user["username"]


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "Bearer",
        "Basic dXNlcjpwYXNz",
        "Bearer ecpat_short",
        "Bearer ecpat_" + "A" * 36,
        "Bearer ecpat_" + "A" * 30 + "000000",
    ],
)
def test_bad_credentials_rejected(gateway: Gateway, authorization: str | None) -> None:
    headers = {"Authorization": authorization} if authorization else {}

    response = httpx.get(f"{gateway.url}/echo/x", headers=headers)

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'


def test_unknown_token_rejected(gateway: Gateway) -> None:
    response = httpx.get(f"{gateway.url}/echo/x", headers=bearer(secret.generate()))

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'


def test_expired_token_rejected(
    run: RunContext, gateway: Gateway, person: Person
) -> None:
    token = run.api.create_token(person.session, "short lived", 1)
    url = f"{gateway.url}/echo/x"
    before = httpx.get(url, headers=bearer(token["token"]))

    # The replica behind nginx reloads the shared clock offset every second.
    moved = run.api.advance_clock(DAY)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        clock = httpx.get(f"{gateway.replica_url}/v1/dev/clock").json()
        if clock["offset_seconds"] >= moved["offset_seconds"]:
            break
        time.sleep(0.1)
    after = httpx.get(url, headers=bearer(token["token"]))

    assert before.status_code == 200
    assert after.status_code == 401
    assert after.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'


def test_deleted_token_rejected_after_hop(
    run: RunContext, gateway: Gateway, person: Person
) -> None:
    token = run.api.create_token(person.session, "deleted in a run", 5)
    url = f"{gateway.url}/echo/x"
    warm = [
        httpx.get(url, headers=bearer(token["token"])).status_code for _ in range(5)
    ]
    hits_before = _cache_hits(gateway.replica_url)
    cached = httpx.get(url, headers=bearer(token["token"]))
    hits_after = _cache_hits(gateway.replica_url)

    run.api.request(
        "DELETE", "tokens", f"/v1/tokens/{token['id']}", person.session, expect=204
    )
    code, seconds = _wait_for_status(url, bearer(token["token"]), 401)
    later = [
        httpx.get(url, headers=bearer(token["token"])).status_code for _ in range(5)
    ]

    assert warm == [200] * 5
    assert cached.status_code == 200
    assert hits_after > hits_before
    assert code == 401
    assert seconds < HOP_SECONDS
    assert later == [401] * 5


def test_deleted_while_requests_run(
    run: RunContext, gateway: Gateway, person: Person
) -> None:
    token = run.api.create_token(person.session, "deleted under load", 5)
    url = f"{gateway.url}/echo/x"
    results: list[tuple[float, int]] = []
    stop = threading.Event()

    def send_requests() -> None:
        deadline = time.monotonic() + 30
        with httpx.Client(headers=bearer(token["token"])) as client:
            while not stop.is_set() and time.monotonic() < deadline:
                code = client.get(url).status_code
                results.append((time.monotonic(), code))
                if len(results) >= 5000:
                    return

    sender = threading.Thread(target=send_requests, daemon=True)
    sender.start()
    while len(results) < 20 and sender.is_alive():
        time.sleep(0.01)
    run.api.request(
        "DELETE", "tokens", f"/v1/tokens/{token['id']}", person.session, expect=204
    )
    deleted_at = time.monotonic()
    while sender.is_alive() and time.monotonic() - deleted_at < HOP_SECONDS:
        if any(code == 401 for _, code in results):
            break
        time.sleep(0.01)
    time.sleep(0.5)
    stop.set()
    sender.join(10)

    codes = [code for _, code in results]
    first_rejection = codes.index(401)
    rejected_at = results[first_rejection][0]
    assert set(codes[:first_rejection]) == {200}
    assert set(codes[first_rejection:]) == {401}
    assert len(codes) - first_rejection > 1
    assert rejected_at - deleted_at < HOP_SECONDS


def test_switched_off_gets_403(
    run: RunContext, admin: str, gateway: Gateway, person: Person
) -> None:
    token = run.api.create_token(person.session, "switched", 5)
    url = f"{gateway.url}/echo/x"
    before = httpx.get(url, headers=bearer(token["token"]))

    run.api.change_setting(admin, "pat_enabled", False)
    try:
        off, _ = _wait_for_status(url, bearer(token["token"]), 403)
    finally:
        run.api.change_setting(admin, "pat_enabled", True)
        run.api.wait_for_feature(admin, enabled=True)
    on, _ = _wait_for_status(url, bearer(token["token"]), 200)

    assert before.status_code == 200
    assert off == 403
    assert on == 200


def test_deactivated_owner_gets_403(
    run: RunContext, admin: str, gateway: Gateway, person: Person
) -> None:
    token = run.api.create_token(person.session, "owner leaves", 5)
    url = f"{gateway.url}/echo/x"
    before = httpx.get(url, headers=bearer(token["token"]))

    run.api.request(
        "PATCH", "profile", f"/v1/users/{person.id}", admin, json={"active": False}
    )
    code, _ = _wait_for_status(url, bearer(token["token"]), 403)
    profile_events: list[dict[str, Any]] = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with run.events.lock:
            profile_events = [
                r
                for r in run.events.records
                if r["topic"].endswith("profile.events") and r["key"] == person.id
            ]
        if profile_events and profile_events[-1]["value"].get("active") is False:
            break
        time.sleep(0.1)
    types = [r["headers"]["ce_type"] for r in profile_events]

    assert before.status_code == 200
    assert code == 403
    assert "org.pat.profile.user.deactivated.v1" in types
    # The full snapshot stays the user's last record on the compacted topic.
    assert types[-1] == "org.pat.profile.user.updated.v1"
    assert types.index("org.pat.profile.user.deactivated.v1") == len(types) - 2


def test_rejection_reason_shown_to_admin(
    run: RunContext, admin: str, gateway: Gateway, person: Person
) -> None:
    token = run.api.create_token(person.session, "owner demoted", 5)
    run.api.request(
        "PATCH",
        "profile",
        f"/v1/users/{person.id}",
        admin,
        json={"role": "collaborator"},
    )
    code, _ = _wait_for_status(
        f"{gateway.url}/echo/x", bearer(token["token"]), expected=403
    )
    rejected = httpx.get(f"{gateway.url}/echo/x", headers=bearer(token["token"]))
    listing: list[dict[str, Any]] = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        listing = run.api.request(
            "GET", "tokens", f"/v1/users/{person.id}/tokens", admin
        )
        if listing and listing[0]["last_rejection_reason"]:
            break
        time.sleep(0.2)

    assert code == 403
    assert "collaborator" not in rejected.text
    [entry] = listing
    assert entry["id"] == token["id"]
    assert entry["last_rejection_reason"] == "owner is a collaborator"
    assert entry["last_rejected_at"] is not None


def _from_address(address: str) -> httpx.Client:
    """Return a client whose requests leave from ``address`` on loopback."""
    return httpx.Client(transport=httpx.HTTPTransport(local_address=address))


def test_last_use_recorded_with_address(
    run: RunContext, gateway: Gateway, person: Person
) -> None:
    token = run.api.create_token(person.session, "used", 5)
    with _from_address("127.0.0.3") as client:
        response = client.get(f"{gateway.url}/echo/x", headers=bearer(token["token"]))
    entry: dict[str, Any] = {}
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        entry = run.api.request(
            "GET", "tokens", f"/v1/tokens/{token['id']}", person.session
        )
        if entry["last_used_at"]:
            break
        time.sleep(0.2)

    assert response.status_code == 200
    assert entry["last_used_at"] is not None
    assert entry["last_used_address"] == "127.0.0.3"


def test_direct_use_records_client_address(run: RunContext, person: Person) -> None:
    token = run.api.create_token(person.session, "used directly", 5)
    with _from_address("127.0.0.2") as client:
        response = client.get(
            f"{run.stack.urls['profile']}/v1/me", headers=bearer(token["token"])
        )
    entry: dict[str, Any] = {}
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        entry = run.api.request(
            "GET", "tokens", f"/v1/tokens/{token['id']}", person.session
        )
        if entry["last_used_at"]:
            break
        time.sleep(0.2)

    assert response.status_code == 200
    assert entry["last_used_address"] == "127.0.0.2"


def test_sign_in_passes_without_token(gateway: Gateway, person: Person) -> None:
    response = httpx.post(
        f"{gateway.url}/v1/sessions",
        json={"username": person.user["username"], "password": person.password},
    )

    assert response.status_code == 201
