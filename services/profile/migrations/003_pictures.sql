-- Each user's profile picture, re-encoded without metadata by the service.
CREATE TABLE pictures (
    user_id uuid PRIMARY KEY REFERENCES users (id),
    content_type text NOT NULL,
    data bytea NOT NULL,
    etag text NOT NULL,
    width integer NOT NULL,
    height integer NOT NULL,
    updated_at timestamptz NOT NULL
);
