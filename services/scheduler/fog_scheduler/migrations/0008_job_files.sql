-- The files a job gave back (its spec's "outputs"), as the last of its attempts that ended left them:
-- each attempt's replace the one's before. Deleted with their job (retention).
CREATE TABLE job_files (
    job_id    uuid    NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    path      text    NOT NULL,
    attempt   integer NOT NULL,
    size      bigint  NOT NULL,
    truncated boolean NOT NULL,
    data      bytea   NOT NULL,
    PRIMARY KEY (job_id, path)
);
