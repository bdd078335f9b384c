-- The copy of each user that validation needs, kept from profile events.
CREATE TABLE users (
    user_id uuid PRIMARY KEY,
    username text NOT NULL,
    role text NOT NULL,
    active boolean NOT NULL
);

-- The copy of the settings this service obeys, kept from the compacted topic.
CREATE TABLE settings (
    key text PRIMARY KEY,
    value jsonb NOT NULL
);

-- hash is HMAC-SHA256 of the token under the key named by hash_key_id; the
-- token value itself is never stored.
CREATE TABLE tokens (
    id uuid PRIMARY KEY,
    user_id uuid NOT NULL,
    name text NOT NULL,
    hash bytea NOT NULL UNIQUE,
    hash_key_id text NOT NULL,
    created_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL,
    revoked_at timestamptz,
    revoked_by uuid,
    last_used_at timestamptz,
    expiring_event_at timestamptz,
    expired_event_at timestamptz
);
CREATE INDEX tokens_user ON tokens (user_id, created_at);
CREATE INDEX tokens_expiring_due ON tokens (expires_at)
    WHERE expiring_event_at IS NULL AND revoked_at IS NULL;
CREATE INDEX tokens_expired_due ON tokens (expires_at)
    WHERE expired_event_at IS NULL AND revoked_at IS NULL;
