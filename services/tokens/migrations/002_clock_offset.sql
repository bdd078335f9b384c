-- The development clock offset, shared by every replica. It stays 0 outside
-- development, where nothing can change it.
CREATE TABLE clock_offset (
    id boolean PRIMARY KEY DEFAULT true CHECK (id),
    offset_seconds double precision NOT NULL DEFAULT 0
);
INSERT INTO clock_offset DEFAULT VALUES;
