-- Uploads that nobody finishes are removed after a while (FOG_MESSAGING_UPLOAD_ABANDONED_AFTER_S):
-- an upload's last sign of life is its newest chunk, or its start.
ALTER TABLE file_chunks ADD COLUMN received_at timestamptz NOT NULL DEFAULT now();
CREATE INDEX files_uploading_since ON files (created_at) WHERE status = 'uploading';

-- Files whose rows are gone and whose chunks are still to be deleted from the object store. The row's
-- deletion and this record commit together, so a process that dies between the two steps leaves work
-- for the next sweep, never chunks that nothing refers to.
CREATE TABLE file_removals (
    file_id      uuid PRIMARY KEY,
    chunks       integer     NOT NULL,
    requested_at timestamptz NOT NULL
);
