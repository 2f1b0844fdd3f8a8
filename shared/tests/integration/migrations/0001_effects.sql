-- A consumer's visible effect: one row per handled event (the test counts them).
CREATE TABLE effects (
    id       bigserial PRIMARY KEY,
    event_id text NOT NULL,
    email    text NOT NULL
);
