-- Each user's signature: typed text, or an image re-encoded without metadata.
-- Only its owner can read it, and no event carries it.
CREATE TABLE signatures (
    user_id uuid PRIMARY KEY REFERENCES users (id),
    kind text NOT NULL CHECK (kind IN ('text', 'image')),
    text text,
    content_type text,
    data bytea,
    etag text,
    updated_at timestamptz NOT NULL,
    CHECK (kind <> 'text' OR text IS NOT NULL),
    CHECK (kind <> 'image' OR (data IS NOT NULL AND content_type IS NOT NULL
        AND etag IS NOT NULL))
);
