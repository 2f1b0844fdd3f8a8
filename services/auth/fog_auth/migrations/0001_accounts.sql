-- Accounts, login sessions (refresh-token families), signing keys and brute-force counters.
CREATE TABLE users (
    id              uuid PRIMARY KEY,
    email           text        NOT NULL,
    password_hash   text        NOT NULL,
    roles           text[]      NOT NULL,
    disabled        boolean     NOT NULL DEFAULT false,
    failed_logins   integer     NOT NULL DEFAULT 0,
    locked_until    timestamptz,
    created_at      timestamptz NOT NULL
);
CREATE UNIQUE INDEX users_email ON users (lower(email));

-- A session is one refresh-token family: every rotation adds a token to it, and reusing a
-- spent token revokes all of it (RFC 9700 §4.14.2).
CREATE TABLE sessions (
    id             uuid PRIMARY KEY,
    user_id        uuid        NOT NULL REFERENCES users (id),
    created_at     timestamptz NOT NULL,
    revoked_at     timestamptz,
    revoked_reason text
);
CREATE INDEX sessions_user ON sessions (user_id);

-- Refresh tokens are stored only as SHA-256 hashes: the database never holds a usable token.
CREATE TABLE refresh_tokens (
    token_hash  bytea PRIMARY KEY,
    session_id  uuid        NOT NULL REFERENCES sessions (id),
    issued_at   timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz
);
CREATE INDEX refresh_tokens_session ON refresh_tokens (session_id);

CREATE TABLE signing_keys (
    kid         text PRIMARY KEY,
    private_pem bytea       NOT NULL,
    created_at  timestamptz NOT NULL,
    retired_at  timestamptz
);

-- Failed logins per source address, so guessing across many accounts is slowed too.
CREATE TABLE source_failures (
    source       text PRIMARY KEY,
    failures     integer     NOT NULL,
    locked_until timestamptz,
    updated_at   timestamptz NOT NULL
);
