-- Wake the placement loop only when there may be work for it: a job that became pending (submitted,
-- retried, lost) or one that ended (what it held is free). A placement (assigned) or a start (running)
-- brings none: before, each of them woke the loop for a cycle that found nothing, in the middle of a
-- lone job's way to running, and once per batch of reports under an array.
DROP TRIGGER jobs_pending_notify ON jobs;
DROP FUNCTION jobs_notify_pending();

CREATE FUNCTION jobs_notify_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT FROM inserted WHERE status = 'pending') THEN
        PERFORM pg_notify(current_schema() || '_pending', '');
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER jobs_inserted_notify AFTER INSERT ON jobs
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION jobs_notify_inserted();

CREATE FUNCTION jobs_notify_updated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (
        SELECT FROM after_update AS a JOIN before_update AS b ON b.id = a.id
        WHERE a.status <> b.status AND a.status NOT IN ('assigned', 'running')
    ) THEN
        PERFORM pg_notify(current_schema() || '_pending', '');
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER jobs_updated_notify AFTER UPDATE ON jobs
    REFERENCING OLD TABLE AS before_update NEW TABLE AS after_update
    FOR EACH STATEMENT EXECUTE FUNCTION jobs_notify_updated();
