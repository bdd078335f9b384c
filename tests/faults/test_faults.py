"""Break the running system on purpose and prove nothing is lost or doubled.

Each fault runs while a workload creates and deletes tokens through the real
services. Afterwards the suite moves the tokens clock so that every live
token gets its one-week warning and its expiry email, then checks:

- every committed token change has exactly one event of each kind (counted
  by distinct ``ce_id``; a record republished after a crash keeps its id);
- every expected email arrived exactly once (counted by Message-ID);
- no record was dead-lettered;
- every service is ready again with no manual step.

Run with ``make test-faults``; it prints a table and writes it to
``.run/fault-report.md``.
"""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import httpx
import pytest

from infra import cli as infra_cli
from infra import mailbox
from infra.config import InfraConfig
from services.client import Api
from services.launcher import SERVICES, Stack, free_port, start_stack
from services.notifier.emails import EXPIRED, EXPIRING, token_email_key
from services.provision import drop, provision
from tests.conftest import ADMIN_PASSWORD, EventLog, start_collector
from tests.faults.workload import Owner, Workload

pytestmark = pytest.mark.faults

DAY = 86400
LOAD_SECONDS = 3.0
SETTLE_TIMEOUT_SECONDS = 120.0
SMTP_OUTAGE_SECONDS = 30.0
# uvicorn's graceful shutdown (10 s) plus the background tasks' (10 s).
SHUTDOWN_BOUND_SECONDS = 25.0


@dataclass
class Row:
    fault: str
    operations: int = 0
    events_expected: int = 0
    events_delivered: int = 0
    duplicated_effects: int = 0
    emails_expected: int = 0
    emails_delivered: int = 0
    emails_duplicated: int = 0
    recovery_seconds: float = 0.0


@dataclass
class FaultRun:
    infra: InfraConfig
    database: str
    topic_prefix: str
    stack: Stack
    api: Api
    admin: str
    workload: Workload
    events: EventLog
    dead_letters: EventLog
    probe_owner: Owner
    rows: list[Row] = field(default_factory=list)
    # Set by a fault whose recovery ends when the last email has arrived.
    recovery_started: float | None = None

    # Queries of the tokens database, the record of committed changes.

    def query(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        async def fetch() -> list[asyncpg.Record]:
            conn = await asyncpg.connect(self.infra.pg_dsn_for(self.database))
            try:
                return await conn.fetch(sql, *args)
            finally:
                await conn.close()

        return asyncio.run(fetch())

    def token_ids(self) -> set[str]:
        return {str(r["id"]) for r in self.query("SELECT id FROM tokens.tokens")}

    # Driving the system.

    def load(self, seconds: float = LOAD_SECONDS) -> None:
        operations = self.workload.operations
        self.workload.start()
        time.sleep(seconds)
        self.workload.stop()
        self.rows[-1].operations += self.workload.operations - operations

    def probe(self, started: float) -> float:
        """Create a token and wait for its event; return seconds since ``started``."""
        deadline = time.monotonic() + SETTLE_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            try:
                token = self.api.create_token(self.probe_owner.session, "probe", 9)
                break
            except Exception:
                time.sleep(0.5)
        else:
            raise TimeoutError("no token could be created after the fault")
        while time.monotonic() < deadline:
            if self.events_for(token["id"], "token.created.v1"):
                return time.monotonic() - started
            time.sleep(0.2)
        raise TimeoutError("the probe token's event never arrived")

    def events_for(self, token_id: str, suffix: str) -> set[str]:
        return {
            record["headers"]["ce_id"]
            for record in self.events.of_type(suffix)
            if record["value"] and record["value"].get("token_id") == token_id
        }

    def advance(self, seconds: int) -> None:
        deadline = time.monotonic() + SETTLE_TIMEOUT_SECONDS
        while True:
            try:
                self.api.advance_clock(seconds)
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def wait_ready(self) -> None:
        deadline = time.monotonic() + SETTLE_TIMEOUT_SECONDS
        for replicas in self.stack.replicas.values():
            for replica in replicas:
                if not replica.running():
                    continue
                while True:
                    try:
                        if httpx.get(f"{replica.url}/readyz").status_code == 200:
                            break
                    except httpx.HTTPError:
                        pass
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"{replica.name} is not ready again")
                    time.sleep(0.5)


def expected_emails(run: FaultRun, token_ids: set[str]) -> set[str]:
    rows = run.query(
        "SELECT id, expires_at FROM tokens.tokens"
        " WHERE id = ANY($1::uuid[]) AND revoked_at IS NULL",
        list(token_ids),
    )
    domain = "notifier.pat.invalid"
    return {
        f"<{token_email_key(kind, row['id'], row['expires_at'])}@{domain}>"
        for row in rows
        for kind in (EXPIRING, EXPIRED)
    }


def wait_for_emails(message_ids: set[str]) -> Counter[str]:
    deadline = time.monotonic() + SETTLE_TIMEOUT_SECONDS
    while True:
        counts = Counter(
            m["message_id"]
            for m in mailbox.read_messages()
            if m["message_id"] in message_ids
        )
        if set(counts) >= message_ids or time.monotonic() > deadline:
            time.sleep(2)  # let a duplicate that is on its way arrive
            return Counter(
                m["message_id"]
                for m in mailbox.read_messages()
                if m["message_id"] in message_ids
            )
        time.sleep(0.5)


def check_phase(run: FaultRun, row: Row, token_ids: set[str]) -> None:
    """Expire the phase's tokens, then count events and emails."""
    run.advance(3 * DAY)
    run.advance(7 * DAY)
    expected_message_ids = expected_emails(run, token_ids)
    email_counts = wait_for_emails(expected_message_ids)
    if run.recovery_started is not None:
        row.recovery_seconds = time.monotonic() - run.recovery_started
        run.recovery_started = None

    revoked = {
        str(r["id"])
        for r in run.query(
            "SELECT id FROM tokens.tokens WHERE id = ANY($1::uuid[])"
            " AND revoked_at IS NOT NULL",
            list(token_ids),
        )
    }
    expected: list[tuple[str, str]] = []
    for token_id in token_ids:
        expected.append((token_id, "token.created.v1"))
        if token_id in revoked:
            expected.append((token_id, "token.revoked.v1"))
        else:
            expected.append((token_id, "token.expiring.v1"))
            expected.append((token_id, "token.expired.v1"))
    deadline = time.monotonic() + SETTLE_TIMEOUT_SECONDS
    while True:
        found = {pair: run.events_for(*pair) for pair in expected}
        if all(found.values()) or time.monotonic() > deadline:
            break
        time.sleep(0.5)

    row.events_expected = len(expected)
    row.events_delivered = sum(1 for ids in found.values() if ids)
    row.duplicated_effects = sum(len(ids) - 1 for ids in found.values() if ids)
    row.emails_expected = len(expected_message_ids)
    row.emails_delivered = len(email_counts)
    row.emails_duplicated = sum(count - 1 for count in email_counts.values())
    run.wait_ready()


def run_fault(run: FaultRun, name: str, fault: Callable[[], float]) -> Row:
    row = Row(name)
    run.rows.append(row)
    before = run.token_ids()
    row.recovery_seconds = fault()
    check_phase(run, row, run.token_ids() - before)
    return row


# The faults.


def kill_service(run: FaultRun, name: str) -> float:
    run.load()
    replica = run.stack.replicas[name][0]
    started = time.monotonic()
    replica.signal(signal.SIGKILL)
    replica.wait_stopped(10)
    replica.start()
    replica.wait_ready()
    recovery = run.probe(started)
    run.load()
    return recovery


def restart_server(run: FaultRun, server: str) -> float:
    operations = run.workload.operations
    run.workload.start()
    time.sleep(LOAD_SECONDS)
    started = time.monotonic()
    infra_cli.down([server], echo=False)
    time.sleep(2)
    infra_cli.up([server], echo=False)
    time.sleep(LOAD_SECONDS)
    run.workload.stop()
    run.rows[-1].operations += run.workload.operations - operations
    run.wait_ready()
    return run.probe(started)


def smtp_outage(run: FaultRun) -> float:
    """Take the SMTP sink away while expiry emails are being sent."""
    run.load()
    infra_cli.down(["smtp"], echo=False)
    run.advance(3 * DAY)
    time.sleep(SMTP_OUTAGE_SECONDS)
    run.recovery_started = time.monotonic()
    infra_cli.up(["smtp"], echo=False)
    # check_phase moves the clock again, waits for every email, and measures
    # the recovery from here.
    return 0.0


def replicas_then_kill(run: FaultRun) -> float:
    for name in SERVICES:
        run.stack.add_replica(name)
    run.workload.tokens_urls[:] = [r.url for r in run.stack.replicas["tokens"]]
    run.load()
    run.advance(3 * DAY)  # both tokens replicas scan, both notifiers send
    started = time.monotonic()
    for name in SERVICES:
        run.stack.replicas[name][1].signal(signal.SIGKILL)
    run.workload.tokens_urls[:] = [run.stack.replicas["tokens"][0].url]
    recovery = run.probe(started)
    run.load()
    return recovery


@pytest.fixture(scope="module")
def fault_run(infra: InfraConfig) -> Iterator[FaultRun]:
    run_id = uuid.uuid4().hex[:8]
    database = f"pat_faults_{run_id}"
    prefix = f"faults-{run_id}."
    dsns = asyncio.run(provision(infra.pg_dsn, database))
    stack = start_stack(
        dsns,
        infra.kafka_bootstrap,
        infra.smtp_port,
        infra.run_dir / "fault-logs" / run_id,
        topic_prefix=prefix,
        ports={name: free_port() for name in SERVICES},
        extra_env={
            "PAT_ENVIRONMENT": "development",
            "PAT_ADMIN_PASSWORD": ADMIN_PASSWORD,
            "PAT_SCAN_INTERVAL_SECONDS": "2",
            "PAT_SEND_POLL_SECONDS": "0.2",
            "PAT_OUTBOX_POLL_SECONDS": "0.5",
            "PAT_MAX_BACKOFF_SECONDS": "4",
        },
    )
    events, stop_events = start_collector(
        infra.kafka_bootstrap, [f"{prefix}tokens.events"]
    )
    dead_letters, stop_dead_letters = start_collector(
        infra.kafka_bootstrap,
        [f"{prefix}{name}.dead-letters" for name in ("tokens", "notifier")],
    )
    api = Api(stack.urls)
    admin = api.sign_in("admin", ADMIN_PASSWORD)
    api.change_setting(admin, "pat_enabled", True)
    api.wait_for_feature(admin, enabled=True)
    owners = []
    for index in range(5):
        name = f"load{index}{run_id}"
        user = api.create_user(
            admin,
            username=name,
            display_name=f"Load {index}",
            email=f"{name}@faults.example.org",
            password="fault-suite-password",
        )
        api.wait_for_user(admin, user["id"])
        owners.append(
            Owner(user["id"], user["email"], api.sign_in(name, "fault-suite-password"))
        )
    run = FaultRun(
        infra,
        database,
        prefix,
        stack,
        api,
        admin,
        Workload(owners[1:], [stack.urls["tokens"]]),
        events,
        dead_letters,
        owners[0],
    )
    try:
        yield run
    finally:
        write_report(run)
        api.close()
        stop_events()
        stop_dead_letters()
        stack.stop()
        asyncio.run(drop(infra.pg_dsn, database))


def write_report(run: FaultRun) -> None:
    header = (
        "| fault | operations | events expected | delivered | duplicated effects "
        "| emails expected | delivered | duplicated | time to recover |"
    )
    lines = [header, "|---|---|---|---|---|---|---|---|---|"]
    for row in run.rows:
        lines.append(
            f"| {row.fault} | {row.operations} | {row.events_expected} "
            f"| {row.events_delivered} | {row.duplicated_effects} "
            f"| {row.emails_expected} | {row.emails_delivered} "
            f"| {row.emails_duplicated} | {row.recovery_seconds:.1f} s |"
        )
    table = "\n".join(lines)
    print("\n" + table)
    (run.infra.run_dir / "fault-report.md").write_text(table + "\n")


def assert_clean(row: Row) -> None:
    assert row.events_delivered == row.events_expected, row
    assert row.duplicated_effects == 0, row
    assert row.emails_delivered == row.emails_expected, row
    assert row.emails_duplicated == 0, row
    assert row.operations > 0, row


@pytest.mark.parametrize("service", SERVICES)
def test_sigkill_service(fault_run: FaultRun, service: str) -> None:
    row = run_fault(
        fault_run, f"SIGKILL {service}", lambda: kill_service(fault_run, service)
    )

    assert_clean(row)


def test_kafka_restart(fault_run: FaultRun) -> None:
    row = run_fault(
        fault_run, "restart Kafka", lambda: restart_server(fault_run, "kafka")
    )

    assert_clean(row)


def test_postgres_restart(fault_run: FaultRun) -> None:
    row = run_fault(
        fault_run, "restart Postgres", lambda: restart_server(fault_run, "postgres")
    )

    assert_clean(row)


def test_smtp_outage(fault_run: FaultRun) -> None:
    row = run_fault(fault_run, "SMTP away 30 s", lambda: smtp_outage(fault_run))

    assert_clean(row)


def test_two_replicas_kill_one(fault_run: FaultRun) -> None:
    row = run_fault(
        fault_run, "2 replicas each, SIGKILL one", lambda: replicas_then_kill(fault_run)
    )

    assert_clean(row)


def test_no_dead_letters(fault_run: FaultRun) -> None:
    assert fault_run.dead_letters.records == []


@pytest.mark.parametrize("service", SERVICES)
def test_sigterm_exits_within_bound(fault_run: FaultRun, service: str) -> None:
    replica = fault_run.stack.add_replica(service)
    started = time.monotonic()

    replica.signal(signal.SIGTERM)
    replica.wait_stopped(SHUTDOWN_BOUND_SECONDS + 5)
    elapsed = time.monotonic() - started

    # uvicorn shuts down gracefully, then re-raises the signal it caught.
    assert replica.process is not None
    assert replica.process.returncode in (0, -signal.SIGTERM)
    assert f'"{service} stopped"' in replica.log.read_text()
    assert elapsed < SHUTDOWN_BOUND_SECONDS
