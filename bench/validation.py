"""Measure token validation: cache hits, cache misses, revocation, sign-ins.

``python -m bench --only validation`` (``make bench-validate``) runs it. The
four services run with a fresh database, plus two more tokens processes: one
with the validation cache off, and one with the cache on that only events
can empty. Every figure is divided by a ceiling measured in the same run:

- forward auth on a cache hit, in requests per second, against the same
  process's bare ``/healthz``;
- forward auth with the cache off against a bare asyncpg loop of the same
  statement (``LOOKUP_SQL``) with the same pool size and callers;
- the p99 time from sending a deletion to the first 401 at the caching
  process, under forward-auth load, against the p99 of a bare aiokafka
  produce-to-consume hop on the same broker (``bench/revocation.py``);
- the forward-auth p99 while sign-ins hash passwords in the profile service,
  against the same p99 without sign-ins.

Each is measured again with a tenfold input for the growth lines: tokens in
the table for the cache miss and revocation, distinct tokens for the cache
hit, and users in the profile service for sign-ins.

When the machine has two cores or more, the tokens processes run on one core
and the load generators on another, so that they do not take CPU time from
each other. Kafka, Postgres and the other services may run on either. The
load generators and the ceilings' loops run on uvloop, as the services do.
Every loop is bounded in count and in time, and every request goes to a
server that this module started on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import statistics
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial

import asyncpg
import httpx

from bench import revocation
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
    run_on_uvloop,
)
from services.client import bearer, wait_for_validation_cache
from services.tokens import secret
from services.tokens.config import TokensConfig
from services.tokens.service import LOOKUP_SQL

FORWARD = "/v1/auth/forward"
# The size of the tokens service's pool (services.common.db.create_pool).
POOL_SIZE = 10


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
    # Tokens in the table for the cache-miss and revocation growth lines,
    # then ten times as many.
    growth_tokens: int
    # Distinct cached tokens for the cache-hit growth line, then ten times.
    growth_cached: int
    # Deletions (and as many Kafka hops) at each size of the table.
    growth_deletions: int
    # Users in the profile service for the sign-ins growth line, then ten
    # times as many.
    growth_users: int

    @classmethod
    def for_run(cls, quick: bool) -> Settings:
        if quick:
            return cls(0.5, 2, 16, 40, 4, 4, 2.0, 1_000, 100, 20, 10)
        return cls(2.0, 5, 16, 500, 10, 4, 2.0, 10_000, 100, 200, 100)

    @property
    def revocation_chunk(self) -> int:
        return max(1, self.deletions // self.revocation_chunks)


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

    def forward(
        self,
        port: int,
        token: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> bytes:
        """Encode a forward-auth request that presents ``token`` (by default
        the bench user's) with ``headers`` added."""
        fields = {**bearer(token or self.token), **(headers or {})}
        return http_request(port, "GET", FORWARD, fields)


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
            revocations = revocation.measure(
                bench,
                validators,
                settings.deletions,
                settings.revocation_chunk,
                settings.background_connections,
            )
            section.rows.append(revocation.row(revocations))
            section.details += revocation.details(revocations)
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
        return run_on_uvloop(
            http_load(port, requests, 200, settings.seconds, settings.connections)
        )

    load(validators.hit_port, hit)  # warm-up, not reported
    load(validators.miss_port, miss)  # warm-up, not reported
    for _ in range(settings.rounds):
        measurements.add("healthz", load(validators.hit_port, healthz))
        measurements.add("hit", load(validators.hit_port, hit))
        measurements.add("miss", load(validators.miss_port, miss))
        query = _query_rate(dsn, [key], settings.seconds, settings.connections)
        measurements.add("asyncpg", run_on_uvloop(query))


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


# Sign-ins: the forward-auth p99 while the profile service hashes passwords.


async def _sign_in_stream(
    profile_url: str, usernames: Iterator[str], per_second: float, seconds: float
) -> list[float]:
    """Sign in at a steady rate for ``seconds`` and return each latency.

    Each sign-in takes the next name of ``usernames``, whose users all have
    the password ``PASSWORD``. At most four sign-ins are in flight, and the
    stream skips a beat rather than pile up more.
    """
    latencies: list[float] = []
    in_flight = asyncio.Semaphore(4)
    url = f"{profile_url}/v1/sessions"

    async def sign_in(client: httpx.AsyncClient, username: str) -> None:
        async with in_flight:
            started = time.perf_counter()
            body = {"username": username, "password": PASSWORD}
            response = await client.post(url, json=body)
            response.raise_for_status()
            latencies.append(time.perf_counter() - started)

    async with httpx.AsyncClient(timeout=30.0) as client:
        tasks = []
        start = time.monotonic()
        for beat in range(int(per_second * seconds)):
            await asyncio.sleep(max(0.0, start + beat / per_second - time.monotonic()))
            if not in_flight.locked():
                task = sign_in(client, next(usernames))
                tasks.append(asyncio.create_task(task))
        await asyncio.gather(*tasks)
    return latencies


async def _load_with_sign_ins(
    validators: Validators, settings: Settings, usernames: Iterator[str]
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
        _sign_in_stream(
            validators.profile_url,
            usernames,
            settings.sign_ins_per_second,
            settings.seconds,
        ),
    )
    return load, sign_ins


def _measure_sign_ins(
    validators: Validators, settings: Settings, usernames: list[str]
) -> tuple[Measurements, list[float]]:
    """Interleave rounds of forward-auth load without sign-ins ("quiet") and
    with sign-ins of ``usernames`` in turn ("busy").

    Returns the loads and each sign-in's latency.
    """
    measurements = Measurements()
    sign_ins: list[float] = []
    names = itertools.cycle(usernames)
    request = validators.forward(validators.hit_port)
    for _ in range(settings.rounds):
        quiet = http_load(
            validators.hit_port,
            [request],
            200,
            settings.seconds,
            settings.connections,
        )
        measurements.add("quiet", run_on_uvloop(quiet))
        busy = _load_with_sign_ins(validators, settings, names)
        load, latencies = run_on_uvloop(busy)
        measurements.add("busy", load)
        sign_ins += latencies
    return measurements, sign_ins


def _sign_ins(validators: Validators, settings: Settings, section: Section) -> Row:
    """Interleave rounds with and without sign-ins, and compare the pooled p99s."""
    measurements, sign_ins = _measure_sign_ins(
        validators, settings, [validators.username]
    )
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


async def _seed_users(dsn: str, validators: Validators, count: int) -> list[str]:
    """Insert users into the profile service's table until it contains
    ``count``, and return the new users' names.

    Creating a user through the API hashes its password with Argon2id, about
    0.2 s of CPU time each, and sends a ``UserCreated`` event through the
    outbox. Neither is what the sign-ins growth line measures, so the users
    are inserted straight into ``profile.users``. Each gets the bench user's
    stored hash, which the profile service computed from ``PASSWORD`` with
    its own parameters, so that signing in as any of them verifies a real
    hash of the password sent, at the same cost. The other services do not
    learn of these users, and sign-ins do not ask them.
    """
    conn = await asyncpg.connect(dsn)
    try:
        password_hash: str = await conn.fetchval(
            "SELECT password_hash FROM profile.users WHERE id = $1",
            uuid.UUID(validators.user_id),
        )
        if not password_hash.startswith("$argon2id$"):
            raise RuntimeError("the bench user's password hash is not Argon2id")
        present: int = await conn.fetchval("SELECT count(*) FROM profile.users")
        names = [f"seeded{n}" for n in range(present, count)]
        await conn.execute(
            "INSERT INTO profile.users (id, username, display_name, email,"
            " time_zone, role, password_hash, created_at, updated_at)"
            " SELECT gen_random_uuid(), name, 'Seeded', name || '@bench.example.org',"
            " 'UTC', 'user', $2, now(), now() FROM unnest($1::text[]) AS name",
            names,
            password_hash,
        )
        await conn.execute("ANALYZE profile.users")
    finally:
        await conn.close()
    return names


def _growth(bench: BenchStack, validators: Validators, settings: Settings) -> list[str]:
    """Measure each figure at two sizes of its input, each beside its ceiling."""
    miss, revoked = _table_growth(bench, validators, settings)
    # The hit growth seeds ten times the bench user's quota of active tokens,
    # after which the API refuses to create the tokens that revocation
    # deletes, so it comes after the revocation growth.
    hit = _hit_growth(bench, validators, settings)
    sign_ins = _sign_in_growth(bench, validators, settings)
    return [miss, hit, revoked, sign_ins]


def _rate(port: int, requests: list[bytes], settings: Settings) -> Load:
    load = run_on_uvloop(
        http_load(port, requests, 200, settings.seconds, settings.connections)
    )
    if load.failures:
        raise RuntimeError(f"{load.failures} unexpected statuses in a growth loop")
    return load


def _table_growth(
    bench: BenchStack, validators: Validators, settings: Settings
) -> tuple[str, str]:
    """Measure the miss rate and revocation with N and 10N tokens in the table.

    A single rate swings with the load of a shared machine, so the miss rate
    gets rounds that alternate it with its ceiling, and the line gives the
    median rate and the median ratio. Revocation alternates chunks of
    deletions and of bare Kafka hops, as its row does, with fewer deletions.
    """
    miss = [validators.forward(validators.miss_port)]
    key = secret.keyed_hash(validators.hash_key, validators.token)

    def query() -> Load:
        return run_on_uvloop(
            _query_rate(
                bench.dsns["tokens"], [key], settings.seconds, settings.connections
            )
        )

    small, large = settings.growth_tokens, settings.growth_tokens * 10
    misses: list[tuple[float, float]] = []
    revocations: list[revocation.Revocations] = []
    # The revocation row's deletions took the numbers below this one.
    first = settings.deletions
    for low, high in ((1, small), (small + 1, large)):
        run_on_uvloop(_seed_filler(bench.superuser_dsn, low, high))
        rate = partial(_rate, validators.miss_port, miss, settings)
        misses.append(_alternate(rate, query, 3))
        revocations.append(
            revocation.measure(
                bench,
                validators,
                settings.growth_deletions,
                settings.revocation_chunk,
                settings.background_connections,
                first,
            )
        )
        first += settings.growth_deletions
    before, after = (
        f"p99 {r.p99 * 1000:.1f} ms, {r.p99 / r.hop_p99:.2f}" for r in revocations
    )
    return (
        f"forward auth, cache off, tokens in the table: {_growth_figure(misses[0])} "
        f"of the asyncpg loop at {small:,} → {_growth_figure(misses[1])} at "
        f"{large:,}",
        f"revocation, DELETE sent to first 401, tokens in the table: {before} of "
        f"the bare hop's p99 at {small:,} → {after} at {large:,} "
        f"({settings.growth_deletions} deletions and hops at each)",
    )


def _hit_growth(bench: BenchStack, validators: Validators, settings: Settings) -> str:
    """Measure the hit rate with N and 10N distinct valid tokens in rotation."""
    healthz = [http_request(validators.hit_port, "GET", "/healthz", {})]
    few, many = settings.growth_cached, settings.growth_cached * 10
    values = run_on_uvloop(_seed_valid(bench.superuser_dsn, validators, many))
    hits = []
    for count in (few, many):
        requests = [validators.forward(validators.hit_port, v) for v in values[:count]]
        # One pass fills the cache, so that the loop measures hits.
        run_on_uvloop(http_load(validators.hit_port, requests, 200, 30.0, 1, count))
        hits.append(
            _alternate(
                partial(_rate, validators.hit_port, requests, settings),
                partial(_rate, validators.hit_port, healthz, settings),
                3,
            )
        )
    return (
        f"forward auth, cache hit, distinct tokens in rotation: "
        f"{_growth_figure(hits[0])} of /healthz at {few:,} → "
        f"{_growth_figure(hits[1])} at {many:,}"
    )


def _sign_in_growth(
    bench: BenchStack, validators: Validators, settings: Settings
) -> str:
    """Measure the forward-auth p99 during sign-ins with U and 10U users in the
    profile service, the sign-ins spread over all users with the bench
    password, as the sign-ins row measures it."""
    few, many = settings.growth_users, settings.growth_users * 10
    names = [validators.username]
    figures = []
    sign_in_p50s = []
    for count in (few, many):
        names += run_on_uvloop(_seed_users(bench.superuser_dsn, validators, count))
        # A fixed order that visits the table's users in no particular order.
        order = random.Random(count).sample(names, len(names))
        measurements, sign_ins = _measure_sign_ins(validators, settings, order)
        busy = percentile(measurements.latencies("busy"), 0.99)
        quiet = percentile(measurements.latencies("quiet"), 0.99)
        figures.append(f"p99 {busy * 1000:.1f} ms, {busy / quiet:.2f}")
        sign_in_p50s.append(f"{percentile(sign_ins, 0.5) * 1000:.0f}")
    return (
        f"forward auth during {settings.sign_ins_per_second:g} sign-ins/s, users "
        f"in the profile service: {figures[0]} of the p99 without sign-ins at "
        f"{few:,} → {figures[1]} at {many:,} (sign-ins themselves: p50 "
        f"{sign_in_p50s[0]} → {sign_in_p50s[1]} ms)"
    )


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
