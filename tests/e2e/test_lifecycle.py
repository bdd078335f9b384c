"""The main job end to end, across the four service processes."""

from __future__ import annotations

import asyncio
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx

from infra import mailbox
from services.contracts import TokenExpired
from services.launcher import free_port
from services.notifier.emails import EXPIRED, EXPIRING, token_email_key
from services.tokens.service import expiry_event_id
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
    expires_at = datetime.fromisoformat(token["expires_at"])
    assert message_ids == {
        f"<{token_email_key(kind, token['id'], expires_at)}@notifier.pat.invalid>"
        for kind in (EXPIRING, EXPIRED)
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
    token_id = uuid.UUID(token["id"])
    assert expiring[0]["headers"]["ce_id"] == str(
        expiry_event_id("expiring", token_id, token["expires_at"])
    )
    assert expired[0]["key"] == token["user_id"]
    model = TokenExpired.model_validate(expired[0]["value"])
    assert model.model_dump(mode="json") == expected


def seed_tokens_due_soon(
    run: RunContext, user_id: str, count: int, revoked: int | None = None
) -> tuple[list[str], float]:
    """Insert ``count`` tokens that expire within 3 s of the service's clock,
    four of them at one instant, and token number ``revoked`` revoked.

    Return their ids and the seconds until the last one expires.
    """
    ids = [uuid.uuid4() for _ in range(count)]

    async def insert() -> float:
        conn = await asyncpg.connect(run.infra.pg_dsn_for(run.database))
        try:
            now = await conn.fetchval(
                "SELECT date_trunc('second', now()"
                " + offset_seconds * interval '1 second') FROM tokens.clock_offset"
            )
            await conn.executemany(
                "INSERT INTO tokens.tokens (id, user_id, name, hash, hash_key_id,"
                " created_at, expires_at, revoked_at) VALUES ($1, $2::uuid, $3,"
                " $4, 'k1', $5::timestamptz - interval '40 days',"
                " $5::timestamptz + interval '2 seconds'"
                " + make_interval(secs => $6 / 10.0), $7)",
                [
                    (
                        id_,
                        user_id,
                        f"seeded {n}",
                        id_.bytes * 2,
                        now,
                        max(0, n - 3),
                        now if n == revoked else None,
                    )
                    for n, id_ in enumerate(ids)
                ],
            )
            seconds: float = await conn.fetchval(
                "SELECT extract(epoch FROM max(expires_at) - $1::timestamptz)::float8"
                " FROM tokens.tokens WHERE id = ANY($2::uuid[])",
                now,
                ids,
            )
            return seconds
        finally:
            await conn.close()

    return [str(id_) for id_ in ids], asyncio.run(insert())


def fetch_rows(run: RunContext, sql: str, *args: Any) -> list[asyncpg.Record]:
    """Run one statement in the run's database and return its rows."""

    async def fetch() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(run.infra.pg_dsn_for(run.database))
        try:
            return await conn.fetch(sql, *args)
        finally:
            await conn.close()

    return asyncio.run(fetch())


def expired_watermark(run: RunContext) -> tuple[datetime, str]:
    [row] = fetch_rows(
        run,
        "SELECT expires_at, token_id FROM tokens.expiry_watermarks"
        " WHERE kind = 'expired'",
    )
    return row["expires_at"], str(row["token_id"])


def token_positions(
    run: RunContext, token_ids: list[str]
) -> list[tuple[datetime, str]]:
    rows = fetch_rows(
        run,
        "SELECT expires_at, id FROM tokens.tokens WHERE id = ANY($1::uuid[])",
        token_ids,
    )
    return [(row["expires_at"], str(row["id"])) for row in rows]


def test_concurrent_scans_expire_each_once(
    run: RunContext, admin: str, person: Person
) -> None:
    # A replica scanning in batches of two, and the main one in its default
    # batches, scan at once over nine tokens: four expire at one instant, so
    # that batches end in the middle of a tie, and one is revoked.
    replica = "tokens-small-batches"
    url = run.stack.start_replica(
        "tokens", replica, free_port(), extra_env={"PAT_SCAN_BATCH_SIZE": "2"}
    )
    try:
        token_ids, seconds = seed_tokens_due_soon(run, person.user["id"], 9, revoked=5)
        time.sleep(seconds + 0.5)
        scans = [
            f"{url}/v1/dev/expiry-scan",
            f"{run.stack.urls['tokens']}/v1/dev/expiry-scan",
        ]
        with ThreadPoolExecutor(len(scans)) as pool:
            results = list(pool.map(lambda scan: httpx.post(scan, timeout=30), scans))
    finally:
        run.stack.stop_process(replica)
    revoked = token_ids.pop(5)
    events = {
        token_id: wait_for_events(run, "token.expired.v1", token_id)
        for token_id in token_ids
    }
    time.sleep(1)  # let any duplicate or revoked token's event arrive

    assert [result.status_code for result in results] == [200, 200]
    assert sum(result.json()["expired"] for result in results) >= len(token_ids)
    for token_id in token_ids:
        assert len(events[token_id]) == 1, token_id
        assert len(wait_for_events(run, "token.expired.v1", token_id, 2, 0)) == 1
    assert wait_for_events(run, "token.expired.v1", revoked, timeout=0) == []
    # The watermark has passed every seeded token, the revoked one included.
    assert expired_watermark(run) >= max(token_positions(run, [*token_ids, revoked]))


def test_rescan_writes_no_event(run: RunContext, admin: str, person: Person) -> None:
    token_ids, seconds = seed_tokens_due_soon(run, person.user["id"], 3)
    time.sleep(seconds + 0.5)
    scan = f"{run.stack.urls['tokens']}/v1/dev/expiry-scan"
    first = httpx.post(scan, timeout=30).json()
    for token_id in token_ids:
        wait_for_events(run, "token.expired.v1", token_id)
    # With the watermark back at the start, every expired token is read
    # again, and each event id is one that the outbox already holds.
    set_expired_watermark(run, datetime(1970, 1, 1, tzinfo=UTC), uuid.UUID(int=0))
    second = httpx.post(scan, timeout=30).json()
    time.sleep(1)  # let a duplicate that should not come arrive

    assert first["expired"] >= len(token_ids)
    assert second == {"expiring": 0, "expired": 0}
    for token_id in token_ids:
        [event] = wait_for_events(run, "token.expired.v1", token_id, 2, 0)
        expires_at = event["value"]["expires_at"]
        assert event["headers"]["ce_id"] == str(
            expiry_event_id("expired", uuid.UUID(token_id), expires_at)
        )


def set_expired_watermark(
    run: RunContext, expires_at: datetime, token_id: uuid.UUID
) -> None:
    fetch_rows(
        run,
        "UPDATE tokens.expiry_watermarks SET expires_at = $1, token_id = $2"
        " WHERE kind = 'expired'",
        expires_at,
        token_id,
    )


def test_rotated_token_warning_rules(
    run: RunContext, admin: str, person: Person
) -> None:
    short = run.api.create_token(person.session, "rotated to five days", 8)
    long = run.api.create_token(person.session, "rotated to nine days", 8)
    run.api.advance_clock(2 * DAY)
    first_warnings = [
        wait_for_events(run, "token.expiring.v1", token["id"])
        for token in (short, long)
    ]

    rotations = [
        httpx.post(
            f"{run.stack.urls['tokens']}/v1/tokens/{token['id']}/rotate",
            json={"expire_in_days": days},
            headers=bearer(person.session),
        )
        for token, days in ((short, 5), (long, 9))
    ]
    # Three days on, the nine-day token is within a week of its new expiry.
    run.api.advance_clock(3 * DAY)
    long_warnings = wait_for_events(run, "token.expiring.v1", long["id"], 2)
    # Three more, and the five-day token has expired, unwarned since rotation.
    run.api.advance_clock(3 * DAY)
    short_expired = wait_for_events(run, "token.expired.v1", short["id"])
    time.sleep(1)  # let a warning that should not come arrive

    assert [len(warnings) for warnings in first_warnings] == [1, 1]
    assert [rotation.status_code for rotation in rotations] == [200, 200]
    assert len(long_warnings) == 2
    assert long_warnings[1]["value"]["expires_at"] == rotations[1].json()["expires_at"]
    assert len(short_expired) == 1
    assert len(wait_for_events(run, "token.expiring.v1", short["id"], 2, 0)) == 1
    # The notifier sends a warning for each expiry the nine-day token had.
    warnings = mailbox.wait_for_messages(
        lambda m: (
            person.user["email"] in m["rcpt_tos"]
            and "rotated to nine days" in (m["text"] or "")
            and "expires soon" in (m["subject"] or "")
        ),
        count=2,
        timeout=30,
    )
    assert len(warnings) == 2
