"""Kafka helpers: the broker with our producer settings, and topic creation."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from faststream.kafka import KafkaBroker

from services.contracts import Topics

log = logging.getLogger(__name__)

PARTITIONS = 3


@dataclass(frozen=True)
class TopicSpec:
    name: str
    compacted: bool = False
    configs: dict[str, str] = field(default_factory=dict)


def shared_topics(topics: Topics) -> list[TopicSpec]:
    """Return every service's event topic, so that whichever service starts
    first creates each one with its proper configuration (compaction)."""
    return [
        TopicSpec(topics.settings_events),
        TopicSpec(topics.settings_values, compacted=True),
        # Kept forever, so that a new consumer learns every user. Compaction
        # would not do: several event types share a user's key, and the last
        # one (say PasswordChanged) would replace the user's snapshot.
        TopicSpec(topics.profile_events, configs={"retention.ms": "-1"}),
        TopicSpec(topics.tokens_events),
    ]


def create_broker(bootstrap: str, client_id: str) -> KafkaBroker:
    """Return a broker whose producer is idempotent and waits for all replicas."""
    return KafkaBroker(
        bootstrap,
        client_id=client_id,
        acks="all",
        enable_idempotence=True,
        # A logger outside "faststream", whose own handler prints plain text;
        # per-message lines go at DEBUG because the dispatcher logs each event.
        logger=logging.getLogger("services.broker"),
        log_level=logging.DEBUG,
    )


async def ensure_topics(bootstrap: str, specs: list[TopicSpec]) -> None:
    """Create the topics that do not exist yet; leave existing ones alone."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [spec for spec in specs if spec.name not in existing]
        for spec in missing:
            configs = dict(spec.configs)
            if spec.compacted:
                configs["cleanup.policy"] = "compact"
            topic = NewTopic(spec.name, PARTITIONS, 1, topic_configs=configs)
            try:
                await admin.create_topics([topic])
                log.info("created topic %s", spec.name)
            except TopicAlreadyExistsError:
                pass
    finally:
        await admin.close()
