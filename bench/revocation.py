"""Measure revocation: the time from a token's deletion to the first 401 at
another tokens process that caches it, under forward-auth load, against a
bare aiokafka produce-to-consume hop on the same broker.

Part of the validation benchmark (``bench/validation.py``), which starts the
processes and passes them in. Each deletion is timed from the moment its
DELETE is sent, and also from its 204 response, the figure that earlier
versions reported. Every loop is bounded in count and in time, and every
request goes to a server that the benchmark started on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import ipaddress
import multiprocessing
import queue
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from multiprocessing.synchronize import Event as EventType
from typing import TYPE_CHECKING, Any

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bench.common import (
    HOST,
    BenchStack,
    Load,
    Row,
    http_load,
    percentile,
    run_on_uvloop,
)
from services.client import bearer

if TYPE_CHECKING:
    from bench.validation import Validators

# Seconds that each attempt to observe a revocation may take.
REVOCATION_TIMEOUT = 10.0
# Seconds that one revocation measurement (one call of ``measure``) may take.
REVOCATION_DEADLINE = 600.0


@dataclass
class Revocations:
    """Seconds from each deletion to the first 401, and of each bare hop."""

    # From the moment the DELETE was sent: the figure of the row.
    from_send: list[float] = field(default_factory=list)
    # From the DELETE's 204, as earlier versions of the benchmark timed it.
    from_response: list[float] = field(default_factory=list)
    hops: list[float] = field(default_factory=list)
    # The background load's figures, one line.
    background: str = ""

    @property
    def count(self) -> int:
        return len(self.from_send)

    @property
    def p99(self) -> float:
        return percentile(self.from_send, 0.99)

    @property
    def hop_p99(self) -> float:
        return percentile(self.hops, 0.99)


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
        chunk = run_on_uvloop(http_load(port, [request], 200, 1.0, connections))
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
) -> tuple[float, float]:
    """Delete a token and wait for the first 401 from another process, which
    caches the token and learns of the deletion only from the
    ``TokenRevoked`` event.

    Returns the seconds to that 401 from the moment the DELETE was sent, and
    from its 204.
    """
    created = await api.post(
        f"{validators.tokens_url}/v1/tokens",
        json={"name": f"bench revocation {number}", "expire_in_days": 5},
        headers=bearer(validators.session),
    )
    created.raise_for_status()
    token = created.json()

    # Each token comes from an address of its own, so that the 401s do not
    # reach the per-address limit on failed validations.
    address = ipaddress.IPv4Address("10.0.0.0") + number
    forward = validators.forward(
        checking.port, token["token"], {"X-Forwarded-For": str(address)}
    )
    for _ in range(2):
        status = await checking.status(forward)
        if status != 200:
            raise RuntimeError(f"a new token got {status} from the caching process")

    sent = time.perf_counter()
    deleted = await api.delete(
        f"{validators.tokens_url}/v1/tokens/{token['id']}",
        headers=bearer(validators.session),
    )
    answered = time.perf_counter()
    deleted.raise_for_status()

    while time.perf_counter() - answered < REVOCATION_TIMEOUT:
        if await checking.status(forward) == 401:
            refused = time.perf_counter()
            return refused - sent, refused - answered
    raise TimeoutError(
        f"a deleted token was still valid after {REVOCATION_TIMEOUT:.0f} s"
    )


async def _deletions(
    validators: Validators, first: int, count: int, revocations: Revocations
) -> None:
    async with (
        httpx.AsyncClient(timeout=10.0) as api,
        KeepAliveClient(validators.checking_port) as checking,
    ):
        for number in range(first, first + count):
            from_send, from_response = await _delete_to_rejection(
                api, checking, validators, number
            )
            revocations.from_send.append(from_send)
            revocations.from_response.append(from_response)


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


def measure(
    bench: BenchStack,
    validators: Validators,
    deletions: int,
    chunk: int,
    connections: int,
    first: int = 0,
) -> Revocations:
    """Alternate chunks of ``chunk`` deletions and as many bare Kafka hops,
    ``deletions`` of each in all, under forward-auth load with
    ``connections`` connections to the caching process.

    The tokens are numbered from ``first``, and each number gives the token
    a name and a client address of its own, so calls that follow one
    another must not overlap their numbers.
    """
    bootstrap = bench.config.kafka_bootstrap
    # A topic of its own for each call: a deleted topic's name may not be
    # free again at once.
    topic = f"bench-{bench.database}.hop-{first}"
    run_on_uvloop(_create_topic(bootstrap, topic))

    revocations = Revocations()
    report: list[str] = []
    request = validators.forward(validators.checking_port)
    deadline = time.monotonic() + REVOCATION_DEADLINE
    try:
        with _load_in_background(
            validators.checking_port, request, connections, report
        ):
            while revocations.count < deletions:
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"{revocations.count} of {deletions} deletions took "
                        f"more than {REVOCATION_DEADLINE:.0f} s"
                    )
                count = min(chunk, deletions - revocations.count)
                number = first + revocations.count
                run_on_uvloop(_deletions(validators, number, count, revocations))
                revocations.hops += run_on_uvloop(_kafka_hops(bootstrap, topic, count))
    finally:
        run_on_uvloop(_create_topic(bootstrap, topic, delete=True))
    [revocations.background] = report
    return revocations


def row(revocations: Revocations) -> Row:
    return Row(
        "revocation",
        f"p99 ms, DELETE sent to first 401, {revocations.count} deletions under load",
        revocations.p99 * 1000,
        "p99 ms of a bare aiokafka hop, same broker",
        revocations.hop_p99 * 1000,
        3.0,
        at_most=True,
    )


def details(revocations: Revocations) -> list[str]:
    requests = [
        send - response
        for send, response in zip(
            revocations.from_send, revocations.from_response, strict=True
        )
    ]
    return [
        revocations.background,
        _milliseconds_line(
            "DELETE sent to first 401 at the caching process", revocations.from_send
        ),
        _milliseconds_line(
            "DELETE's 204 to first 401 (the figure before, same deletions)",
            revocations.from_response,
        ),
        _milliseconds_line("DELETE sent to its 204", requests),
        _milliseconds_line("bare aiokafka produce-to-consume hop", revocations.hops),
    ]


def _milliseconds_line(label: str, seconds: list[float]) -> str:
    return (
        f"{label}: p50 {percentile(seconds, 0.5) * 1000:.1f} ms, "
        f"p99 {percentile(seconds, 0.99) * 1000:.1f} ms, "
        f"max {max(seconds) * 1000:.1f} ms ({len(seconds)} samples)"
    )
