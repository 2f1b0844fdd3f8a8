-- A job may be run only after others succeeded (its spec's "after": jobs, or every job of an array). Each pair
-- is a row; a dependant counts in waiting_for those of its dependencies that have not succeeded yet, and
-- placement looks only at pending jobs that wait for none. A dependency that succeeds takes one off its
-- dependants' counts; one that ends otherwise cancels them (fog_scheduler.service).
ALTER TABLE jobs ADD COLUMN waiting_for integer NOT NULL DEFAULT 0;

CREATE TABLE job_dependencies (
    dependency uuid NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    dependant  uuid NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    PRIMARY KEY (dependency, dependant)
);
-- the dependant's side: its explanation, and the cascade when retention deletes it
CREATE INDEX job_dependencies_dependant ON job_dependencies (dependant);
