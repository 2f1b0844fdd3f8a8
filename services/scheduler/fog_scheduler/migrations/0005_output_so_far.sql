-- What a running attempt has printed so far, as its node sends it (every second or so): pieces, each
-- starting where the one before ended, read in order. When the job ends, its whole output goes to
-- jobs.output and its pieces are deleted, so that only jobs not ended have any.
CREATE TABLE job_output_so_far (
    job_id    uuid    NOT NULL,
    attempt   integer NOT NULL,
    from_char integer NOT NULL,
    text      text    NOT NULL,
    PRIMARY KEY (job_id, attempt, from_char)
);
