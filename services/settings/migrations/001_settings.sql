CREATE TABLE setting_values (
    key text PRIMARY KEY,
    value jsonb NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    updated_by uuid
);

-- Every change, with who made it and when; never updated or deleted.
CREATE TABLE setting_changes (
    id bigserial PRIMARY KEY,
    key text NOT NULL,
    previous_value jsonb,
    value jsonb NOT NULL,
    changed_by uuid,
    changed_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX setting_changes_key ON setting_changes (key, id);
