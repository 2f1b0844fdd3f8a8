-- The users messaging knows of, learned from auth's user events (never read from auth's schema).
CREATE TABLE users (
    user_id       text PRIMARY KEY,
    email         text        NOT NULL,
    registered_at timestamptz NOT NULL
);
