-- Ended jobs are deleted some time after they end (fog_scheduler.retention). These indexes let the
-- scheduler find them without reading the whole table: lone jobs by when they ended (the statuses
-- are spelled out in the queries too, so that the partial index applies), arrays by when they were
-- submitted (an array cannot have ended before it was submitted).
CREATE INDEX jobs_ended_alone ON jobs (finished_at)
    WHERE array_id IS NULL AND status IN ('succeeded', 'failed', 'timed_out', 'cancelled');
CREATE INDEX job_arrays_submitted ON job_arrays (submitted_at);
