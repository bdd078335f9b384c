"""Play the main job of the system through its HTTP APIs, printing each step.

Starts Kafka, Postgres and the SMTP sink if they are not running, provisions
a fresh database, starts the four services, and stops everything it started.
"""

from __future__ import annotations

import asyncio
import sys
import textwrap
import uuid
from typing import Any

from infra import cli as infra_cli
from infra import mailbox
from infra.config import load
from services.client import Api
from services.launcher import start_stack
from services.provision import drop, provision

ADMIN_PASSWORD = "admin-dev-only-password"
PASSWORD = "correct-horse-battery"
NEW_PASSWORD = "violet-lantern-harbour"
DAY = 86400


def step(text: str) -> None:
    print(f"\n== {text}", flush=True)


def show(text: str) -> None:
    print(textwrap.indent(text, "   "), flush=True)


def call_with_token(api: Api, token: str) -> str:
    """Call the profile API as an application would; return the outcome."""
    response = api.http.get(
        f"{api.urls['profile']}/v1/me", headers={"Authorization": f"Bearer {token}"}
    )
    return f"GET /v1/me -> {response.status_code}"


def print_email(message: mailbox.MailMessage) -> None:
    show(f"From:    {message['from']}")
    show(f"To:      {message['to']}")
    show(f"Subject: {message['subject']}")
    show("")
    show(message["text"].strip())


def wait_for_email(address: str, subject_part: str) -> mailbox.MailMessage:
    [message] = mailbox.wait_for_messages(
        lambda m: address in m["rcpt_tos"] and subject_part in (m["subject"] or ""),
        timeout=60,
    )
    return message


def play(api: Api, run_id: str) -> None:
    step("The administrator signs in and switches personal access tokens on")
    admin = api.sign_in("admin", ADMIN_PASSWORD)
    found = api.request("GET", "settings", "/v1/settings", admin, params={"q": "PAT"})
    setting = next(s for s in found if s["key"] == "pat_enabled")
    show(f"search 'PAT' finds: {setting['label']} (section {setting['section']})")
    show(f"current value: {setting['value']}")
    api.change_setting(admin, "pat_enabled", True)
    api.wait_for_feature(admin, enabled=True)
    show("now: True, and the tokens service has learned it")

    step("The administrator creates a user and a collaborator")
    ada = _create(
        api, admin, f"ada-{run_id}", "Ada Lovelace", "user", "Australia/Sydney"
    )
    bob = _create(api, admin, f"bob-{run_id}", "Bob Collab", "collaborator", "UTC")
    show(
        f"{ada['username']} (user, time zone {ada['time_zone']}), email {ada['email']}"
    )
    show(f"{bob['username']} (collaborator)")

    step("Ada signs in and creates a token that expires in 30 days")
    ada_session = api.sign_in(ada["username"], PASSWORD)
    token = api.create_token(ada_session, "CI pipeline", 30)
    show(f"token {token['name']!r}: {token['token']}  (shown this once)")
    show(f"expires at {token['expires_at']}")
    listing = api.request("GET", "tokens", "/v1/tokens", ada_session)
    show(
        f"her listing shows: {[{k: t[k] for k in ('name', 'state')} for t in listing]}"
    )

    step("An application calls the REST API with the token")
    show(call_with_token(api, token["token"]))

    step("The collaborator tries to create a token")
    bob_session = api.sign_in(bob["username"], PASSWORD)
    refused = api.http.post(
        f"{api.urls['tokens']}/v1/tokens",
        json={"name": "nope", "expire_in_days": 5},
        headers={"Authorization": f"Bearer {bob_session}"},
    )
    show(f"POST /v1/tokens -> {refused.status_code}: {refused.json()['detail']}")

    step("Time moves 23 days forward: the token expires within a week")
    clock = api.advance_clock(23 * DAY + 60)
    show(f"the tokens service's clock now reads {clock['now']}")
    print_email(wait_for_email(ada["email"], "expires soon"))
    show(f"\nthe token still works: {call_with_token(api, token['token'])}")

    step("Time moves 7 more days: the token has expired")
    clock = api.advance_clock(7 * DAY)
    show(f"the tokens service's clock now reads {clock['now']}")
    print_email(wait_for_email(ada["email"], "has expired"))
    show(f"\nthe application is refused: {call_with_token(api, token['token'])}")

    step("Ada creates another token; the administrator deletes it")
    second = api.create_token(ada_session, "deploy script", 10)
    show(f"with the new token: {call_with_token(api, second['token'])}")
    api.request(
        "DELETE",
        "tokens",
        f"/v1/users/{ada['id']}/tokens/{second['id']}",
        admin,
        expect=204,
    )
    show("the administrator deleted it")
    show(f"at once: {call_with_token(api, second['token'])}")

    play_profile(api, admin, ada, ada_session)


def play_profile(api: Api, admin: str, ada: dict[str, Any], ada_session: str) -> None:
    """Show My Profile: time zone, password notice, attributes, signature."""
    step("Ada moves to Berlin and changes her time zone")
    me = api.request(
        "PATCH", "profile", "/v1/me", ada_session, json={"time_zone": "Europe/Berlin"}
    )
    show(f"PATCH /v1/me -> time zone {me['time_zone']}")

    step("Ada changes her password; the notice uses her new time zone")
    change = {"current_password": PASSWORD, "new_password": NEW_PASSWORD}
    api.request(
        "POST", "profile", "/v1/me/password", ada_session, json=change, expect=204
    )
    show("POST /v1/me/password -> 204; her other sessions are signed out")
    print_email(wait_for_email(ada["email"], "password was changed"))

    step("The administrator defines a contact attribute; Ada fills it in")
    attribute = api.request(
        "POST",
        "profile",
        "/v1/attributes",
        admin,
        json={"name": "Phone extension", "type": "number", "user_editable": True},
        expect=201,
    )
    api.request(
        "PUT",
        "profile",
        f"/v1/me/attributes/{attribute['id']}",
        ada_session,
        json={"value": 4711},
    )
    wrong = api.http.put(
        f"{api.urls['profile']}/v1/me/attributes/{attribute['id']}",
        json={"value": "call me"},
        headers={"Authorization": f"Bearer {ada_session}"},
    )
    show(f"a text value is rejected: {wrong.status_code} {wrong.json()['detail']}")

    step("Ada types a signature; the administrator sees only that one is set")
    api.request(
        "PUT",
        "profile",
        "/v1/me/signature/text",
        ada_session,
        json={"text": "Ada Lovelace"},
    )
    profile = api.request("GET", "profile", f"/v1/users/{ada['id']}", admin)
    values = {a["name"]: a["value"] for a in profile["attributes"]}
    show(f"time zone {profile['time_zone']}, attributes {values}")
    show(f"has_signature {profile['has_signature']}")
    hidden = api.http.get(
        f"{api.urls['profile']}/v1/users/{ada['id']}/signature",
        headers={"Authorization": f"Bearer {admin}"},
    )
    show(f"the administrator asks for the signature: {hidden.status_code}")


def _create(
    api: Api, admin: str, username: str, name: str, role: str, time_zone: str
) -> dict[str, Any]:
    user = api.create_user(
        admin,
        username=username,
        display_name=name,
        email=f"{username}@example.org",
        password=PASSWORD,
        role=role,
        time_zone=time_zone,
    )
    api.wait_for_user(admin, user["id"])
    return user


def main() -> int:
    config = load()
    already_up = {r.name for r in infra_cli.status(config=config, echo=False) if r.ok}
    step("Starting Kafka, Postgres and the SMTP sink")
    infra_cli.up(config=config)
    run_id = uuid.uuid4().hex[:6]
    database = f"pat_demo_{run_id}"
    dsns = asyncio.run(provision(config.pg_dsn, database))
    step(f"Starting the four services (database {database})")
    stack = start_stack(
        dsns,
        config.kafka_bootstrap,
        config.smtp_port,
        config.run_dir / "demo-logs" / run_id,
        topic_prefix=f"demo-{run_id}.",
        extra_env={
            "PAT_ENVIRONMENT": "development",
            "PAT_ADMIN_PASSWORD": ADMIN_PASSWORD,
        },
    )
    for name, url in stack.urls.items():
        show(f"{name:<9} {url}")
    api = Api(stack.urls)
    try:
        play(api, run_id)
    finally:
        api.close()
        step("Stopping everything the demo started")
        stack.stop()
        asyncio.run(drop(config.pg_dsn, database))
        started = [n for n in ("smtp", "kafka", "postgres") if n not in already_up]
        if started:
            infra_cli.down(started, config=config)
    step("Done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
