-- The correlation id of the event that asked for the email, sent as the
-- email's X-Correlation-ID header.
ALTER TABLE email_requests ADD COLUMN correlation_id text;
