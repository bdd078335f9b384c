"""The parts every service runs: pool, migrations, broker, relay, HTTP basics."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, Union

import aiohttp
import uvicorn
from fastapi import Depends, FastAPI, Header, HTTPException, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from faststream import AckPolicy, FastStream
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from faststream.message import StreamMessage
from faststream.specification import AsyncAPI
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from services.common import logs
from services.common.auth import (
    AuthenticationError,
    Authenticator,
    CredentialValidator,
    Identity,
    PatValidator,
    ServiceUnavailable,
    to_http_error,
)
from services.common.config import ServiceConfig
from services.common.consumer import EventDispatcher
from services.common.db import Pool, create_pool, migrate
from services.common.kafka import (
    TopicSpec,
    create_broker,
    ensure_topics,
    shared_topics,
)
from services.common.observability import CONSUMER_LAG, instrument
from services.common.outbox import OutboxRelay
from services.contracts import Event, Topics

log = logging.getLogger(__name__)

Hook = Callable[[], Awaitable[None]]
Worker = Callable[[], Awaitable[None]]

SHUTDOWN_SECONDS = 10.0
LAG_INTERVAL_SECONDS = 5.0
# Credential checks against the profile and tokens services.
HTTP_TIMEOUT_SECONDS = 5.0
HTTP_CONNECTIONS = 100
# A batch subscriber's maximum records per batch, and how long one poll waits
# for records. FastStream 0.7 sleeps as long again after an empty poll.
BATCH_MAX_RECORDS = 1000
BATCH_TIMEOUT_MS = 50
# How long the broker keeps a fetch waiting when its partitions have no new
# records. aiokafka sends no other fetch to that broker meanwhile. So when
# some partitions are idle and the others' fetched records run out, the
# consumer waits out the rest of this. At aiokafka's default of 500 ms that
# was up to half of the time of consuming a backlog (docs/benchmarks.md).
BATCH_FETCH_WAIT_MS = 100


class Runtime:
    """Wires one service: configuration, database, Kafka and background work."""

    def __init__(
        self,
        name: str,
        config: ServiceConfig,
        migrations: Path,
    ) -> None:
        self.name = name
        self.schema = name
        self.config = config
        self.topics = Topics(config.topic_prefix)
        self.broker: KafkaBroker = create_broker(config.kafka_bootstrap, name)
        self._migrations = migrations
        self.topics_to_create: list[TopicSpec] = shared_topics(self.topics)
        self._pool: Pool | None = None
        self._http: aiohttp.ClientSession | None = None
        self._startup_hooks: list[Hook] = []
        self._workers: list[Worker] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._subscribers: list[Any] = []
        self._dispatchers: list[EventDispatcher] = []
        self.session_validator: CredentialValidator | None = None
        self.pat_validator: PatValidator | None = None

    @property
    def pool(self) -> Pool:
        if self._pool is None:
            raise RuntimeError(f"{self.name} has not started")
        return self._pool

    @property
    def http(self) -> aiohttp.ClientSession:
        if self._http is None:
            raise RuntimeError(f"{self.name} has not started")
        return self._http

    def consume(self, topic: str, batch: bool = False) -> EventDispatcher:
        """Subscribe to ``topic``; register handlers on the returned dispatcher.

        Each topic gets its own consumer group, read from the earliest offset
        the first time, so a new service learns the whole retained history.
        With ``batch``, each poll's records (at most ``BATCH_MAX_RECORDS``)
        are applied in one transaction and one offset commit.
        """
        dead_letters = self.topics.dead_letters(self.name)
        dispatcher = EventDispatcher(
            self.name, lambda: self.pool, self.broker, dead_letters
        )
        self.topics_to_create.append(TopicSpec(dead_letters))

        async def on_record(message: KafkaMessage) -> None:
            await dispatcher.handle(message)

        async def on_batch(message: KafkaMessage) -> None:
            await dispatcher.handle_batch(message)

        topic_name = topic.removeprefix(self.topics.prefix)
        on_message = on_batch if batch else on_record
        on_message.__name__ = f"on_{topic_name.replace('.', '_')}"
        batching: dict[str, Any] = {}
        if batch:
            batching = {
                "batch": True,
                "max_records": BATCH_MAX_RECORDS,
                "batch_timeout_ms": BATCH_TIMEOUT_MS,
                "fetch_max_wait_ms": BATCH_FETCH_WAIT_MS,
            }
        subscriber = self.broker.subscriber(
            topic,
            **batching,
            group_id=f"{self.topics.prefix}{self.name}.{topic_name}",
            auto_offset_reset="earliest",
            # The offset is committed after the handler returns, and an
            # exception rewinds to the record; a batch subscriber's
            # dispatcher commits and rewinds itself, after the batch's
            # transaction: see services.common.consumer.
            ack_policy=AckPolicy.MANUAL if batch else AckPolicy.NACK_ON_ERROR,
            # The dispatcher parses the value itself; FastStream's own JSON
            # decoding would raise on a poison record before any handler ran,
            # and NACK_ON_ERROR would then redeliver it forever.
            decoder=_raw_value,
            title=f"{self.name}: {topic_name}",
            description=f"The {self.name} service applies events from {topic}.",
        )
        subscriber(on_message)
        self._subscribers.append(subscriber)
        self._dispatchers.append(dispatcher)
        return dispatcher

    def document_publisher(self, topic: str, events: tuple[type[Event], ...]) -> None:
        """Describe a topic this service publishes to, for the AsyncAPI document.

        Events are sent by the outbox relay; this only declares their schema.
        """
        names = ", ".join(event.__name__ for event in events)
        self.broker.publisher(
            topic,
            title=f"{self.name}: {topic.removeprefix(self.topics.prefix)}",
            description=f"Published through the outbox: {names}.",
            schema=Union[events],  # noqa: UP007
        )

    def asyncapi(self) -> AsyncAPI:
        return AsyncAPI(self.broker, title=self.name, version="1")

    def faststream_app(self) -> FastStream:
        """Return a FastStream application, for ``faststream docs gen``."""
        return FastStream(self.broker, specification=self.asyncapi())

    def on_startup(self, hook: Hook) -> None:
        """Run ``hook`` after migrations and before consumers start."""
        self._startup_hooks.append(hook)

    def add_worker(self, worker: Worker) -> None:
        """Run ``worker`` as a background task from start-up until shutdown."""
        self._workers.append(worker)

    async def open_database(self) -> None:
        """Open the pool and apply pending migrations."""
        dsn = self.config.database_url.get_secret_value()
        self._pool = await create_pool(dsn, self.schema)
        await migrate(self._pool, self.schema, self._migrations)

    async def close_database(self) -> None:
        if self._pool is not None:
            await self._pool.close()

    @contextlib.asynccontextmanager
    async def lifespan(self, _app: FastAPI) -> AsyncIterator[None]:
        # aiohttp rather than httpx for the credential checks every request
        # makes: about a fifth of httpx's CPU per request on this workload.
        self._http = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=HTTP_TIMEOUT_SECONDS),
            connector=aiohttp.TCPConnector(limit=HTTP_CONNECTIONS),
        )
        await self.open_database()
        assert self._pool is not None
        for hook in self._startup_hooks:
            await hook()
        await ensure_topics(self.config.kafka_bootstrap, self.topics_to_create)
        await self.broker.start()

        relay = OutboxRelay(
            self._pool,
            self.broker,
            self.schema,
            self.name,
            self.config.outbox_poll_seconds,
        )
        for worker in [relay.run, self._measure_lag, *self._workers]:
            self._tasks.append(asyncio.create_task(self._supervise(worker)))
        log.info("%s started", self.name)
        try:
            yield
        finally:
            await self._shutdown()

    def _consumers(self) -> list[Any]:
        return [s.consumer for s in self._subscribers if s.consumer is not None]

    async def _measure_lag(self) -> None:
        while True:
            for consumer in self._consumers():
                partitions = consumer.assignment()
                if not partitions:
                    continue
                ends = await consumer.end_offsets(list(partitions))
                lag: dict[str, int] = {}
                for partition in partitions:
                    position = await consumer.position(partition)
                    lag[partition.topic] = lag.get(partition.topic, 0) + max(
                        0, ends[partition] - position
                    )
                for topic, value in lag.items():
                    CONSUMER_LAG.labels(self.name, topic).set(value)
            await asyncio.sleep(LAG_INTERVAL_SECONDS)

    async def readiness(self) -> dict[str, str]:
        """Check the database, the broker and the consumers' assignments."""
        problems: dict[str, str] = {}
        try:
            await self.pool.fetchval("SELECT 1")
        except Exception as error:
            problems["database"] = f"unreachable: {type(error).__name__}"
        if not await self.broker.ping(timeout=2.0):
            problems["kafka"] = "unreachable"
        consumers = self._consumers()
        if len(consumers) < len(self._subscribers):
            problems["consumers"] = "not started"
        elif any(not consumer.assignment() for consumer in consumers):
            # NOTE: a replica beyond the partition count (3) gets no partition
            # and stays not ready, which is right: it has nothing to do.
            problems["consumers"] = "waiting for partition assignment"
        return problems

    async def _supervise(self, worker: Worker) -> None:
        name = getattr(worker, "__qualname__", repr(worker))
        while True:
            try:
                await worker()
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("worker %s failed; restarting in 1 s", name)
                await asyncio.sleep(1.0)

    async def _shutdown(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.wait_for(
            asyncio.gather(*self._tasks, return_exceptions=True), SHUTDOWN_SECONDS
        )
        self._tasks.clear()
        # Let the batch being applied commit its offsets, before and after
        # the subscribers stop, so that a restart does not redeliver it.
        await self._drain()
        await self.broker.stop()
        await self._drain()
        if self._http is not None:
            await self._http.close()
        await self.close_database()
        log.info("%s stopped", self.name)

    async def _drain(self) -> None:
        """Wait, for at most ``SHUTDOWN_SECONDS``, for the batches being
        applied to commit their offsets."""
        if self._dispatchers:
            drains = [asyncio.create_task(d.drain()) for d in self._dispatchers]
            await asyncio.wait(drains, timeout=SHUTDOWN_SECONDS)

    def authenticator(self) -> Authenticator:
        return Authenticator(
            self.http,
            self.config.profile_url,
            self.config.tokens_url,
            self.session_validator,
            self.pat_validator,
        )

    async def identify(
        self,
        authorization: str | None,
        allow_pat: bool = True,
        client_address: str | None = None,
    ) -> Identity:
        try:
            return await self.authenticator().authenticate(
                authorization, allow_pat, client_address
            )
        except (AuthenticationError, ServiceUnavailable) as error:
            raise to_http_error(error) from error

    def create_app(self, title: str) -> FastAPI:
        app = FastAPI(title=title, lifespan=self.lifespan)
        app.state.runtime = self
        app.add_exception_handler(RequestValidationError, _validation_error)

        @app.get("/healthz", include_in_schema=False)
        async def healthz() -> dict[str, str]:
            return {"status": "ok"}

        @app.get("/readyz", include_in_schema=False)
        async def readyz() -> JSONResponse:
            problems = await self.readiness()
            if problems:
                return JSONResponse(
                    {"status": "not ready", **problems},
                    status.HTTP_503_SERVICE_UNAVAILABLE,
                )
            return JSONResponse({"status": "ready"})

        @app.get("/metrics", include_in_schema=False)
        async def metrics() -> Response:
            return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

        instrument(app, self.name)

        return app

    def serve(self, app: FastAPI) -> None:
        logs.configure(self.name, self.config.log_level)
        uvicorn.run(
            app,
            host=self.config.http_host,
            port=self.config.http_port,
            log_config=None,
            access_log=False,
            # uvloop and httptools took forward auth from about 1,800 to
            # 2,700 requests a second (bench/validation.py).
            loop="uvloop",
            http="httptools",
            timeout_graceful_shutdown=int(SHUTDOWN_SECONDS),
        )


async def _raw_value(message: StreamMessage[Any]) -> bytes:
    return message.body


async def _validation_error(_: Request, error: Exception) -> JSONResponse:
    # The rejected input is left out of the response: it may be a password,
    # and it may not even be encodable as JSON (a lone surrogate, NaN).
    assert isinstance(error, RequestValidationError)
    detail = [
        {"loc": list(item["loc"]), "msg": item["msg"], "type": item["type"]}
        for item in error.errors()
    ]
    return JSONResponse({"detail": detail}, status.HTTP_422_UNPROCESSABLE_CONTENT)


async def _any_caller(
    request: Request, authorization: Annotated[str | None, Header()] = None
) -> Identity:
    runtime: Runtime = request.app.state.runtime
    address = request.client.host if request.client else None
    return await runtime.identify(authorization, True, address)


async def _session_caller(
    request: Request, authorization: Annotated[str | None, Header()] = None
) -> Identity:
    runtime: Runtime = request.app.state.runtime
    return await runtime.identify(authorization, allow_pat=False)


Caller = Annotated[Identity, Depends(_any_caller)]
"""A caller signed in with a session or a personal access token."""

SessionCaller = Annotated[Identity, Depends(_session_caller)]
"""A caller signed in with a password session; tokens are rejected with 403."""


def require_admin(identity: Identity) -> None:
    if not identity.is_admin:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN, "this request needs the administrator role"
        )
