-- Contact attributes that administrators define, and each user's values.
-- A value is stored as JSON of the attribute's type: a string for text, date
-- (YYYY-MM-DD) and email, a number for number, a boolean for yes_no.
CREATE TABLE attribute_definitions (
    id uuid PRIMARY KEY,
    name text NOT NULL,
    value_type text NOT NULL
        CHECK (value_type IN ('text', 'number', 'date', 'email', 'yes_no')),
    user_editable boolean NOT NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL
);
CREATE UNIQUE INDEX attribute_definitions_name ON attribute_definitions (lower(name));

CREATE TABLE attribute_values (
    user_id uuid NOT NULL REFERENCES users (id),
    attribute_id uuid NOT NULL REFERENCES attribute_definitions (id) ON DELETE CASCADE,
    value jsonb NOT NULL,
    updated_at timestamptz NOT NULL,
    PRIMARY KEY (user_id, attribute_id)
);
CREATE INDEX attribute_values_attribute ON attribute_values (attribute_id);
