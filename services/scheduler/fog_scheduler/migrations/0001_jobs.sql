-- Jobs, their attempts' outcome, and the scheduler's own view of the nodes (from registry events).
CREATE TABLE jobs (
    id              uuid PRIMARY KEY,
    owner_id        text             NOT NULL,
    name            text,
    array_id        uuid,
    array_index     integer,
    spec            jsonb            NOT NULL,
    priority        integer          NOT NULL,
    status          text             NOT NULL,
    attempt         integer          NOT NULL DEFAULT 1,
    node_id         text,
    -- nodes earlier attempts failed or were lost on: a retry prefers another
    tried_nodes     text[]           NOT NULL DEFAULT '{}',
    not_before      timestamptz,
    idempotency_key text,
    exit_code       integer,
    duration_s      double precision,
    error           text,
    output          text,
    output_truncated boolean         NOT NULL DEFAULT false,
    explain         jsonb,
    submitted_at    timestamptz      NOT NULL,
    assigned_at     timestamptz,
    started_at      timestamptz,
    finished_at     timestamptz
);
CREATE UNIQUE INDEX jobs_idempotency ON jobs (owner_id, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX jobs_owner ON jobs (owner_id, submitted_at, id);
CREATE INDEX jobs_pending ON jobs (priority DESC, submitted_at) WHERE status = 'pending';
CREATE INDEX jobs_placed ON jobs (node_id) WHERE status IN ('assigned', 'running');
CREATE INDEX jobs_array ON jobs (array_id, array_index) WHERE array_id IS NOT NULL;

CREATE TABLE job_arrays (
    id              uuid PRIMARY KEY,
    owner_id        text        NOT NULL,
    count           integer     NOT NULL,
    idempotency_key text,
    submitted_at    timestamptz NOT NULL
);
CREATE UNIQUE INDEX job_arrays_idempotency ON job_arrays (owner_id, idempotency_key) WHERE idempotency_key IS NOT NULL;

CREATE TABLE nodes (
    id           text PRIMARY KEY,
    status       text             NOT NULL,
    capabilities jsonb            NOT NULL,
    labels       jsonb            NOT NULL,
    region       text,
    reputation   double precision NOT NULL DEFAULT 0.5,
    updated_at   timestamptz      NOT NULL
);

-- Wake the placement loop when work arrives (the outbox relay does the same for events).
CREATE FUNCTION jobs_notify_pending() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify(current_schema() || '_pending', '');
    RETURN NULL;
END $$;
CREATE TRIGGER jobs_pending_notify AFTER INSERT OR UPDATE OF status ON jobs
    FOR EACH STATEMENT EXECUTE FUNCTION jobs_notify_pending();
