"""Measure the notifier: consuming a backlog, sending emails, and two replicas.

Every figure is divided by a ceiling measured in the same run:

- consuming: events per second that the notifier applies from a backlog of
  TokenExpiring and TokenExpired events, divided by a bare aiokafka
  ``getmany`` loop over the same records. The notifier's sender is idle
  during the measurement (its poll interval is an hour and it starts with
  nothing due), so SMTP is not part of the figure;
- sending: emails per second from due email requests to the local SMTP sink,
  divided by a bare aiosmtplib loop that sends the same emails over one
  persistent connection to the same sink;
- scale-out: emails per second with two notifier replicas against a sink that
  takes 20 ms to accept each email, divided by the same with one replica.

Every wait is bounded in time and every loop in count.
"""

from __future__ import annotations

import asyncio
import signal
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.parser import BytesHeaderParser
from email.policy import default as default_policy
from typing import Any

import aiosmtplib
import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiosmtpd.controller import Controller

from bench.common import HOST, BenchStack, Row, Section, percentile
from services.common.cloudevents import encode_headers, encode_value
from services.common.kafka import PARTITIONS
from services.common.runtime import BATCH_MAX_RECORDS as BATCH_EVENTS
from services.contracts import TokenExpired, TokenExpiring, Topics
from services.launcher import ServiceProcess, free_port
from services.notifier.app import INSERT_TOKEN_REQUESTS
from services.notifier.emails import EXPIRED, EXPIRING, compose, token_email_key

BACKLOG = 50_000
# The first batch (1,000 events) is left out of the figure, so the tenth of
# even the quick backlog must hold a few batches.
QUICK_BACKLOG = 30_000
EMAILS = 3_000
QUICK_EMAILS = 300
SCALE_EMAILS = 500
SCALE_ROUNDS = 3
QUICK_SCALE_EMAILS = 100
SEND_ROUNDS = 3
LATENCY_SAMPLES = 20
QUICK_LATENCY_SAMPLES = 5
SINK_DELAY_SECONDS = 0.02
USERS = 3
# The sender's poll interval while sending is measured, and while it should
# stay idle (the consuming figure).
SEND_POLL_SECONDS = "0.05"
IDLE_SEND_POLL_SECONDS = "3600"
DEADLINE_SECONDS = 600.0
POLL_SECONDS = 0.02
STOP_SECONDS = 15.0


@dataclass(frozen=True)
class Rate:
    """A count of items over the seconds they took."""

    count: int
    seconds: float

    @property
    def per_second(self) -> float:
        return self.count / self.seconds if self.seconds else 0.0

    def __add__(self, other: Rate) -> Rate:
        return Rate(self.count + other.count, self.seconds + other.seconds)

    def ratio_to(self, ceiling: Rate) -> float:
        return self.per_second / ceiling.per_second if ceiling.per_second else 0.0


def _deadline_error(what: str) -> TimeoutError:
    return TimeoutError(f"timed out after {DEADLINE_SECONDS:.0f} s waiting for {what}")


# Kafka: the backlog, the bare getmany ceiling and the notifier's progress.


def _token_record(
    kind: type[TokenExpiring] | type[TokenExpired], user_id: uuid.UUID, name: str
) -> tuple[bytes, bytes, list[tuple[str, bytes]], str]:
    """Build one token event as the tokens service's relay would publish it;
    return its key, value, headers and the dedupe key of its email."""
    now = datetime.now(UTC)
    event = kind(
        token_id=uuid.uuid4(),
        user_id=user_id,
        name=name,
        expires_at=now + timedelta(days=7),
    )
    key = event.key()
    headers = encode_headers(uuid.uuid4(), kind.ce_type, "tokens", key, now)
    encoded = [(header, value.encode()) for header, value in headers.items()]
    return (
        key.encode(),
        encode_value(event.model_dump(mode="json")),
        encoded,
        token_email_key(
            EXPIRING if kind is TokenExpiring else EXPIRED,
            event.token_id,
            event.expires_at,
        ),
    )


async def produce_backlog(
    bootstrap: str, topic: str, user_ids: Sequence[uuid.UUID], count: int
) -> None:
    """Publish ``count`` TokenExpiring and TokenExpired events, half of each."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=5, enable_idempotence=True
    )
    await producer.start()
    try:
        pending: list[asyncio.Future[Any]] = []
        for index in range(count):
            kind = TokenExpiring if index % 2 else TokenExpired
            user_id = user_ids[index % len(user_ids)]
            key, value, headers, _ = _token_record(kind, user_id, f"backlog {index}")
            pending.append(await producer.send(topic, value, key=key, headers=headers))
            if len(pending) >= 5_000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


async def _end_offsets(
    consumer: AIOKafkaConsumer, topic: str
) -> dict[TopicPartition, int]:
    partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    offsets: dict[TopicPartition, int] = await consumer.end_offsets(partitions)
    return offsets


async def produce_and_read(
    bootstrap: str, topic: str, user_ids: Sequence[uuid.UUID], count: int
) -> tuple[dict[TopicPartition, int], dict[TopicPartition, int], Rate]:
    """Publish a backlog of ``count`` events and read it with a bare
    ``getmany`` loop; return the backlog's start and end offsets and the
    loop's rate."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, p) for p in range(PARTITIONS)])
        starts = await _end_offsets(consumer, topic)
        await produce_backlog(bootstrap, topic, user_ids, count)
        ends = await _end_offsets(consumer, topic)
        total = sum(ends[p] - starts[p] for p in ends)
        if total != count:
            raise RuntimeError(f"the topic grew by {total} records, not {count}")
        return starts, ends, await _read(consumer, starts, ends)
    finally:
        await consumer.stop()


async def bare_getmany(
    bootstrap: str, starts: dict[TopicPartition, int], ends: dict[TopicPartition, int]
) -> Rate:
    """Read the records between ``starts`` and ``ends`` with a bare
    ``getmany`` loop."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(list(ends))
        return await _read(consumer, starts, ends)
    finally:
        await consumer.stop()


async def _read(
    consumer: AIOKafkaConsumer,
    starts: dict[TopicPartition, int],
    ends: dict[TopicPartition, int],
) -> Rate:
    """Time ``getmany`` from ``starts`` to ``ends`` on an assigned consumer,
    in batches of the notifier's size.

    The clock starts when the first batch has arrived, and that batch is not
    counted, as the notifier's figure leaves out its first batch.
    """
    for partition, offset in starts.items():
        consumer.seek(partition, offset)
    total = sum(ends[p] - starts[p] for p in ends)
    seen = 0
    started: float | None = None
    first = 0
    deadline = time.monotonic() + DEADLINE_SECONDS
    while seen < total:
        if time.monotonic() > deadline:
            raise _deadline_error("the bare getmany loop")
        batches = await consumer.getmany(timeout_ms=1000, max_records=BATCH_EVENTS)
        seen += sum(len(records) for records in batches.values())
        if started is None and seen:
            started = time.perf_counter()
            first = seen
    assert started is not None
    return Rate(seen - first, time.perf_counter() - started)


async def wait_for_group(
    bootstrap: str,
    group: str,
    ends: dict[TopicPartition, int],
    process: ServiceProcess,
    dsn: str,
    count: int,
    since: datetime,
) -> Rate:
    """Poll the group's committed offsets until they reach ``ends``; return
    the rate from the notifier's first email request written after ``since``.

    The start is that row's ``created_at``, the start of the first batch's
    transaction, so the process's start-up and first fetch are left out, and
    so are the first batch's events from the count. The bare getmany loop
    leaves out its first batch the same way. A batch can hold a whole small
    backlog, so the commits alone cannot tell.
    """
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        target = sum(ends.values())
        deadline = time.monotonic() + DEADLINE_SECONDS
        while True:
            if time.monotonic() > deadline:
                raise _deadline_error(f"consumer group {group}")
            if not process.running():
                raise RuntimeError(f"the notifier exited; see {process.log}")
            offsets = await admin.list_consumer_group_offsets(group)
            committed = sum(
                max(offsets[p].offset, 0) if p in offsets else 0 for p in ends
            )
            if committed >= target:
                done = datetime.now(UTC)
                break
            await asyncio.sleep(POLL_SECONDS)
    finally:
        await admin.close()
    conn = await asyncpg.connect(dsn)
    try:
        first = await conn.fetchrow(
            "SELECT created_at, count(*) AS events FROM notifier.email_requests"
            " WHERE created_at >= $1 GROUP BY created_at ORDER BY created_at LIMIT 1",
            since,
        )
    finally:
        await conn.close()
    assert first is not None
    seconds = (done - first["created_at"]).total_seconds()
    return Rate(count - first["events"], seconds)


# SMTP: the ceilings and the delayed sink.


def bench_email(index: int, message_id: str) -> EmailMessage:
    """Compose the email that the notifier sends for an expired token."""
    return compose(
        EXPIRED,
        sender="Personal access tokens <no-reply@example.org>",
        recipient="bench@bench.example.org",
        display_name="Bench",
        time_zone="UTC",
        token_name=f"bench {index}",
        expires_at=datetime.now(UTC),
        message_id=message_id,
    )


async def bare_smtp(port: int, count: int) -> Rate:
    """Compose and send ``count`` emails over one persistent connection."""
    client = aiosmtplib.SMTP(hostname=HOST, port=port)
    await client.connect()
    try:
        started = time.perf_counter()
        for index in range(count):
            message_id = f"<bare.{uuid.uuid4().hex}@bench.invalid>"
            await client.send_message(bench_email(index, message_id))
        return Rate(count, time.perf_counter() - started)
    finally:
        await client.quit()


class DelayedSink:
    """An SMTP server on 127.0.0.1 that takes ``delay`` seconds to accept an
    email and keeps every Message-ID it accepted, in order."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.port = free_port()
        self.message_ids: list[str] = []
        self._lock = threading.Lock()
        self._controller = Controller(self, hostname=HOST, port=self.port)

    def __enter__(self) -> DelayedSink:
        self._controller.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._controller.stop()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        await asyncio.sleep(self.delay)
        content = envelope.original_content or b""
        headers = BytesHeaderParser(policy=default_policy).parsebytes(content)
        with self._lock:
            self.message_ids.append(str(headers.get("Message-ID", "")))
        return "250 Message accepted for delivery"


# Postgres: email requests and the notifier's copy of users.


async def wait_for_users(dsn: str, user_ids: Sequence[uuid.UUID]) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        deadline = time.monotonic() + DEADLINE_SECONDS
        while time.monotonic() < deadline:
            known = await conn.fetchval(
                "SELECT count(*) FROM notifier.users WHERE user_id = any($1)",
                list(user_ids),
            )
            if known == len(user_ids):
                return
            await asyncio.sleep(POLL_SECONDS)
        raise _deadline_error("the notifier to learn the users")
    finally:
        await conn.close()


async def send_requests(
    dsn: str, user_ids: Sequence[uuid.UUID], count: int, tag: str
) -> Rate:
    """Insert ``count`` due email requests; time until none is pending.

    Every request gets its own Message-ID under ``tag``. Raises when any
    request ends in another state than sent.
    """
    conn = await asyncpg.connect(dsn)
    try:
        await conn.executemany(
            "INSERT INTO notifier.email_requests (dedupe_key, kind, user_id,"
            " token_id, token_name, expires_at, message_id)"
            " VALUES ($1, $2, $3, $4, $5, now(), $6)",
            [
                (
                    f"{tag}.{index}",
                    EXPIRED,
                    user_ids[index % len(user_ids)],
                    uuid.uuid4(),
                    tag,
                    f"<{tag}.{index}@bench.invalid>",
                )
                for index in range(count)
            ],
        )
        started = time.perf_counter()
        deadline = time.monotonic() + DEADLINE_SECONDS
        while time.monotonic() < deadline:
            pending = await conn.fetchval(
                "SELECT count(*) FROM notifier.email_requests WHERE status = 'pending'"
            )
            if pending == 0:
                break
            await asyncio.sleep(POLL_SECONDS)
        else:
            raise _deadline_error(f"{count} emails to be sent")
        seconds = time.perf_counter() - started
        sent = await conn.fetchval(
            "SELECT count(*) FROM notifier.email_requests"
            " WHERE token_name = $1 AND status = 'sent'",
            tag,
        )
        if sent != count:
            raise RuntimeError(f"{sent} of {count} emails tagged {tag} were sent")
        return Rate(count, seconds)
    finally:
        await conn.close()


async def event_to_email(
    bootstrap: str, topic: str, dsn: str, user_id: uuid.UUID, samples: int
) -> list[float]:
    """Publish TokenExpired events one at a time; return the seconds from each
    publish until the notifier has marked its email sent."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    conn = await asyncpg.connect(dsn)
    try:
        latencies = []
        for index in range(samples):
            key, value, headers, dedupe_key = _token_record(
                TokenExpired, user_id, f"latency {index}"
            )
            started = time.perf_counter()
            await producer.send_and_wait(topic, value, key=key, headers=headers)
            deadline = time.monotonic() + DEADLINE_SECONDS
            while time.monotonic() < deadline:
                status = await conn.fetchval(
                    "SELECT status FROM notifier.email_requests WHERE dedupe_key = $1",
                    dedupe_key,
                )
                if status == "sent":
                    break
                await asyncio.sleep(0.002)
            else:
                raise _deadline_error("one event's email")
            latencies.append(time.perf_counter() - started)
        return latencies
    finally:
        await conn.close()
        await producer.stop()


async def bare_inserts(dsn: str, user_ids: Sequence[uuid.UUID], count: int) -> Rate:
    """Write the email requests of ``count`` token events with the notifier's
    own statement, ``BATCH_EVENTS`` events a transaction, then delete them:
    the database's share of consuming, without Kafka or decoding."""
    conn = await asyncpg.connect(dsn, server_settings={"search_path": "notifier"})
    try:
        batches = []
        for start in range(0, count, BATCH_EVENTS):
            rows = []
            for index in range(start, min(count, start + BATCH_EVENTS)):
                rows.append(
                    (
                        EXPIRED,
                        user_ids[index % len(user_ids)],
                        uuid.uuid4(),
                        f"bare {index}",
                        datetime.now(UTC),
                        None,
                    )
                )
            batches.append([list(column) for column in zip(*rows, strict=True)])
        started = time.perf_counter()
        for columns in batches:
            async with conn.transaction():
                await conn.execute(INSERT_TOKEN_REQUESTS, *columns, "bench.invalid")
        seconds = time.perf_counter() - started
        await conn.execute("DELETE FROM email_requests WHERE token_name LIKE 'bare %'")
        return Rate(count, seconds)
    finally:
        await conn.close()


async def count_requests(dsn: str, prefix: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        count: int = await conn.fetchval(
            "SELECT count(*) FROM notifier.email_requests WHERE token_name LIKE $1",
            f"{prefix}%",
        )
        return count
    finally:
        await conn.close()


async def discard_backlog_requests(dsn: str) -> None:
    """Delete the email requests of the backlog, so that no later replica
    sends them."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "DELETE FROM notifier.email_requests WHERE token_name LIKE 'backlog %'"
        )
    finally:
        await conn.close()


# The phases of the benchmark.


def stop(replica: ServiceProcess) -> None:
    replica.signal(signal.SIGTERM)
    replica.wait_stopped(STOP_SECONDS)


class NotifierBench:
    """The benchmark's state: one stack, its users and what it measured."""

    def __init__(self, bench: BenchStack, quick: bool) -> None:
        self.bench = bench
        self.quick = quick
        self.topics = Topics(f"bench-{bench.database}.")
        self.bootstrap = bench.config.kafka_bootstrap
        self.dsn = bench.superuser_dsn
        self.section = Section()
        admin = bench.admin_session()
        users = bench.create_users(admin, USERS)
        self.user_ids = [uuid.UUID(user_id) for user_id, _ in users]
        asyncio.run(wait_for_users(self.dsn, self.user_ids))

    @property
    def notifier(self) -> ServiceProcess:
        return self.bench.stack.replicas["notifier"][0]

    def sending(self) -> None:
        large = QUICK_EMAILS if self.quick else EMAILS
        rates: dict[int, tuple[Rate, Rate]] = {}
        for count in (large // 10, large):
            # Interleaved rounds, so that both sides share the load of the
            # shared machine as it changes.
            figure, ceiling = Rate(0, 0.0), Rate(0, 0.0)
            for _ in range(SEND_ROUNDS):
                share = count // SEND_ROUNDS
                port = self.bench.config.smtp_port
                ceiling += asyncio.run(bare_smtp(port, share))
                tag = f"send-{uuid.uuid4().hex[:8]}"
                figure += asyncio.run(
                    send_requests(self.dsn, self.user_ids, share, tag)
                )
            rates[count] = (figure, ceiling)
        figure, ceiling = rates[large]
        self.section.rows.append(
            Row(
                "notifier, sending",
                f"emails per second to the local SMTP sink ({large:,} emails)",
                figure.per_second,
                "bare aiosmtplib loop on one connection",
                ceiling.per_second,
                0.8,
            )
        )
        small_figure, small_ceiling = rates[large // 10]
        self.section.growth.append(
            f"notifier sending: {small_figure.per_second:,.0f} emails/s at "
            f"{large // 10:,} → {figure.per_second:,.0f} at {large:,} (ratio to "
            f"the bare loop {small_figure.ratio_to(small_ceiling):.2f}"
            f" → {figure.ratio_to(ceiling):.2f})"
        )
        samples = QUICK_LATENCY_SAMPLES if self.quick else LATENCY_SAMPLES
        latencies = asyncio.run(
            event_to_email(
                self.bootstrap,
                self.topics.tokens_events,
                self.dsn,
                self.user_ids[0],
                samples,
            )
        )
        self.section.details.append(
            f"notifier, one TokenExpired event to its email accepted by the sink: "
            f"p50 {percentile(latencies, 0.5) * 1000:.1f} ms, "
            f"p99 {percentile(latencies, 0.99) * 1000:.1f} ms ({samples} events, "
            f"send poll {SEND_POLL_SECONDS} s)"
        )

    def consume(self, count: int) -> tuple[Rate, Rate]:
        """Publish a backlog while the notifier is stopped, then time the
        notifier over it, between two bare loops over the same records."""
        topic = self.topics.tokens_events
        stop(self.notifier)
        starts, ends, before_ceiling = asyncio.run(
            produce_and_read(self.bootstrap, topic, self.user_ids, count)
        )
        before = asyncio.run(count_requests(self.dsn, "backlog "))
        self.notifier.env["PAT_SEND_POLL_SECONDS"] = IDLE_SEND_POLL_SECONDS
        since = datetime.now(UTC)
        self.notifier.start()
        group = f"{self.topics.prefix}notifier.tokens.events"
        figure = asyncio.run(
            wait_for_group(
                self.bootstrap, group, ends, self.notifier, self.dsn, count, since
            )
        )
        self.notifier.wait_ready()
        applied = asyncio.run(count_requests(self.dsn, "backlog ")) - before
        if applied != count:
            raise RuntimeError(f"the notifier stored {applied} of {count} requests")
        # Read again after the notifier, so that both sides of the ratio
        # share the machine's load of that minute.
        after_ceiling = asyncio.run(bare_getmany(self.bootstrap, starts, ends))
        return figure, before_ceiling + after_ceiling

    def consuming(self) -> None:
        large = QUICK_BACKLOG if self.quick else BACKLOG
        small_figure, small_ceiling = self.consume(large // 10)
        figure, ceiling = self.consume(large)
        database = asyncio.run(bare_inserts(self.dsn, self.user_ids, large))
        self.section.memory.update(self.bench.peak_memory())
        asyncio.run(discard_backlog_requests(self.dsn))
        self.section.rows.append(
            Row(
                "notifier, consuming",
                f"events per second from a {large:,}-event backlog, SMTP idle",
                figure.per_second,
                "bare aiokafka getmany over the same records",
                ceiling.per_second,
                0.6,
            )
        )
        self.section.details.append(
            f"notifier consuming: the same email requests written by a bare"
            f" asyncpg loop, {BATCH_EVENTS:,} events a transaction: "
            f"{database.per_second:,.0f} events/s, against the notifier's "
            f"{figure.per_second:,.0f}"
        )
        self.section.growth.append(
            f"notifier consuming: {small_figure.per_second:,.0f} events/s at "
            f"{large // 10:,} → {figure.per_second:,.0f} at {large:,} (ratio to "
            f"getmany {small_figure.ratio_to(small_ceiling):.2f}"
            f" → {figure.ratio_to(ceiling):.2f})"
        )

    def scale_out(self) -> None:
        count = QUICK_SCALE_EMAILS if self.quick else SCALE_EMAILS
        stop(self.notifier)
        with DelayedSink(SINK_DELAY_SECONDS) as sink:
            env = {
                "PAT_SMTP_PORT": str(sink.port),
                "PAT_SEND_POLL_SECONDS": SEND_POLL_SECONDS,
            }
            self.bench.stack.add_replica("notifier", env, label="notifier-first")
            small_single, small_pair = self._alternate(env, count // 10)
            single, pair = self._alternate(env, count)
            sent = 2 * (small_single.count + single.count)
            received = list(sink.message_ids)
        duplicates = len(received) - len(set(received))
        if len(received) != sent or duplicates:
            raise RuntimeError(
                f"the delayed sink received {len(received)} emails for "
                f"{sent} requests, {duplicates} of them duplicates"
            )
        self.section.rows.append(
            Row(
                "scale-out",
                f"emails per second, 2 notifier replicas, sink taking "
                f"{SINK_DELAY_SECONDS * 1000:.0f} ms per email",
                pair.per_second,
                "the same with 1 replica",
                single.per_second,
                1.8,
            )
        )
        self.section.details.append(
            f"scale-out: {sent:,} emails at the delayed sink, 0 duplicate "
            f"Message-IDs; 1 replica {single.per_second:.1f}/s, "
            f"2 replicas {pair.per_second:.1f}/s"
        )
        self.section.growth.append(
            f"scale-out: 2 replicas / 1 replica {small_pair.ratio_to(small_single):.2f}"
            f" at {small_single.count:,} emails each → {pair.ratio_to(single):.2f} at "
            f"{single.count:,}"
        )

    def _alternate(self, env: dict[str, str], count: int) -> tuple[Rate, Rate]:
        """Send about ``count`` emails with one replica and as many with two.

        Rounds alternate the two, so that both share the machine's load as it
        changes. Returns the rates of one replica and of two.
        """
        stack = self.bench.stack
        single, pair = Rate(0, 0.0), Rate(0, 0.0)
        share = max(1, count // SCALE_ROUNDS)
        for _ in range(SCALE_ROUNDS):
            tag = f"one-{uuid.uuid4().hex[:6]}"
            single += asyncio.run(send_requests(self.dsn, self.user_ids, share, tag))
            stack.add_replica("notifier", env, label="notifier-second")
            tag = f"two-{uuid.uuid4().hex[:6]}"
            pair += asyncio.run(send_requests(self.dsn, self.user_ids, share, tag))
            stack.stop_process("notifier-second")
        return single, pair


def run(quick: bool) -> Section:
    """Run the three notifier figures on one stack and report them."""
    with BenchStack({"PAT_SEND_POLL_SECONDS": SEND_POLL_SECONDS}) as bench:
        measure = NotifierBench(bench, quick)
        measure.sending()
        measure.consuming()
        measure.scale_out()
        for label, kib in bench.peak_memory().items():
            measure.section.memory[label] = max(
                kib, measure.section.memory.get(label, 0)
            )
        return measure.section
