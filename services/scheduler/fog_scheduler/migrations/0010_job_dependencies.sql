-- A job may be run only after others (its spec's "after": jobs, or every job of an array, that must succeed;
-- "after_any": that must end, however). Each pair is a row, which says what the dependant needs of the
-- dependency; a dependant counts in waiting_for those of its dependencies that have not done it yet, and
-- placement looks only at pending jobs that wait for none. A dependency's end takes one off the counts of the
-- dependants it satisfies; one that ends without succeeding cancels those that needed its success
-- (fog_scheduler.service).
ALTER TABLE jobs ADD COLUMN waiting_for integer NOT NULL DEFAULT 0;

CREATE TABLE job_dependencies (
    dependency uuid NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    dependant  uuid NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    needs      text NOT NULL DEFAULT 'success' CHECK (needs IN ('success', 'end')),
    PRIMARY KEY (dependency, dependant)
);
-- the dependant's side: its explanation, and the cascade when retention deletes it
CREATE INDEX job_dependencies_dependant ON job_dependencies (dependant);
