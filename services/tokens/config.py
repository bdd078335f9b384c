"""Configuration of the tokens service."""

from __future__ import annotations

from pydantic import Field, SecretStr, model_validator

from services.common.config import ServiceConfig


class TokensConfig(ServiceConfig):
    http_port: int = 8103
    database_url: SecretStr = SecretStr(
        "postgresql://tokens_svc:tokens-dev-only@127.0.0.1:15432/pat"
    )
    hash_key: SecretStr = Field(
        default=SecretStr("tokens-hash-key-dev-only"),
        description="Current server-side key of the HMAC-SHA256 under which new "
        "tokens are stored.",
    )
    hash_key_id: str = Field(default="k1", min_length=1)
    accepted_hash_keys: dict[str, SecretStr] = Field(
        default_factory=dict,
        description="Other keys by id, as JSON, under which stored hashes may be. "
        "A token stored under one of them validates and is stored again under "
        "the current key on first use.",
    )
    scan_interval_seconds: float = Field(default=30.0, gt=0)
    scan_batch_size: int = Field(default=2000, ge=1, le=10_000)
    max_active_tokens: int = Field(
        default=50,
        ge=1,
        description="Maximum number of active (neither expired nor deleted) tokens "
        "that one user can hold.",
    )
    validation_cache_seconds: float = Field(
        default=60.0,
        ge=0,
        le=3600,
        description="Maximum age in seconds of a cached validation result; 0 "
        "turns the cache off. Events remove entries sooner.",
    )
    negative_cache_seconds: float = Field(
        default=10.0,
        ge=0,
        le=3600,
        description="Maximum age in seconds of a cached rejection.",
    )
    validation_cache_entries: int = Field(default=100_000, ge=1)
    validation_failure_limit: int = Field(
        default=100,
        ge=0,
        description="Failed forward-auth validations (malformed, unknown, expired "
        "or deleted tokens) that one client address may have within "
        "validation_failure_window_seconds before its further requests get 401 "
        "without a lookup; 0 turns the limit off. Counted per process.",
    )
    validation_failure_window_seconds: float = Field(
        default=60.0,
        gt=0,
        le=86_400,
        description="Length in seconds of the sliding window of "
        "validation_failure_limit.",
    )
    introspection_clients: dict[str, SecretStr] = Field(
        default_factory=dict,
        description="Client id to secret, as JSON, of the callers allowed to use "
        "the RFC 7662 introspection endpoint with HTTP Basic authentication.",
    )

    @model_validator(mode="after")
    def _check_key_ids(self) -> TokensConfig:
        if self.hash_key_id in self.accepted_hash_keys:
            message = (
                f"hash_key_id {self.hash_key_id!r} is also in accepted_hash_keys; "
                "remove it there or give the current key another id"
            )
            raise ValueError(message)
        return self

    def hash_keys(self) -> dict[str, bytes]:
        """Return every key by id, the current one first."""
        keys = {self.hash_key_id: self.hash_key.get_secret_value().encode()}
        for key_id, key in self.accepted_hash_keys.items():
            keys[key_id] = key.get_secret_value().encode()
        return keys
