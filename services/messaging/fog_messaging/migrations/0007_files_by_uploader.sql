-- A member's files: counted (uploads under way) and summed (bytes kept) at each upload's start, which
-- read the whole table before.
CREATE INDEX files_by_uploader ON files (uploaded_by);
