-- The copy of each user's contact details, kept from profile events.
CREATE TABLE users (
    user_id uuid PRIMARY KEY,
    email text NOT NULL,
    display_name text NOT NULL,
    time_zone text NOT NULL
);

-- One row per email to send. dedupe_key makes it one email per token per
-- kind, however often the event that asks for it is delivered. A request
-- whose user is not in users yet waits until a profile event names them.
CREATE TABLE email_requests (
    id bigserial PRIMARY KEY,
    dedupe_key text NOT NULL UNIQUE,
    kind text NOT NULL,
    user_id uuid NOT NULL,
    token_id uuid NOT NULL,
    token_name text NOT NULL,
    expires_at timestamptz NOT NULL,
    status text NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'sent', 'failed')),
    attempts integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error text,
    message_id text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    sent_at timestamptz
);
CREATE INDEX email_requests_pending ON email_requests (next_attempt_at)
    WHERE status = 'pending';
