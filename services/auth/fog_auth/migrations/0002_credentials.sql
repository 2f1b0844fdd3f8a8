-- API keys and node credentials: long-lived bearer secrets with 256 bits of entropy, so a
-- plain SHA-256 of the secret is a sound lookup key and the database never holds a usable one.
CREATE TABLE api_keys (
    id           uuid PRIMARY KEY,
    user_id      uuid        NOT NULL REFERENCES users (id),
    name         text        NOT NULL,
    secret_hash  bytea       NOT NULL UNIQUE,
    scopes       text[]      NOT NULL,
    created_at   timestamptz NOT NULL,
    expires_at   timestamptz,
    last_used_at timestamptz,
    revoked_at   timestamptz
);
CREATE INDEX api_keys_user ON api_keys (user_id);

-- A node id belongs to the provider who first got a credential for it; at most one live
-- credential per node (issuing a new one revokes the old).
CREATE TABLE node_owners (
    node_id    text PRIMARY KEY,
    owner_id   uuid        NOT NULL REFERENCES users (id),
    created_at timestamptz NOT NULL
);

CREATE TABLE node_credentials (
    id           uuid PRIMARY KEY,
    node_id      text        NOT NULL REFERENCES node_owners (node_id),
    secret_hash  bytea       NOT NULL UNIQUE,
    issued_at    timestamptz NOT NULL,
    last_used_at timestamptz,
    revoked_at   timestamptz
);
CREATE UNIQUE INDEX node_credentials_live ON node_credentials (node_id) WHERE revoked_at IS NULL;

ALTER TABLE users ADD COLUMN disabled_at timestamptz;
