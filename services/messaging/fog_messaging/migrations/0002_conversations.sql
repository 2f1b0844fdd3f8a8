-- BitChat: conversations, members, messages, receipts, and each member's timeline (what sync reads).

-- Which node belongs to whom, learned from auth's node credential events: a node may message its owner only.
CREATE TABLE node_owners (
    node_id  text PRIMARY KEY,
    owner_id text    NOT NULL,
    revoked  boolean NOT NULL DEFAULT false
);

CREATE TABLE conversations (
    id         uuid PRIMARY KEY,
    kind       text   NOT NULL CHECK (kind IN ('direct', 'group')),
    -- the two member ids, sorted: exactly one direct conversation per pair
    direct_key text UNIQUE,
    name       text,
    -- the seq of its newest message: the row is locked to number the next one (no gaps)
    last_seq   bigint NOT NULL DEFAULT 0,
    -- the heaviest vector clock seen: a message without a clock orders after everything before it
    max_weight bigint NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL,
    -- when its newest message was sent (or it was made): conversation lists put the liveliest first
    active_at  timestamptz NOT NULL DEFAULT now(),
    CHECK ((kind = 'direct') = (direct_key IS NOT NULL))
);

-- Current members and their roles.
CREATE TABLE members (
    conversation_id uuid NOT NULL REFERENCES conversations (id),
    member_id       text NOT NULL,
    role            text NOT NULL CHECK (role IN ('owner', 'admin', 'member')),
    joined_at       timestamptz NOT NULL,
    PRIMARY KEY (conversation_id, member_id)
);
CREATE INDEX members_by_member ON members (member_id);

-- Stretches of membership: a member reads the messages with after_seq < seq <= until_seq
-- (until_seq NULL while a member). Kept after leaving: what was readable stays readable.
CREATE TABLE access (
    conversation_id uuid   NOT NULL REFERENCES conversations (id),
    member_id       text   NOT NULL,
    after_seq       bigint NOT NULL,
    until_seq       bigint,
    CHECK (until_seq IS NULL OR until_seq >= after_seq)
);
CREATE INDEX access_by_member ON access (conversation_id, member_id);
CREATE UNIQUE INDEX access_one_open ON access (conversation_id, member_id) WHERE until_seq IS NULL;

CREATE TABLE messages (
    conversation_id uuid   NOT NULL REFERENCES conversations (id),
    seq             bigint NOT NULL,
    id              uuid   NOT NULL UNIQUE,
    sender_id       text   NOT NULL,
    client_msg_id   text   NOT NULL,
    device_id       text,
    text            text,
    reply_to_seq    bigint,
    clock           jsonb,
    -- the sort key of the causal order (see domain.causal_key)
    weight          bigint NOT NULL,
    concurrent_with bigint[] NOT NULL DEFAULT '{}',
    sent_at         timestamptz NOT NULL,
    edited_at       timestamptz,
    deleted_at      timestamptz,
    PRIMARY KEY (conversation_id, seq),
    -- a retried send finds the message it stored the first time
    UNIQUE (conversation_id, sender_id, client_msg_id)
);
CREATE INDEX messages_causal ON messages (conversation_id, weight, (coalesce(device_id, '')), sender_id, client_msg_id);
CREATE INDEX messages_clocked ON messages (conversation_id, seq DESC) WHERE clock IS NOT NULL;
CREATE INDEX messages_by_device ON messages (conversation_id, device_id) WHERE device_id IS NOT NULL;

CREATE TABLE receipts (
    conversation_id uuid   NOT NULL REFERENCES conversations (id),
    member_id       text   NOT NULL,
    delivered_seq   bigint NOT NULL DEFAULT 0,
    read_seq        bigint NOT NULL DEFAULT 0,
    updated_at      timestamptz NOT NULL,
    PRIMARY KEY (conversation_id, member_id)
);

-- The one counter of timeline positions. Taken last in a transaction and held to its commit,
-- so positions become visible in order and a sync never steps over one committed later.
CREATE TABLE timeline_head (
    only_row        boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    position        bigint  NOT NULL,
    -- positions up to this one may have been dropped by retention
    pruned_through  bigint  NOT NULL
);
INSERT INTO timeline_head (position, pruned_through) VALUES (0, 0);

-- Each member's changes, fanned out when they happen (the audience is decided then).
CREATE TABLE timeline (
    member_id       text   NOT NULL,
    position        bigint NOT NULL,
    conversation_id uuid   NOT NULL,
    kind            text   NOT NULL,
    msg_seq         bigint,
    payload         jsonb,
    created_at      timestamptz NOT NULL,
    PRIMARY KEY (member_id, position)
);
CREATE INDEX timeline_by_age ON timeline (created_at);
