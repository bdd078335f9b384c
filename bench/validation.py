"""Measure token validation: cache hits, cache misses, revocation, sign-ins.

``python -m bench --only validation`` (``make bench-validate``) runs it. The
four services run with a fresh database, plus two more tokens processes: one
with the validation cache off, and one with the cache on that only events
can empty. Every figure is divided by a ceiling measured in the same run:

- forward auth on a cache hit, in requests per second, against the same
  process's bare ``/healthz``;
- forward auth with the cache off against a bare asyncpg loop of the same
  statement (``LOOKUP_SQL``) with the same pool size and callers;
- the p99 time from a deletion's response to the first 401 at the caching
  process, under forward-auth load, against the p99 of a bare aiokafka
  produce-to-consume hop on the same broker;
- the forward-auth p99 while sign-ins hash passwords in the profile service,
  against the same p99 without sign-ins.

When the machine has two cores or more, the tokens processes run on one core
and the load generators on another, so that they do not take CPU time from
each other. Kafka, Postgres and the other services may run on either. The
load generators and the ceilings' loops run on uvloop, as the services do.
Every loop is bounded in count and in time, and every request goes to a
server that this module started on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import ipaddress
import multiprocessing
import queue
import statistics
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from multiprocessing.synchronize import Event as EventType
from typing import Any, TypeVar

import asyncpg
import httpx
import uvloop
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bench.common import (
    HOST,
    PASSWORD,
    BenchStack,
    Load,
    Row,
    Section,
    http_load,
    http_request,
    latency_line,
    percentile,
    pinned,
)
from services.client import wait_for_validation_cache
from services.tokens import secret
from services.tokens.config import TokensConfig
from services.tokens.service import LOOKUP_SQL

T = TypeVar("T")

FORWARD = "/v1/auth/forward"
# The size of the tokens service's pool (services.common.db.create_pool).
POOL_SIZE = 10
# Seconds that each attempt to observe a revocation may take.
REVOCATION_TIMEOUT = 10.0
# Seconds that the whole revocation measurement may take.
REVOCATION_DEADLINE = 600.0


@dataclass(frozen=True)
class Settings:
    """The inputs of one run, which ``quick`` shrinks for a trial."""

    seconds: float
    rounds: int
    connections: int
    deletions: int
    # Deletions and Kafka hops alternate in this many chunks.
    revocation_chunks: int
    background_connections: int
    sign_ins_per_second: float
    growth_tokens: int
    growth_cached: int

    @classmethod
    def for_run(cls, quick: bool) -> Settings:
        if quick:
            return cls(0.5, 2, 16, 40, 4, 4, 2.0, 1_000, 100)
        return cls(2.0, 5, 16, 500, 10, 4, 2.0, 10_000, 100)


@dataclass
class Measurements:
    """The loads of each kind, over every round."""

    loads: dict[str, list[Load]] = field(default_factory=dict)

    def add(self, name: str, load: Load) -> None:
        self.loads.setdefault(name, []).append(load)

    def median_rate(self, name: str) -> float:
        return statistics.median(load.per_second for load in self.loads[name])

    def latencies(self, name: str) -> list[float]:
        return [value for load in self.loads[name] for value in load.latencies]

    def failures(self) -> int:
        return sum(load.failures for loads in self.loads.values() for load in loads)

    def ratios(self, top: str, bottom: str) -> list[float]:
        pairs = zip(self.loads[top], self.loads[bottom], strict=True)
        return [a.per_second / b.per_second for a, b in pairs if b.per_second]


@dataclass
class Validators:
    """The tokens processes under test and what their requests need."""

    hit_port: int
    miss_port: int
    checking_port: int
    pids: list[int]
    tokens_url: str
    profile_url: str
    user_id: str
    username: str
    session: str
    token: str
    hash_key: bytes

    def forward(self, port: int, token: str | None = None) -> bytes:
        bearer = {"Authorization": f"Bearer {token or self.token}"}
        return http_request(port, "GET", FORWARD, bearer)


def _run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run ``coroutine`` on uvloop, the event loop that the services use."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coroutine)


def run(quick: bool) -> Section:
    settings = Settings.for_run(quick)
    section = Section()
    with BenchStack({"PAT_VALIDATION_CACHE_SECONDS": "300"}) as bench:
        validators = _start_validators(bench)
        with pinned(validators.pids, section, "tokens processes"):
            measurements = Measurements()
            _measure_rates(bench, validators, settings, measurements)
            section.rows += _rate_rows(measurements)
            section.details += _rate_details(measurements)
            section.rows.append(_revocation(bench, validators, settings, section))
            section.rows.append(_sign_ins(validators, settings, section))
            section.growth += _growth(bench, validators, settings)
        section.memory = bench.peak_memory()
    return section


def _start_validators(bench: BenchStack) -> Validators:
    """Start the cache-off and the caching replica, then a user with a token."""
    stack = bench.stack
    miss = stack.add_replica(
        "tokens", {"PAT_VALIDATION_CACHE_SECONDS": "0"}, label="tokens-cache-off"
    )
    checking = stack.add_replica("tokens", label="tokens-checking")

    admin = bench.admin_session()
    [(user_id, session)] = bench.create_users(admin, 1)
    me = bench.api.request("GET", "profile", "/v1/me", session)
    token = bench.api.create_token(session, "bench", 30)

    first = stack.replicas["tokens"][0]
    processes = [first.process, miss.process, checking.process]
    # The services run with the development default key.
    key = TokensConfig(environment="development").hash_key.get_secret_value()
    validators = Validators(
        hit_port=first.port,
        miss_port=miss.port,
        checking_port=checking.port,
        pids=[process.pid for process in processes if process is not None],
        tokens_url=stack.urls["tokens"],
        profile_url=stack.urls["profile"],
        user_id=user_id,
        username=me["username"],
        session=session,
        token=token["token"],
        hash_key=key.encode(),
    )
    wait_for_validation_cache(f"http://{HOST}:{validators.checking_port}")
    wait_for_validation_cache(validators.tokens_url)
    return validators


def _bearer(credential: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {credential}"}


# Throughput: cache hit against /healthz, cache miss against asyncpg.


def _measure_rates(
    bench: BenchStack,
    validators: Validators,
    settings: Settings,
    measurements: Measurements,
) -> None:
    """Interleave the four loops in rounds, so that a change in the machine's
    load affects both sides of a ratio alike."""
    hit = [validators.forward(validators.hit_port)]
    miss = [validators.forward(validators.miss_port)]
    healthz = [http_request(validators.hit_port, "GET", "/healthz", {})]
    key = secret.keyed_hash(validators.hash_key, validators.token)
    dsn = bench.dsns["tokens"]

    def load(port: int, requests: list[bytes]) -> Load:
        return _run(
            http_load(port, requests, 200, settings.seconds, settings.connections)
        )

    load(validators.hit_port, hit)  # warm-up, not reported
    load(validators.miss_port, miss)  # warm-up, not reported
    for _ in range(settings.rounds):
        measurements.add("healthz", load(validators.hit_port, healthz))
        measurements.add("hit", load(validators.hit_port, hit))
        measurements.add("miss", load(validators.miss_port, miss))
        query = _query_rate(dsn, [key], settings.seconds, settings.connections)
        measurements.add("asyncpg", _run(query))


async def _query_rate(
    dsn: str, hashes: list[bytes], seconds: float, callers: int
) -> Load:
    """Run the statement of a cache miss in a bare loop, as the service's pool."""
    pool = await asyncpg.create_pool(
        dsn,
        min_size=POOL_SIZE,
        max_size=POOL_SIZE,
        server_settings={"search_path": "tokens", "timezone": "UTC"},
    )
    load = Load(0, 0.0, 0, [])
    budget = [200_000]
    start = time.monotonic()
    deadline = start + seconds

    async def caller() -> None:
        while time.monotonic() < deadline and budget[0] > 0:
            budget[0] -= 1
            started = time.perf_counter()
            row = await pool.fetchrow(LOOKUP_SQL, hashes)
            load.latencies.append(time.perf_counter() - started)
            if row is None:
                load.failures += 1
            else:
                load.count += 1

    try:
        await asyncio.gather(*(caller() for _ in range(callers)))
    finally:
        await pool.close()
    load.seconds = time.monotonic() - start
    return load


def _rate_rows(measurements: Measurements) -> list[Row]:
    return [
        Row(
            "forward auth, cached token",
            "requests/s",
            measurements.median_rate("hit"),
            "bare /healthz of the same process",
            measurements.median_rate("healthz"),
            0.9,
        ),
        Row(
            "forward auth, token not cached",
            "requests/s",
            measurements.median_rate("miss"),
            f"bare asyncpg loop of the lookup, pool of {POOL_SIZE}",
            measurements.median_rate("asyncpg"),
            0.5,
        ),
    ]


def _rate_details(measurements: Measurements) -> list[str]:
    lines = [
        latency_line("bare /healthz", measurements.latencies("healthz")),
        latency_line("forward auth, cache hit", measurements.latencies("hit")),
        latency_line("forward auth, cache off", measurements.latencies("miss")),
        latency_line("bare asyncpg lookup", measurements.latencies("asyncpg")),
    ]
    for top, bottom in (("hit", "healthz"), ("miss", "asyncpg")):
        ratios = measurements.ratios(top, bottom)
        lines.append(
            f"{top} / {bottom} per round: "
            f"{', '.join(f'{ratio:.2f}' for ratio in ratios)}"
        )
    lines.append(f"unexpected statuses in the rate loops: {measurements.failures()}")
    return lines


# Revocation: delete to first 401 at a caching process, under load.


def _background_load(
    port: int,
    request: bytes,
    connections: int,
    stop: EventType,
    max_seconds: float,
    results: Any,
) -> None:
    """Send forward-auth load in chunks of a second until ``stop`` or time ends.

    Runs in a process of its own, so that the load does not share an event
    loop with the latencies being measured.
    """
    total = Load(0, 0.0, 0, [])
    deadline = time.monotonic() + max_seconds
    while not stop.is_set() and time.monotonic() < deadline:
        chunk = _run(http_load(port, [request], 200, 1.0, connections))
        total.count += chunk.count
        total.failures += chunk.failures
        total.seconds += chunk.seconds
        total.latencies += chunk.latencies
    results.put(
        (
            total.count,
            total.seconds,
            total.failures,
            percentile(total.latencies or [0.0], 0.5),
            percentile(total.latencies or [0.0], 0.99),
        )
    )


@contextmanager
def _load_in_background(
    port: int, request: bytes, connections: int, report: list[str]
) -> Iterator[None]:
    """Run ``_background_load`` in another process for the duration of the block."""
    context = multiprocessing.get_context("spawn")
    stop = context.Event()
    results = context.Queue()
    process = context.Process(
        target=_background_load,
        args=(port, request, connections, stop, REVOCATION_DEADLINE, results),
    )
    process.start()
    try:
        yield
    finally:
        stop.set()
        try:
            figures = results.get(timeout=30)
        except queue.Empty:
            figures = None
        process.join(timeout=30)
        if process.is_alive():
            process.kill()
    if figures is None:
        raise RuntimeError(
            f"the background load process exited with {process.exitcode} and "
            "sent no figures; its traceback is above"
        )
    count, seconds, failures, p50, p99 = figures
    report.append(
        f"background forward-auth load: {count / seconds:,.0f} requests/s, "
        f"p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, "
        f"{failures} unexpected statuses"
    )


class KeepAliveClient:
    """One HTTP/1.1 connection that returns each response's status."""

    def __init__(self, port: int) -> None:
        self.port = port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def __aenter__(self) -> KeepAliveClient:
        self._reader, self._writer = await asyncio.open_connection(HOST, self.port)
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._writer is not None
        self._writer.close()
        await self._writer.wait_closed()

    async def status(self, request: bytes) -> int:
        assert self._reader is not None and self._writer is not None
        self._writer.write(request)
        head = (await self._reader.readuntil(b"\r\n\r\n")).lower()
        start = head.index(b"content-length:") + len(b"content-length:")
        length = int(head[start : head.index(b"\r\n", start)])
        await self._reader.readexactly(length)
        return int(head[9:12])


async def _delete_to_rejection(
    api: httpx.AsyncClient,
    checking: KeepAliveClient,
    validators: Validators,
    number: int,
) -> float:
    """Return the seconds from a deletion's 204 to the first 401 from another
    process, which caches the token and learns of the deletion only from the
    ``TokenRevoked`` event."""
    created = await api.post(
        f"{validators.tokens_url}/v1/tokens",
        json={"name": f"bench revocation {number}", "expire_in_days": 5},
        headers=_bearer(validators.session),
    )
    created.raise_for_status()
    token = created.json()

    # Each token comes from an address of its own, so that the 401s do not
    # reach the per-address limit on failed validations.
    address = ipaddress.IPv4Address("10.0.0.0") + number
    headers = {**_bearer(token["token"]), "X-Forwarded-For": str(address)}
    forward = http_request(checking.port, "GET", FORWARD, headers)
    for _ in range(2):
        status = await checking.status(forward)
        if status != 200:
            raise RuntimeError(f"a new token got {status} from the caching process")

    deleted = await api.delete(
        f"{validators.tokens_url}/v1/tokens/{token['id']}",
        headers=_bearer(validators.session),
    )
    deleted.raise_for_status()

    started = time.perf_counter()
    while time.perf_counter() - started < REVOCATION_TIMEOUT:
        if await checking.status(forward) == 401:
            return time.perf_counter() - started
    raise TimeoutError(
        f"a deleted token was still valid after {REVOCATION_TIMEOUT:.0f} s"
    )


async def _deletions(validators: Validators, first: int, count: int) -> list[float]:
    delays = []
    async with (
        httpx.AsyncClient(timeout=10.0) as api,
        KeepAliveClient(validators.checking_port) as checking,
    ):
        for number in range(first, first + count):
            delays.append(await _delete_to_rejection(api, checking, validators, number))
    return delays


async def _kafka_hops(bootstrap: str, topic: str, count: int) -> list[float]:
    """Return the seconds from each send to its arrival at a consumer.

    The producer has the outbox relay's settings (idempotent, acks=all), and
    the consumer reads the topic's one partition without a group, as the
    cache's invalidation reader does. One record is in flight at a time.
    """
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", enable_idempotence=True
    )
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False
    )
    await producer.start()
    await consumer.start()
    try:
        partition = TopicPartition(topic, 0)
        consumer.assign([partition])
        await consumer.seek_to_end(partition)
        await consumer.position(partition)

        async def arrival() -> float:
            await consumer.getone()
            return time.perf_counter()

        hops = []
        for number in range(count):
            received = asyncio.create_task(arrival())
            started = time.perf_counter()
            await producer.send_and_wait(topic, str(number).encode(), key=b"bench")
            arrived = await asyncio.wait_for(received, REVOCATION_TIMEOUT)
            hops.append(arrived - started)
        return hops
    finally:
        await consumer.stop()
        await producer.stop()


async def _create_topic(bootstrap: str, topic: str, delete: bool = False) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        if delete:
            await admin.delete_topics([topic])
        else:
            await admin.create_topics([NewTopic(topic, 1, 1)])
    finally:
        await admin.close()


def _revocation(
    bench: BenchStack, validators: Validators, settings: Settings, section: Section
) -> Row:
    """Alternate chunks of deletions and of bare Kafka hops, under load."""
    bootstrap = bench.config.kafka_bootstrap
    topic = f"bench-{bench.database}.hop"
    _run(_create_topic(bootstrap, topic))

    delays: list[float] = []
    hops: list[float] = []
    chunk = max(1, settings.deletions // settings.revocation_chunks)
    request = validators.forward(validators.checking_port)
    deadline = time.monotonic() + REVOCATION_DEADLINE
    try:
        with _load_in_background(
            validators.checking_port,
            request,
            settings.background_connections,
            section.details,
        ):
            while len(delays) < settings.deletions:
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"{len(delays)} of {settings.deletions} deletions took "
                        f"more than {REVOCATION_DEADLINE:.0f} s"
                    )
                count = min(chunk, settings.deletions - len(delays))
                delays += _run(_deletions(validators, len(delays), count))
                hops += _run(_kafka_hops(bootstrap, topic, count))
    finally:
        _run(_create_topic(bootstrap, topic, delete=True))

    section.details += [
        _milliseconds_line("delete to first 401 at the caching process", delays),
        _milliseconds_line("bare aiokafka produce-to-consume hop", hops),
    ]
    return Row(
        "revocation",
        f"p99 ms, delete to first 401, {len(delays)} deletions under load",
        percentile(delays, 0.99) * 1000,
        "p99 ms of a bare aiokafka hop, same broker",
        percentile(hops, 0.99) * 1000,
        3.0,
        at_most=True,
    )


def _milliseconds_line(label: str, seconds: list[float]) -> str:
    return (
        f"{label}: p50 {percentile(seconds, 0.5) * 1000:.1f} ms, "
        f"p99 {percentile(seconds, 0.99) * 1000:.1f} ms, "
        f"max {max(seconds) * 1000:.1f} ms ({len(seconds)} samples)"
    )


# Sign-ins: the forward-auth p99 while the profile service hashes passwords.


async def _sign_in_stream(
    validators: Validators, per_second: float, seconds: float
) -> list[float]:
    """Sign in at a steady rate for ``seconds`` and return each latency.

    At most four sign-ins are in flight, and the stream skips a beat rather
    than pile up more.
    """
    latencies: list[float] = []
    in_flight = asyncio.Semaphore(4)
    body = {"username": validators.username, "password": PASSWORD}
    url = f"{validators.profile_url}/v1/sessions"

    async def sign_in(client: httpx.AsyncClient) -> None:
        async with in_flight:
            started = time.perf_counter()
            response = await client.post(url, json=body)
            response.raise_for_status()
            latencies.append(time.perf_counter() - started)

    async with httpx.AsyncClient(timeout=30.0) as client:
        tasks = []
        start = time.monotonic()
        for beat in range(int(per_second * seconds)):
            await asyncio.sleep(max(0.0, start + beat / per_second - time.monotonic()))
            if not in_flight.locked():
                tasks.append(asyncio.create_task(sign_in(client)))
        await asyncio.gather(*tasks)
    return latencies


async def _load_with_sign_ins(
    validators: Validators, settings: Settings
) -> tuple[Load, list[float]]:
    request = validators.forward(validators.hit_port)
    load, sign_ins = await asyncio.gather(
        http_load(
            validators.hit_port,
            [request],
            200,
            settings.seconds,
            settings.connections,
        ),
        _sign_in_stream(validators, settings.sign_ins_per_second, settings.seconds),
    )
    return load, sign_ins


def _sign_ins(validators: Validators, settings: Settings, section: Section) -> Row:
    """Interleave rounds with and without sign-ins, and compare the pooled p99s."""
    measurements = Measurements()
    sign_ins: list[float] = []
    request = validators.forward(validators.hit_port)
    for _ in range(settings.rounds):
        quiet = http_load(
            validators.hit_port,
            [request],
            200,
            settings.seconds,
            settings.connections,
        )
        measurements.add("quiet", _run(quiet))
        load, latencies = _run(_load_with_sign_ins(validators, settings))
        measurements.add("busy", load)
        sign_ins += latencies
    quiet_p99 = percentile(measurements.latencies("quiet"), 0.99)
    busy_p99 = percentile(measurements.latencies("busy"), 0.99)
    section.details += [
        latency_line(
            "forward auth, cache hit, no sign-ins", measurements.latencies("quiet")
        ),
        latency_line(
            f"forward auth, cache hit, {settings.sign_ins_per_second:g} sign-ins/s",
            measurements.latencies("busy"),
        ),
        f"{latency_line('sign-ins during that load', sign_ins)}; "
        f"{measurements.median_rate('quiet'):,.0f} against "
        f"{measurements.median_rate('busy'):,.0f} forward-auth requests/s",
    ]
    return Row(
        "forward auth during sign-ins",
        f"p99 ms, {settings.sign_ins_per_second:g} sign-ins/s",
        busy_p99 * 1000,
        "p99 ms without sign-ins",
        quiet_p99 * 1000,
        1.5,
        at_most=True,
    )


# Growth: the same figures with ten times the input.


async def _seed_filler(dsn: str, first: int, last: int) -> None:
    """Insert tokens ``first`` to ``last`` that no request presents."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "INSERT INTO tokens.tokens (id, user_id, name, hash, hash_key_id,"
            " created_at, expires_at)"
            " SELECT gen_random_uuid(), gen_random_uuid(), 'filler ' || n,"
            " sha256(('filler ' || n)::bytea), 'k1', now(),"
            " now() + interval '30 days'"
            " FROM generate_series($1::int, $2::int) AS n",
            first,
            last,
        )
        await conn.execute("ANALYZE tokens.tokens")
    finally:
        await conn.close()


async def _seed_valid(dsn: str, validators: Validators, count: int) -> list[str]:
    """Insert ``count`` valid tokens of the bench user and return their values."""
    values = [secret.generate() for _ in range(count)]
    conn = await asyncpg.connect(dsn)
    try:
        await conn.executemany(
            "INSERT INTO tokens.tokens (id, user_id, name, hash, hash_key_id,"
            " created_at, expires_at)"
            " VALUES ($1, $2, $3, $4, 'k1', now(), now() + interval '30 days')",
            [
                (
                    uuid.uuid4(),
                    uuid.UUID(validators.user_id),
                    f"rotation {index}",
                    secret.keyed_hash(validators.hash_key, value),
                )
                for index, value in enumerate(values)
            ],
        )
    finally:
        await conn.close()
    return values


def _growth(bench: BenchStack, validators: Validators, settings: Settings) -> list[str]:
    """Measure the miss and hit rates at two sizes, each beside its ceiling.

    A single rate swings with the load of a shared machine, so each size
    gets rounds that alternate the figure and its ceiling, and reports the
    median rate and the median ratio.
    """
    dsn = bench.superuser_dsn
    miss = [validators.forward(validators.miss_port)]
    healthz = [http_request(validators.hit_port, "GET", "/healthz", {})]
    key = secret.keyed_hash(validators.hash_key, validators.token)

    def rate(port: int, requests: list[bytes]) -> Load:
        load = _run(
            http_load(port, requests, 200, settings.seconds, settings.connections)
        )
        if load.failures:
            raise RuntimeError(f"{load.failures} unexpected statuses in a growth loop")
        return load

    def query() -> Load:
        return _run(
            _query_rate(
                bench.dsns["tokens"], [key], settings.seconds, settings.connections
            )
        )

    def miss_figures() -> tuple[float, float]:
        return _alternate(partial(rate, validators.miss_port, miss), query, 3)

    small, large = settings.growth_tokens, settings.growth_tokens * 10
    _run(_seed_filler(dsn, 1, small))
    miss_small = miss_figures()
    _run(_seed_filler(dsn, small + 1, large))
    miss_large = miss_figures()

    few, many = settings.growth_cached, settings.growth_cached * 10
    values = _run(_seed_valid(dsn, validators, many))
    hits = []
    for count in (few, many):
        requests = [validators.forward(validators.hit_port, v) for v in values[:count]]
        # One pass fills the cache, so that the loop measures hits.
        _run(http_load(validators.hit_port, requests, 200, 30.0, 1, count))
        hits.append(
            _alternate(
                partial(rate, validators.hit_port, requests),
                partial(rate, validators.hit_port, healthz),
                3,
            )
        )
    return [
        f"forward auth, cache off, tokens in the table: {_growth_figure(miss_small)} "
        f"of the asyncpg loop at {small:,} → {_growth_figure(miss_large)} at "
        f"{large:,}",
        f"forward auth, cache hit, distinct tokens in rotation: "
        f"{_growth_figure(hits[0])} of /healthz at {few:,} → "
        f"{_growth_figure(hits[1])} at {many:,}",
    ]


def _alternate(
    figure: Callable[[], Load], ceiling: Callable[[], Load], rounds: int
) -> tuple[float, float]:
    """Return the median rate of ``figure`` and its median ratio to ``ceiling``."""
    rates = []
    ratios = []
    for _ in range(rounds):
        top = figure().per_second
        bottom = ceiling().per_second
        rates.append(top)
        ratios.append(top / bottom if bottom else 0.0)
    return statistics.median(rates), statistics.median(ratios)


def _growth_figure(figures: tuple[float, float]) -> str:
    rate, ratio = figures
    return f"{rate:,.0f} requests/s, {ratio:.2f}"
