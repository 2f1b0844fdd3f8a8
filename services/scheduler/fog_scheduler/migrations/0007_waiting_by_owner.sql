-- How many of an owner's jobs wait: counted at each submit against FOG_SCHEDULER_WAITING_JOBS_MAX_PER_OWNER,
-- so that one owner cannot queue millions of jobs that every placement cycle ranks. A job is in it from its
-- submit until it is placed: one index entry per job (per attempt), none for its later changes.
CREATE INDEX jobs_waiting_by_owner ON jobs (owner_id) WHERE status = 'pending';
