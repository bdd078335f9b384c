"""Health, metrics, logs, correlation ids and database isolation."""

from __future__ import annotations

import asyncio
import json
import time

import asyncpg
import httpx
import pytest

from infra import mailbox
from services.provision import role_password
from tests.conftest import Person, RunContext, bearer

DAY = 86400


@pytest.mark.parametrize("service", ["settings", "profile", "tokens", "notifier"])
def test_health_and_readiness(run: RunContext, service: str) -> None:
    alive = httpx.get(f"{run.stack.urls[service]}/healthz")
    ready = httpx.get(f"{run.stack.urls[service]}/readyz")

    assert alive.status_code == 200
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready"}


def test_metrics_count_requests_and_events(run: RunContext, person: Person) -> None:
    run.api.create_token(person.session, "metered", 5)
    time.sleep(1)

    tokens = httpx.get(f"{run.stack.urls['tokens']}/metrics").text
    notifier = httpx.get(f"{run.stack.urls['notifier']}/metrics").text

    assert 'http_requests_total{method="POST",route="/v1/tokens"' in tokens
    assert "events_published_total" in tokens
    assert 'type="org.pat.tokens.token.created.v1"' in tokens
    assert "outbox_backlog" in tokens
    assert "events_consumed_total" in notifier
    assert "consumer_lag" in notifier


def test_correlation_id_reaches_event_and_email(
    run: RunContext, admin: str, person: Person
) -> None:
    created = httpx.post(
        f"{run.stack.urls['tokens']}/v1/tokens",
        json={"name": "traced", "expire_in_days": 8},
        headers={**bearer(person.session), "X-Correlation-ID": "trace-abc-123"},
    )
    token_id = created.json()["id"]
    deadline = time.monotonic() + 20
    events: list[dict[str, object]] = []
    while not events and time.monotonic() < deadline:
        events = [
            e
            for e in run.events.of_type("token.created.v1")
            if e["value"] and e["value"]["token_id"] == token_id
        ]
        time.sleep(0.1)

    run.api.advance_clock(2 * DAY)
    [mail] = mailbox.wait_for_messages(
        lambda m: person.user["email"] in m["rcpt_tos"], timeout=30
    )
    [warning] = [
        e
        for e in run.events.of_type("token.expiring.v1")
        if e["value"] and e["value"]["token_id"] == token_id
    ]

    assert created.headers["X-Correlation-ID"] == "trace-abc-123"
    assert events[0]["headers"]["correlation_id"] == "trace-abc-123"  # type: ignore[index]
    assert mail["headers"]["X-Correlation-ID"] == warning["headers"]["correlation_id"]


def test_logs_are_json_with_request_lines(run: RunContext) -> None:
    httpx.get(f"{run.stack.urls['settings']}/v1/settings")
    time.sleep(0.5)

    lines = run.stack.logs["settings.0"].read_text().splitlines()
    records = [json.loads(line) for line in lines if line.startswith("{")]

    assert len(records) == len([line for line in lines if line.strip()])
    requests = [r for r in records if r["logger"] == "services.http"]
    assert any(r["message"] == "GET /v1/settings 401" for r in requests)
    assert all("correlation_id" in r for r in requests)


@pytest.mark.parametrize(
    ("role", "foreign"),
    [("tokens", "profile"), ("notifier", "tokens"), ("settings", "profile")],
)
def test_service_role_cannot_read_other_schema(
    run: RunContext, role: str, foreign: str
) -> None:
    async def attempt() -> str:
        dsn = run.infra.pg_dsn_for(run.database, user=f"{role}_svc")
        dsn = dsn.replace(
            f":{run.infra.pg_superuser_password}@", f":{role_password(role)}@"
        )
        conn = await asyncpg.connect(dsn)
        try:
            own = await conn.fetchval(f"SELECT count(*) FROM {role}.outbox")
            assert own >= 0
            await conn.fetch(f"SELECT * FROM {foreign}.outbox LIMIT 1")
        except asyncpg.InsufficientPrivilegeError as error:
            return type(error).__name__
        finally:
            await conn.close()
        return "read allowed"

    assert asyncio.run(attempt()) == "InsufficientPrivilegeError"
