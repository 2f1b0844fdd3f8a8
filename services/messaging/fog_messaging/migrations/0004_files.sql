-- BitChat files: metadata here, contents in the JetStream object store (one object per chunk).
CREATE TABLE files (
    id              uuid PRIMARY KEY,
    conversation_id uuid    NOT NULL REFERENCES conversations (id),
    uploaded_by     text    NOT NULL,
    name            text    NOT NULL,
    size            bigint  NOT NULL,
    sha256          text    NOT NULL,
    chunk_size      integer NOT NULL,
    chunks          integer NOT NULL,
    status          text    NOT NULL CHECK (status IN ('uploading', 'complete')),
    created_at      timestamptz NOT NULL,
    completed_at    timestamptz
);
CREATE INDEX files_by_conversation ON files (conversation_id);

-- The chunks stored so far: an upload resumes by sending the ones missing here.
CREATE TABLE file_chunks (
    file_id uuid    NOT NULL REFERENCES files (id) ON DELETE CASCADE,
    index   integer NOT NULL,
    sha256  text    NOT NULL,
    PRIMARY KEY (file_id, index)
);
