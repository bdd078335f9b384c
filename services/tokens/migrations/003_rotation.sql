-- A rotated token keeps its id and name and gets a new value. The previous
-- value's hash is kept until previous_valid_until, the end of the overlap
-- that the owner chose (the rotation instant itself when there is none).
ALTER TABLE tokens
    ADD COLUMN rotated_at timestamptz,
    ADD COLUMN previous_hash bytea UNIQUE,
    ADD COLUMN previous_hash_key_id text,
    ADD COLUMN previous_valid_until timestamptz;
