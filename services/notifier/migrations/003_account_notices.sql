-- Email requests that are not about a token, such as the notice that a
-- password changed, have no token columns. occurred_at is the instant of the
-- change that the email reports.
ALTER TABLE email_requests
    ALTER COLUMN token_id DROP NOT NULL,
    ALTER COLUMN token_name DROP NOT NULL,
    ALTER COLUMN expires_at DROP NOT NULL,
    ADD COLUMN occurred_at timestamptz;
