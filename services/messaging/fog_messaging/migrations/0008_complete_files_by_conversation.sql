-- A conversation's complete files, the last completed first, a page at a time (GET
-- /v1/conversations/{id}/files): each page is one range of this index from where the last ended.
CREATE INDEX files_complete_by_conversation ON files (conversation_id, completed_at DESC, id DESC)
    WHERE status = 'complete';
