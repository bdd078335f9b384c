"""Configuration of the tokens service."""

from __future__ import annotations

from pydantic import Field, SecretStr

from services.common.config import ServiceConfig


class TokensConfig(ServiceConfig):
    http_port: int = 8103
    database_url: SecretStr = SecretStr(
        "postgresql://tokens_svc:tokens-dev-only@127.0.0.1:15432/pat"
    )
    hash_key: SecretStr = Field(
        default=SecretStr("tokens-hash-key-dev-only"),
        description="Server-side key of the HMAC-SHA256 under which tokens are stored.",
    )
    hash_key_id: str = "k1"
    scan_interval_seconds: float = Field(default=30.0, gt=0)
    scan_batch_size: int = Field(default=500, ge=1, le=10_000)
