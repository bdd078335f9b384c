"""The tokens service: wiring of configuration, database, Kafka and routes."""

from __future__ import annotations

import asyncio
from pathlib import Path

from fastapi import FastAPI
from faststream import FastStream

from services.common.auth import AuthenticationError, Identity, ServiceUnavailable
from services.common.runtime import Runtime
from services.contracts import (
    SettingChanged,
    TokenCreated,
    TokenExpired,
    TokenExpiring,
    TokenRevoked,
    TokenRotated,
    UserCreated,
    UserDeactivated,
    UserUpdated,
)
from services.tokens.api import build_dev_router, build_router
from services.tokens.clock import Clock
from services.tokens.config import TokensConfig
from services.tokens.failures import FailureLimiter
from services.tokens.gateway import build_gateway_router, forward_auth_routes
from services.tokens.invalidation import InvalidationListener
from services.tokens.service import Outcome, TokenService, ValidationUnavailable
from services.tokens.usage import parse_address

MIGRATIONS = Path(__file__).parent / "migrations"


def create_app(config: TokensConfig | None = None) -> FastAPI:
    config = config or TokensConfig()
    runtime = Runtime("tokens", config, MIGRATIONS)
    runtime.document_publisher(
        runtime.topics.tokens_events,
        (TokenCreated, TokenRevoked, TokenRotated, TokenExpiring, TokenExpired),
    )
    service = TokenService(runtime, config, Clock(adjustable=config.development))

    async def validate_pat(token: str, client_address: str | None) -> Identity:
        try:
            result = await service.validate(token, parse_address(client_address))
        except ValidationUnavailable as error:
            raise ServiceUnavailable("the token database is unreachable") from error
        if result.outcome is not Outcome.VALID:
            raise AuthenticationError("the token is not valid")
        assert result.user_id is not None
        assert result.username is not None
        assert result.role is not None
        return Identity(
            result.user_id,
            result.username,
            result.role,  # type: ignore[arg-type]
            "pat",
            result.token_id,
        )

    async def scan_periodically() -> None:
        while True:
            await service.scan()
            await asyncio.sleep(config.scan_interval_seconds)

    async def refresh_clock_periodically() -> None:
        while True:
            await service.refresh_clock()
            await asyncio.sleep(1.0)

    if config.development:
        runtime.on_startup(service.refresh_clock)
        runtime.add_worker(refresh_clock_periodically)
    topics = runtime.topics
    invalidation = InvalidationListener(
        config.kafka_bootstrap,
        [topics.tokens_events, topics.profile_events, topics.settings_values],
        service.cache,
        lambda: runtime.pool,
    )

    runtime.pat_validator = validate_pat
    runtime.add_worker(scan_periodically)
    runtime.add_worker(service.usage.run)
    if config.validation_cache_seconds > 0:
        runtime.add_worker(invalidation.run)
    runtime.consume(runtime.topics.settings_values).register(
        SettingChanged, service.on_setting_changed
    )
    profile_events = runtime.consume(runtime.topics.profile_events)
    profile_events.register(UserCreated, service.on_user_changed)
    profile_events.register(UserUpdated, service.on_user_changed)
    profile_events.register(UserDeactivated, service.on_user_deactivated)

    limiter = None
    if config.validation_failure_limit > 0:
        limiter = FailureLimiter(
            config.validation_failure_limit,
            config.validation_failure_window_seconds,
        )
    app = runtime.create_app("tokens")
    app.include_router(build_router(service))
    app.include_router(
        build_gateway_router(service, config.introspection_clients, limiter)
    )
    app.router.routes[0:0] = forward_auth_routes(service, limiter)
    if config.development:
        app.include_router(build_dev_router(service))
    return app


def main() -> None:
    config = TokensConfig()
    app = create_app(config)
    app.state.runtime.serve(app)


def asyncapi_app() -> FastStream:
    """Build the application that ``faststream docs gen --factory`` documents."""
    app = create_app(TokensConfig(environment="development"))
    runtime: Runtime = app.state.runtime
    return runtime.faststream_app()
