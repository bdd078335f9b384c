-- The correlation id of the request that wrote the event, sent as the Kafka
-- correlation_id header; NULL for events no request caused (expiry scans).
ALTER TABLE outbox ADD COLUMN correlation_id text;
