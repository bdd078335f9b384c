"""schemathesis fuzzes every operation of every service's OpenAPI document.

The documents are the committed ones in docs/contracts, which
tests/unit/test_contracts.py keeps equal to what the services serve. Each
operation runs once with the administrator's session and once without a
credential, against the services of this test run. Every response must be
below 500 and match the schema documented for its status.

The notifier's document lists no operations. The tests are marked
``after_all``, so the users, attributes and tokens that
they create and the failure counts that they fill (sign-in and forward-auth
limits from 127.0.0.1) cannot disturb other tests.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import schemathesis
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from tests.conftest import RunContext

CONTRACTS = Path(__file__).parents[2] / "docs" / "contracts"

# Examples per operation and credential. The 46 operations, each run twice,
# took 45 s at this number on a 2-core machine, after 23 s of start-up.
MAX_EXAMPLES = 20

CONFIG = schemathesis.Config.from_dict(
    {
        "seed": 20261204,
        "phases": {
            # The coverage phase sends every boundary case of every field,
            # hundreds per operation, which does not fit the time budget.
            "coverage": {"enabled": False},
            "stateful": {"enabled": False},
        },
        "generation": {
            "max-examples": MAX_EXAMPLES,
            "mode": "all",
            "database": "none",
        },
    }
)

# Operations that would change state that the fuzzing itself depends on;
# tests/e2e/test_openapi_fuzz_state.py fuzzes them with callers of their own.
# PUT /v1/settings/{key} could switch PATs off. DELETE /v1/sessions/current
# would end the administrator's session. PATCH /v1/me and POST
# /v1/me/password would change the administrator's own account, and a
# password change ends its other sessions. The development routes under
# /v1/dev/ move the tokens clock or run the expiry scan.
EXCLUDED = (
    ("PUT", "/v1/settings/{key}"),
    ("DELETE", "/v1/sessions/current"),
    ("PATCH", "/v1/me"),
    ("POST", "/v1/me/password"),
)


def _load(service: str) -> schemathesis.BaseSchema:
    schema: schemathesis.BaseSchema = schemathesis.openapi.from_path(
        CONTRACTS / f"{service}.openapi.json", config=CONFIG
    )
    schema = schema.exclude(path_regex=r"^/v1/dev/")
    for method, path in EXCLUDED:
        schema = schema.exclude(method=method, path=path)
    return schema


CHECKS = [not_a_server_error, response_schema_conformance]

profile_schema = _load("profile")
settings_schema = _load("settings")
tokens_schema = _load("tokens")


def _check(
    run: RunContext, service: str, case: schemathesis.Case[Any], admin: str
) -> None:
    headers = {"Authorization": f"Bearer {admin}"} if admin else {}
    case.call_and_validate(
        base_url=run.stack.urls[service],
        headers=headers,
        checks=CHECKS,
        timeout=30,
    )


@pytest.fixture(scope="session", params=["administrator", "anonymous"])
def credential(request: pytest.FixtureRequest, admin: str) -> str:
    return admin if request.param == "administrator" else ""


@pytest.mark.after_all
@profile_schema.parametrize()
def test_profile_api(
    run: RunContext, credential: str, case: schemathesis.Case[Any]
) -> None:
    _check(run, "profile", case, credential)


@pytest.mark.after_all
@settings_schema.parametrize()
def test_settings_api(
    run: RunContext, credential: str, case: schemathesis.Case[Any]
) -> None:
    _check(run, "settings", case, credential)


@pytest.mark.after_all
@tokens_schema.parametrize()
def test_tokens_api(
    run: RunContext, credential: str, case: schemathesis.Case[Any]
) -> None:
    _check(run, "tokens", case, credential)
