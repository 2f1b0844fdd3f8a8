-- X3DH's signed prekey: each device's Ed25519 signing key and one medium-term X25519 prekey signed with it,
-- handed to every sender (a session can be opened once the one-time prekeys have run out). Public keys only.
ALTER TABLE device_keys
    ADD COLUMN signing_key             text,
    ADD COLUMN signed_prekey_id        integer,
    ADD COLUMN signed_prekey           text,
    ADD COLUMN signed_prekey_signature text;
