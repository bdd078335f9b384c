-- Where and why a token was last used or rejected, written at most once a
-- minute per token (services/tokens/usage.py).
ALTER TABLE tokens
    ADD COLUMN last_used_address inet,
    ADD COLUMN last_rejected_at timestamptz,
    ADD COLUMN last_rejection_reason text;

-- Names are unique among a user's active tokens. Expiry depends on the
-- service clock, so creation checks this under a per-user advisory lock; the
-- index serves that check.
CREATE INDEX tokens_user_name ON tokens (user_id, lower(name))
    WHERE revoked_at IS NULL;
