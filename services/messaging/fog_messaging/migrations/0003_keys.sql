-- The key directory for end-to-end encryption: each device's X25519 identity key and its
-- one-time prekeys, each handed to one sender only. The service stores public keys only.
CREATE TABLE device_keys (
    user_id      text NOT NULL,
    device_id    text NOT NULL,
    identity_key text NOT NULL,
    updated_at   timestamptz NOT NULL,
    PRIMARY KEY (user_id, device_id)
);

CREATE TABLE prekeys (
    user_id    text    NOT NULL,
    device_id  text    NOT NULL,
    key_id     integer NOT NULL,
    public_key text    NOT NULL,
    claimed_by text,
    claimed_at timestamptz,
    PRIMARY KEY (user_id, device_id, key_id),
    FOREIGN KEY (user_id, device_id) REFERENCES device_keys (user_id, device_id) ON DELETE CASCADE
);
CREATE INDEX prekeys_unclaimed ON prekeys (user_id, device_id, key_id) WHERE claimed_at IS NULL;
