-- Where each session was opened from (the address the gateway saw at login), so that a user looking
-- over their sessions can tell their own from someone else's; NULL for sessions opened before.
ALTER TABLE sessions ADD COLUMN source text;

ALTER TABLE users ADD COLUMN password_changed_at timestamptz;

-- One-time password reset tokens an admin issues for a user who forgot their password (there is no
-- mail here: the admin hands the token over). 256 bits of entropy, so a plain SHA-256 of it is a
-- sound lookup key; the database never holds a usable token. At most one unused token per user.
CREATE TABLE password_resets (
    token_hash bytea PRIMARY KEY,
    user_id    uuid        NOT NULL REFERENCES users (id),
    issued_by  text        NOT NULL,
    issued_at  timestamptz NOT NULL,
    expires_at timestamptz NOT NULL,
    used_at    timestamptz
);
CREATE INDEX password_resets_user ON password_resets (user_id);
