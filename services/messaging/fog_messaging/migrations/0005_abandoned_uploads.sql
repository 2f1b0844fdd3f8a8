-- Uploads that nobody finishes are removed after a while (FOG_MESSAGING_UPLOAD_IDLE_S): an upload's
-- last sign of life is its newest chunk, or its start, or its last failed completion (which drops its
-- chunks), whichever came last.
ALTER TABLE file_chunks ADD COLUMN received_at timestamptz NOT NULL DEFAULT now();
ALTER TABLE files ADD COLUMN active_at timestamptz;
UPDATE files SET active_at = coalesce(completed_at, created_at);
ALTER TABLE files ALTER COLUMN active_at SET NOT NULL;
CREATE INDEX files_uploading_since ON files (active_at) WHERE status = 'uploading';

-- Files whose rows are gone and whose chunks are still to be deleted from the object store. The row's
-- deletion and this record commit together, so a process that dies between the two steps leaves work
-- for the next sweep, never chunks that nothing refers to.
CREATE TABLE file_removals (
    file_id      uuid PRIMARY KEY,
    chunks       integer     NOT NULL,
    requested_at timestamptz NOT NULL
);
