"""Command-line tool for administrators.

    python -m services.admin create-admin --username root --email root@example.org
    python -m services.admin settings show [KEY]
    python -m services.admin settings set KEY VALUE       # VALUE is JSON: true, 90
    python -m services.admin tokens list USER_ID
    python -m services.admin tokens delete USER_ID TOKEN_ID
    python -m services.admin dead-letters replay SERVICE

``create-admin`` writes to the profile database (PAT_DATABASE_URL must be the
profile service's); the profile service publishes the new user. The settings
and tokens commands sign in over HTTP as PAT_ADMIN_USERNAME with the password
from PAT_ADMIN_PASSWORD, or from a prompt. ``dead-letters replay`` sends each
dead-lettered record of SERVICE back to the topic it came from, once the cause
is fixed, and stops when it has caught up.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import sys
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from pydantic import ValidationError

from services.client import Api, ApiError
from services.common.runtime import Runtime
from services.contracts import Topics
from services.profile.app import MIGRATIONS, ProfileConfig, ProfileService
from services.profile.models import UserCreate

DEAD_LETTER_HEADERS = ("dlt_error", "dlt_topic", "dlt_partition", "dlt_offset")
REPLAY_IDLE_SECONDS = 3.0


def _urls() -> dict[str, str]:
    return {
        "profile": os.environ.get("PAT_PROFILE_URL", "http://127.0.0.1:8102"),
        "settings": os.environ.get("PAT_SETTINGS_URL", "http://127.0.0.1:8101"),
        "tokens": os.environ.get("PAT_TOKENS_URL", "http://127.0.0.1:8103"),
    }


def _password(variable: str, prompt: str) -> str:
    return os.environ.get(variable) or getpass.getpass(prompt)


def _session(api: Api) -> str:
    username = os.environ.get("PAT_ADMIN_USERNAME", "admin")
    password = _password("PAT_ADMIN_PASSWORD", f"password of {username}: ")
    return api.sign_in(username, password)


def _print(value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=True))


def create_admin(args: argparse.Namespace) -> int:
    password = _password(
        "PAT_NEW_ADMIN_PASSWORD", "password of the new administrator: "
    )
    new = UserCreate(
        username=args.username,
        display_name=args.display_name,
        email=args.email,
        password=password,
        role="administrator",
    )

    async def create() -> dict[str, Any]:
        config = ProfileConfig()
        runtime = Runtime("profile", config, MIGRATIONS)
        service = ProfileService(runtime, config)
        await runtime.open_database()
        try:
            return (await service.create_user(new)).model_dump(mode="json")
        finally:
            await runtime.close_database()

    _print(asyncio.run(create()))
    return 0


def settings(args: argparse.Namespace) -> int:
    api = Api(_urls())
    session = _session(api)
    if args.action == "show":
        path = f"/v1/settings/{args.key}" if args.key else "/v1/settings"
        _print(api.request("GET", "settings", path, session))
    else:
        _print(api.change_setting(session, args.key, json.loads(args.value)))
    return 0


def tokens(args: argparse.Namespace) -> int:
    api = Api(_urls())
    session = _session(api)
    path = f"/v1/users/{args.user_id}/tokens"
    if args.action == "list":
        _print(api.request("GET", "tokens", path, session))
    else:
        api.request("DELETE", "tokens", f"{path}/{args.token_id}", session, expect=204)
        print(f"deleted token {args.token_id}")
    return 0


async def replay_dead_letters(bootstrap: str, topics: Topics, service: str) -> int:
    """Republish every dead letter not replayed yet; return how many."""
    source = topics.dead_letters(service)
    consumer = AIOKafkaConsumer(
        source,
        bootstrap_servers=bootstrap,
        group_id=f"{source}.replay",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", enable_idempotence=True
    )
    await consumer.start()
    await producer.start()
    replayed = 0
    try:
        while True:
            batches = await consumer.getmany(timeout_ms=int(REPLAY_IDLE_SECONDS * 1000))
            if not batches:
                return replayed
            for records in batches.values():
                for record in records:
                    headers = dict(record.headers)
                    target = headers["dlt_topic"].decode()
                    original = [
                        (name, raw)
                        for name, raw in record.headers
                        if name not in DEAD_LETTER_HEADERS
                    ]
                    await producer.send_and_wait(
                        target, record.value, key=record.key, headers=original
                    )
                    replayed += 1
            # Committed after the records are republished, so none is lost.
            await consumer.commit()
    finally:
        await producer.stop()
        await consumer.stop()


def dead_letters(args: argparse.Namespace) -> int:
    bootstrap = os.environ.get("PAT_KAFKA_BOOTSTRAP", "127.0.0.1:19092")
    topics = Topics(os.environ.get("PAT_TOPIC_PREFIX", "pat."))
    count = asyncio.run(replay_dead_letters(bootstrap, topics, args.service))
    print(f"replayed {count} dead letters of {args.service}")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m services.admin")
    commands = parser.add_subparsers(dest="command", required=True)

    create = commands.add_parser("create-admin", help="create an administrator")
    create.add_argument("--username", required=True)
    create.add_argument("--email", required=True)
    create.add_argument("--display-name", default="Administrator")
    create.set_defaults(run=create_admin)

    setting = commands.add_parser("settings", help="show or change settings")
    setting_actions = setting.add_subparsers(dest="action", required=True)
    show = setting_actions.add_parser("show")
    show.add_argument("key", nargs="?")
    change = setting_actions.add_parser("set")
    change.add_argument("key")
    change.add_argument("value", help="the new value as JSON, e.g. true or 90")
    setting.set_defaults(run=settings)

    token = commands.add_parser("tokens", help="list or delete a user's tokens")
    token_actions = token.add_subparsers(dest="action", required=True)
    token_actions.add_parser("list").add_argument("user_id")
    delete = token_actions.add_parser("delete")
    delete.add_argument("user_id")
    delete.add_argument("token_id")
    token.set_defaults(run=tokens)

    letters = commands.add_parser("dead-letters", help="replay dead letters")
    letters_actions = letters.add_subparsers(dest="action", required=True)
    replay = letters_actions.add_parser("replay")
    replay.add_argument(
        "service", choices=["settings", "profile", "tokens", "notifier"]
    )
    letters.set_defaults(run=dead_letters)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        code: int = args.run(args)
    except (ApiError, ValidationError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
