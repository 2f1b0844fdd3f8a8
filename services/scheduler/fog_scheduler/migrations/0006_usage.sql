-- What a job's last attempt used, as its agent measured it (wait4): CPU time, user and system, of its first
-- process and the descendants it waited for; the largest resident set of any one of them. NULL before the
-- job ends, for jobs that never ran, and from agents that do not say.
ALTER TABLE jobs ADD COLUMN cpu_s float8, ADD COLUMN max_rss_bytes bigint;
