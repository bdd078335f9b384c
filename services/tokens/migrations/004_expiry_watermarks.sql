-- The expiry scan walks the tokens in (expires_at, id) order. For each kind of
-- event it keeps the position it has handled up to, instead of marking every
-- token row: a mark rewrote the row and its index entries, which made the
-- scan cost a write of the whole token per event.
CREATE TABLE expiry_watermarks (
    kind text PRIMARY KEY CHECK (kind IN ('expiring', 'expired')),
    expires_at timestamptz NOT NULL,
    token_id uuid NOT NULL
);
CREATE INDEX tokens_expiry ON tokens (expires_at, id);

-- Each watermark starts just before the first token still waiting for its
-- event, or at the last token already due when none is waiting. A token
-- after that point whose event was already written gets it a second time;
-- the notifier's dedupe key (kind, token id and expiry) keeps that to one
-- email.
INSERT INTO expiry_watermarks (kind, expires_at, token_id)
SELECT kinds.kind,
    coalesce(before.expires_at, '1970-01-01T00:00:00Z'),
    coalesce(before.id, '00000000-0000-0000-0000-000000000000')
FROM (VALUES ('expired'), ('expiring')) AS kinds (kind)
CROSS JOIN (
    SELECT now() + offset_seconds * interval '1 second' AS now FROM clock_offset
) AS clock
LEFT JOIN LATERAL (
    SELECT t.expires_at, t.id FROM tokens t
    WHERE t.revoked_at IS NULL AND CASE kinds.kind
        WHEN 'expired' THEN t.expired_event_at IS NULL
        ELSE t.expiring_event_at IS NULL AND t.expires_at > clock.now
            AND coalesce(t.rotated_at, t.created_at)
                < t.expires_at - interval '7 days'
    END
    ORDER BY t.expires_at, t.id LIMIT 1
) AS waiting ON true
LEFT JOIN LATERAL (
    SELECT t.expires_at, t.id FROM tokens t
    WHERE t.expires_at <= CASE kinds.kind
            WHEN 'expired' THEN clock.now
            ELSE clock.now + interval '7 days'
        END
        AND (waiting.id IS NULL
            OR (t.expires_at, t.id) < (waiting.expires_at, waiting.id))
    ORDER BY t.expires_at DESC, t.id DESC LIMIT 1
) AS before ON true;

DROP INDEX tokens_expiring_due;
DROP INDEX tokens_expired_due;
ALTER TABLE tokens DROP COLUMN expiring_event_at, DROP COLUMN expired_event_at;
