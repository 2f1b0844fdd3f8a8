-- Nodes: what providers offered, their announced status and reputation. Liveness itself lives
-- in the leading registry's memory; last_heartbeat_at/usage are written in batches.
CREATE TABLE nodes (
    id                text PRIMARY KEY,
    owner_id          text             NOT NULL,
    name              text             NOT NULL,
    capabilities      jsonb            NOT NULL,
    labels            jsonb            NOT NULL DEFAULT '{}',
    region            text,
    location          jsonb,
    status            text             NOT NULL,
    status_changed_at timestamptz      NOT NULL,
    draining          boolean          NOT NULL DEFAULT false,
    last_heartbeat_at timestamptz,
    usage             jsonb,
    running_jobs      integer          NOT NULL DEFAULT 0,
    reputation        double precision NOT NULL DEFAULT 0.5,
    rep_successes     double precision NOT NULL DEFAULT 0,
    rep_failures      double precision NOT NULL DEFAULT 0,
    rep_updated_at    timestamptz      NOT NULL,
    registered_at     timestamptz      NOT NULL,
    deregistered_at   timestamptz,
    -- bumped by every command that changes a node (not by heartbeats): the leader syncs from it
    changed_at        timestamptz      NOT NULL
);
CREATE INDEX nodes_owner ON nodes (owner_id);
CREATE INDEX nodes_status ON nodes (status);
CREATE INDEX nodes_changed ON nodes (changed_at);
CREATE INDEX nodes_labels ON nodes USING gin (labels);
