-- Expiry emails are keyed by kind, token id and expiry (microseconds since
-- 1970), so that a rotated token is warned again. Requests stored under the
-- older key of kind and token id get the expiry appended, so that an event
-- for the same expiry, delivered again after this change, still finds them.
-- Their Message-IDs stay as they were sent.
UPDATE email_requests
SET dedupe_key = dedupe_key || '.'
    || (extract(epoch FROM expires_at) * 1000000)::bigint
WHERE kind IN ('token-expiring', 'token-expired')
    AND dedupe_key = kind || '.' || token_id;
