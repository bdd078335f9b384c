from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import SecretStr, ValidationError

from services.settings.catalogue import CATALOGUE, InvalidValue
from services.tokens.app import create_app
from services.tokens.clock import Clock
from services.tokens.config import TokensConfig


def test_production_rejects_placeholder_secrets() -> None:
    with pytest.raises(ValidationError, match="development placeholder"):
        TokensConfig(environment="production")


def test_production_accepts_real_secrets() -> None:
    config = TokensConfig(
        environment="production",
        database_url=SecretStr("postgresql://tokens:s3cret-value@db/pat"),
        hash_key=SecretStr("a-real-key-from-a-vault"),
    )

    assert not config.development


def test_clock_cannot_move_outside_development() -> None:
    with pytest.raises(PermissionError):
        Clock(adjustable=False).advance(timedelta(days=1))


def _paths(environment: str, **secrets: SecretStr) -> set[str]:
    app = create_app(TokensConfig(environment=environment, **secrets))  # type: ignore[arg-type]
    return set(app.openapi()["paths"])


def test_clock_routes_exist_only_in_development() -> None:
    production = _paths(
        "production",
        database_url=SecretStr("postgresql://tokens:s3cret-value@db/pat"),
        hash_key=SecretStr("a-real-key-from-a-vault"),
    )
    development = _paths("development")

    assert "/v1/dev/clock/advance" in development
    assert "/v1/dev/clock/advance" not in production
    assert "/v1/dev/expiry-scan" not in production


@pytest.mark.parametrize("value", [0, 181, -5, True, "30", 1.5, None])
def test_max_expiry_setting_bounds(value: object) -> None:
    with pytest.raises(InvalidValue):
        CATALOGUE["pat_max_expire_days"].validate(value)


@pytest.mark.parametrize("value", [1, "yes", None, 0])
def test_pat_setting_takes_booleans_only(value: object) -> None:
    with pytest.raises(InvalidValue):
        CATALOGUE["pat_enabled"].validate(value)
