-- Transactional outbox: a service inserts its events here in the same
-- transaction as the change they describe; the relay publishes them in id
-- order and sets published_at once the broker has confirmed.
CREATE TABLE outbox (
    id bigserial PRIMARY KEY,
    event_id uuid NOT NULL UNIQUE,
    topic text NOT NULL,
    key text NOT NULL,
    event_type text NOT NULL,
    payload jsonb NOT NULL,
    occurred_at timestamptz NOT NULL,
    published_at timestamptz
);
CREATE INDEX outbox_unpublished ON outbox (id) WHERE published_at IS NULL;

-- Inbox: the CloudEvents id of every event a consumer has applied, written in
-- the same transaction as the effect, so a redelivered event is skipped.
CREATE TABLE processed_events (
    event_id text PRIMARY KEY,
    event_type text NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now()
);
