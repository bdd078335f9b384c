"""Settings shared by every service, read from the environment at start-up."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PLACEHOLDER_MARK = "dev-only"


class ServiceConfig(BaseSettings):
    """Configuration common to all services; each service adds its own fields.

    Defaults suit a development machine, but the environment defaults to
    production. Unless PAT_ENVIRONMENT=development, any secret that still
    contains a development placeholder is rejected at start-up.
    """

    model_config = SettingsConfigDict(env_prefix="PAT_", extra="ignore")

    environment: Literal["development", "production"] = "production"
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8000, ge=1, le=65535)
    database_url: SecretStr = SecretStr("")
    kafka_bootstrap: str = "127.0.0.1:19092"
    topic_prefix: str = "pat."
    profile_url: str = "http://127.0.0.1:8102"
    tokens_url: str = "http://127.0.0.1:8103"
    outbox_poll_seconds: float = Field(default=1.0, gt=0)
    log_level: str = "INFO"

    @property
    def development(self) -> bool:
        return self.environment == "development"

    def secret_fields(self) -> dict[str, SecretStr]:
        """Return every secret by name, including those inside dict fields."""
        secrets: dict[str, SecretStr] = {}
        for name, value in self.__dict__.items():
            if isinstance(value, SecretStr):
                secrets[name] = value
            elif isinstance(value, dict):
                for key, item in value.items():
                    if isinstance(item, SecretStr):
                        secrets[f"{name}[{key}]"] = item
        return secrets

    @model_validator(mode="after")
    def _reject_placeholders(self) -> ServiceConfig:
        if self.development:
            return self
        for name, value in self.secret_fields().items():
            secret = value.get_secret_value()
            if not secret or PLACEHOLDER_MARK in secret:
                message = (
                    f"{name} is empty or a development placeholder; "
                    f"set a real value outside development"
                )
                raise ValueError(message)
        return self
