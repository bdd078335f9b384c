-- Failed sign-ins of the last window, by the username tried (lower case,
-- whether or not such a user exists) and by client address.
CREATE TABLE sign_in_failures (
    id bigserial PRIMARY KEY,
    username text NOT NULL,
    client_address text NOT NULL,
    failed_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX sign_in_failures_username ON sign_in_failures (username, failed_at);
CREATE INDEX sign_in_failures_address ON sign_in_failures (client_address, failed_at);
