"""schemathesis on the operations that change the caller's own state.

tests/e2e/test_openapi_fuzz.py leaves these out because they would end or
change the session that the rest of its fuzzing uses. Here each case gets a
caller of its own (a fresh administrator, or a fresh session of one), and
settings are put back after every case. Marked ``after_all`` like the rest
of the fuzzing. The development routes are not in the committed documents,
which describe production, where those routes are not mounted.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
import schemathesis

from tests.conftest import USED_PASSWORDS, RunContext
from tests.e2e.test_openapi_fuzz import CHECKS, CONFIG

CONTRACTS = Path(__file__).parents[2] / "docs" / "contracts"


def _only(service: str, method: str, path: str) -> schemathesis.BaseSchema:
    schema: schemathesis.BaseSchema = schemathesis.openapi.from_path(
        CONTRACTS / f"{service}.openapi.json", config=CONFIG
    )
    return schema.include(method=method, path=path)


settings_change = _only("settings", "PUT", "/v1/settings/{key}")
sign_out = _only("profile", "DELETE", "/v1/sessions/current")
profile_change = _only("profile", "PATCH", "/v1/me")
password_change = _only("profile", "POST", "/v1/me/password")


def _fresh_admin(run: RunContext, admin: str) -> str:
    """Create an administrator for one case; return a session of theirs."""
    name = f"fuzz{uuid.uuid4().hex[:10]}"
    password = f"pw-{uuid.uuid4().hex}"
    USED_PASSWORDS.append(password)
    run.api.create_user(
        admin,
        username=name,
        display_name="Fuzz",
        email=f"{name}@{run.run_id}.example.org",
        password=password,
        role="administrator",
    )
    return run.api.sign_in(name, password)


def _call(run: RunContext, service: str, case: Any, credential: str) -> None:
    headers = {"Authorization": f"Bearer {credential}"} if credential else {}
    case.call_and_validate(
        base_url=run.stack.urls[service], headers=headers, checks=CHECKS, timeout=30
    )


@pytest.mark.after_all
@settings_change.parametrize()
def test_settings_change(run: RunContext, admin: str, case: Any) -> None:
    try:
        _call(run, "settings", case, admin)
    finally:
        run.api.change_setting(admin, "pat_enabled", True)
        run.api.change_setting(admin, "pat_max_expire_days", 180)


@pytest.mark.after_all
@sign_out.parametrize()
def test_sign_out(run: RunContext, admin: str, case: Any) -> None:
    _call(run, "profile", case, _fresh_admin(run, admin))


@pytest.mark.after_all
@profile_change.parametrize()
def test_profile_change(run: RunContext, admin: str, case: Any) -> None:
    _call(run, "profile", case, _fresh_admin(run, admin))


@pytest.mark.after_all
@password_change.parametrize()
def test_password_change(run: RunContext, admin: str, case: Any) -> None:
    _call(run, "profile", case, _fresh_admin(run, admin))
