"""Write or check the committed API documents and event schemas.

    python scripts/contracts.py write   # regenerate docs/contracts/
    python scripts/contracts.py check   # exit 1 if anything differs

``check`` compares each service's OpenAPI and AsyncAPI documents with the
committed copies, and each event's JSON schema with its committed snapshot,
where only backward-compatible changes (new optional fields) are allowed.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from pydantic import SecretStr

from services.contracts import EVENT_TYPES
from services.notifier.app import NotifierConfig
from services.notifier.app import create_app as notifier_app
from services.profile.app import ProfileConfig
from services.profile.app import create_app as profile_app
from services.schema_compat import breaking_changes
from services.settings.app import SettingsConfig
from services.settings.app import create_app as settings_app
from services.tokens.app import create_app as tokens_app
from services.tokens.config import TokensConfig

CONTRACTS = Path(__file__).resolve().parent.parent / "docs" / "contracts"
EVENTS = CONTRACTS / "events"

# Values that pass the production checks; the documents do not depend on them.
_SECRETS = {
    "database_url": SecretStr("postgresql://service:contract@db:5432/pat"),
    "admin_password": SecretStr("contract-document-password"),
    "hash_key": SecretStr("contract-document-key"),
}


def _production(config_type: type[Any]) -> Any:
    fields = {k: v for k, v in _SECRETS.items() if k in config_type.model_fields}
    return config_type(environment="production", **fields)


APPS: dict[str, Callable[[], FastAPI]] = {
    "settings": lambda: settings_app(_production(SettingsConfig)),
    "profile": lambda: profile_app(_production(ProfileConfig)),
    "tokens": lambda: tokens_app(_production(TokensConfig)),
    "notifier": lambda: notifier_app(_production(NotifierConfig)),
}


def documents() -> dict[Path, str]:
    """Return every API document, keyed by its path under docs/contracts."""
    result: dict[Path, str] = {}
    for name, build in APPS.items():
        app = build()
        openapi = json.dumps(app.openapi(), indent=2, sort_keys=True) + "\n"
        # Sorted, because FastStream lists channels in no stable order.
        specification = app.state.runtime.asyncapi().to_specification()
        asyncapi = json.dumps(specification.to_jsonable(), indent=2, sort_keys=True)
        result[CONTRACTS / f"{name}.openapi.json"] = openapi
        result[CONTRACTS / f"{name}.asyncapi.json"] = asyncapi + "\n"
    return result


def event_schemas() -> dict[Path, dict[str, Any]]:
    return {
        EVENTS / f"{ce_type}.json": model.model_json_schema()
        for ce_type, model in EVENT_TYPES.items()
    }


def check() -> list[str]:
    """Return every difference between the code and the committed contracts."""
    problems = [
        f"{path.relative_to(CONTRACTS.parent.parent)} differs from the code"
        for path, text in documents().items()
        if not path.exists() or path.read_text() != text
    ]
    for path, schema in event_schemas().items():
        if not path.exists():
            problems.append(f"{path.name} has no committed schema snapshot")
            continue
        committed = json.loads(path.read_text())
        problems.extend(
            f"{path.name}: {change}" for change in breaking_changes(committed, schema)
        )
        if committed != schema:
            problems.append(f"{path.name}: snapshot is behind a compatible change")
    return problems


def write() -> None:
    """Regenerate the documents; refuse to overwrite a snapshot with a break."""
    EVENTS.mkdir(parents=True, exist_ok=True)
    for path, text in documents().items():
        path.write_text(text)
    for path, schema in event_schemas().items():
        if path.exists():
            changes = breaking_changes(json.loads(path.read_text()), schema)
            if changes:
                message = f"{path.name}: {'; '.join(changes)}; add a new version"
                raise SystemExit(message)
        path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n")


def main() -> int:
    command = sys.argv[1] if len(sys.argv) > 1 else "check"
    if command == "write":
        write()
        return 0
    problems = check()
    for problem in problems:
        print(problem)
    if problems:
        print("run 'make contracts' to update docs/contracts if the change is meant")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
