"""The main job end to end, across the four service processes."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import asyncpg
import httpx

from infra import mailbox
from services.contracts import TokenExpired
from services.launcher import free_port
from tests.conftest import Person, RunContext, bearer, make_person

DAY = 86400


def wait_for_events(
    run: RunContext, suffix: str, token_id: str, count: int = 1, timeout: float = 20.0
) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        found = [
            e
            for e in run.events.of_type(suffix)
            if e["value"] and e["value"].get("token_id") == token_id
        ]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def mails_for(address: str) -> list[mailbox.MailMessage]:
    return [m for m in mailbox.read_messages() if address in (m["rcpt_tos"] or [])]


def test_token_lifecycle_end_to_end(run: RunContext, admin: str) -> None:
    api = run.api
    owner = make_person(run, admin, time_zone="Australia/Sydney")
    email = owner.user["email"]

    token = api.create_token(owner.session, "ci pipeline", 30)
    value = token["token"]
    profile = httpx.get(f"{run.stack.urls['profile']}/v1/me", headers=bearer(value))
    collaborator = make_person(run, admin, role="collaborator")
    refused = httpx.post(
        f"{run.stack.urls['tokens']}/v1/tokens",
        json={"name": "nope", "expire_in_days": 5},
        headers=bearer(collaborator.session),
    )

    assert value.startswith("ecpat_")
    assert profile.status_code == 200
    assert profile.json()["username"] == owner.user["username"]
    assert refused.status_code == 403
    assert "collaborator" in refused.json()["detail"]
    [created] = wait_for_events(run, "token.created.v1", token["id"])
    assert created["key"] == owner.id
    assert created["headers"]["ce_source"] == "/services/tokens"
    assert created["headers"]["ce_specversion"] == "1.0"
    assert created["headers"]["content-type"] == "application/json"
    assert created["headers"]["ce_subject"] == owner.id

    # 23 days on, the token expires within a week: the warning goes out.
    api.advance_clock(23 * DAY + 60)
    warning = mailbox.wait_for_messages(
        lambda m: email in m["rcpt_tos"] and "expires soon" in (m["subject"] or ""),
        timeout=30,
    )
    still_valid = httpx.get(f"{run.stack.urls['profile']}/v1/me", headers=bearer(value))

    assert "ci pipeline" in warning[0]["text"]
    assert "AEDT" in warning[0]["text"] or "AEST" in warning[0]["text"]
    assert "Australia/Sydney" in warning[0]["text"]
    assert still_valid.status_code == 200

    # 7 more days, and it has expired.
    api.advance_clock(7 * DAY)
    expired_mail = mailbox.wait_for_messages(
        lambda m: email in m["rcpt_tos"] and "has expired" in (m["subject"] or ""),
        timeout=30,
    )
    after_expiry = httpx.get(
        f"{run.stack.urls['profile']}/v1/me", headers=bearer(value)
    )
    validation = httpx.get(
        f"{run.stack.urls['tokens']}/v1/auth/validate", headers=bearer(value)
    )

    assert "ci pipeline" in expired_mail[0]["text"]
    assert after_expiry.status_code == 401
    assert validation.status_code == 401
    assert validation.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
    assert len(wait_for_events(run, "token.expiring.v1", token["id"])) == 1
    assert len(wait_for_events(run, "token.expired.v1", token["id"])) == 1
    assert len(mails_for(email)) == 2


def test_admin_deletes_token_and_it_stops_at_once(
    run: RunContext, admin: str, person: Person
) -> None:
    token = run.api.create_token(person.session, "deploy", 10)
    url = f"{run.stack.urls['profile']}/v1/me"
    before = httpx.get(url, headers=bearer(token["token"]))

    deleted = httpx.delete(
        f"{run.stack.urls['tokens']}/v1/users/{person.id}/tokens/{token['id']}",
        headers=bearer(admin),
    )
    after = httpx.get(url, headers=bearer(token["token"]))

    assert before.status_code == 200
    assert deleted.status_code == 204
    assert after.status_code == 401
    [revoked] = wait_for_events(run, "token.revoked.v1", token["id"])
    assert revoked["value"]["revoked_by"] != person.id


def test_expiry_emails_sent_once_when_scanner_runs_twice(
    run: RunContext, admin: str, person: Person
) -> None:
    token = run.api.create_token(person.session, "twice", 8)
    email = person.user["email"]
    scan = f"{run.stack.urls['tokens']}/v1/dev/expiry-scan"

    run.api.advance_clock(2 * DAY)
    second_scan = httpx.post(scan).json()
    run.api.advance_clock(8 * DAY)
    fourth_scan = httpx.post(scan).json()
    mailbox.wait_for_messages(
        lambda m: email in m["rcpt_tos"] and "has expired" in (m["subject"] or ""),
        timeout=30,
    )
    time.sleep(2)  # let any duplicate that would arrive arrive

    assert second_scan == {"expiring": 0, "expired": 0}
    assert fourth_scan == {"expiring": 0, "expired": 0}
    subjects = [m["subject"] or "" for m in mails_for(email)]
    assert len(subjects) == 2
    assert sum("expires soon" in subject for subject in subjects) == 1
    assert sum("has expired" in subject for subject in subjects) == 1
    message_ids = {m["message_id"] for m in mails_for(email)}
    assert message_ids == {
        f"<token-expiring.{token['id']}@notifier.pat.invalid>",
        f"<token-expired.{token['id']}@notifier.pat.invalid>",
    }


def test_scan_after_downtime_sends_no_stale_warning(
    run: RunContext, admin: str, person: Person
) -> None:
    token = run.api.create_token(person.session, "slept through", 9)
    email = person.user["email"]

    # Ten days pass at once, as if every service had been down meanwhile.
    run.api.advance_clock(10 * DAY)
    mailbox.wait_for_messages(
        lambda m: email in m["rcpt_tos"] and "has expired" in (m["subject"] or ""),
        timeout=30,
    )
    time.sleep(2)  # let a warning that should not come arrive

    subjects = [m["subject"] or "" for m in mails_for(email)]
    assert len(subjects) == 1
    assert "has expired" in subjects[0]
    assert wait_for_events(run, "token.expiring.v1", token["id"], timeout=0) == []


def test_scan_events_match_event_models(
    run: RunContext, admin: str, person: Person
) -> None:
    # The scanner builds these payloads in SQL, so they must read exactly as
    # the event models serialise, microseconds and all.
    name = 'payload "check" é'
    token = run.api.create_token(person.session, name, 8)

    run.api.advance_clock(2 * DAY)
    expiring = wait_for_events(run, "token.expiring.v1", token["id"])
    run.api.advance_clock(7 * DAY)
    expired = wait_for_events(run, "token.expired.v1", token["id"])

    expected = {
        "token_id": token["id"],
        "user_id": token["user_id"],
        "name": name,
        "expires_at": token["expires_at"],
    }
    assert len(expiring) == 1
    assert len(expired) == 1
    assert expiring[0]["value"] == expected
    assert expired[0]["value"] == expected
    assert expired[0]["key"] == token["user_id"]
    model = TokenExpired.model_validate(expired[0]["value"])
    assert model.model_dump(mode="json") == expected


def seed_due_tokens(run: RunContext, user_id: str, count: int) -> list[str]:
    """Insert ``count`` tokens that expired an hour ago; four share one instant."""
    ids = [uuid.uuid4() for _ in range(count)]

    async def insert() -> None:
        conn = await asyncpg.connect(run.infra.pg_dsn_for(run.database))
        try:
            await conn.executemany(
                "INSERT INTO tokens.tokens (id, user_id, name, hash, hash_key_id,"
                " created_at, expires_at) VALUES ($1, $2::uuid, $3, $5, 'k1',"
                " now() - interval '40 days',"
                " date_trunc('second', now()) - interval '1 hour'"
                " - make_interval(secs => $4))",
                [
                    (id_, user_id, f"seeded {n}", max(0, n - 3), id_.bytes * 2)
                    for n, id_ in enumerate(ids)
                ],
            )
        finally:
            await conn.close()

    asyncio.run(insert())
    return [str(id_) for id_ in ids]


def unmarked(run: RunContext, token_ids: list[str]) -> int:
    async def count() -> int:
        conn = await asyncpg.connect(run.infra.pg_dsn_for(run.database))
        try:
            left: int = await conn.fetchval(
                "SELECT count(*) FROM tokens.tokens WHERE id = ANY($1::uuid[])"
                " AND expired_event_at IS NULL",
                token_ids,
            )
            return left
        finally:
            await conn.close()

    return asyncio.run(count())


def test_scan_over_many_batches_expires_each_once(
    run: RunContext, admin: str, person: Person
) -> None:
    # A batch of two over seven due tokens, four of which expire at the same
    # instant, so that batches end in the middle of a tie.
    token_ids = seed_due_tokens(run, person.user["id"], 7)
    replica = "tokens-small-batches"
    url = run.stack.start_replica(
        "tokens", replica, free_port(), extra_env={"PAT_SCAN_BATCH_SIZE": "2"}
    )
    try:
        # The replica scans once as it starts; this pass finds what is left.
        httpx.post(f"{url}/v1/dev/expiry-scan", timeout=30).raise_for_status()
    finally:
        run.stack.stop_process(replica)
    events = {
        token_id: wait_for_events(run, "token.expired.v1", token_id)
        for token_id in token_ids
    }
    time.sleep(1)  # let any duplicate that would arrive arrive

    assert unmarked(run, token_ids) == 0
    for token_id in token_ids:
        assert len(events[token_id]) == 1, token_id
        assert len(wait_for_events(run, "token.expired.v1", token_id, 2, 0)) == 1
