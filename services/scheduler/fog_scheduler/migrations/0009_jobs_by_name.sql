-- An owner's jobs of one name, in submit order (GET /v1/jobs?name=): without it, a name few jobs carry is
-- looked for through all of its owner's jobs.
CREATE INDEX jobs_owner_name ON jobs (owner_id, name, submitted_at, id) WHERE name IS NOT NULL;
