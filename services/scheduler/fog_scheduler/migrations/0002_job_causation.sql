-- Each job's events form one causal chain: the request that submitted it (the correlation id of
-- all its events) and its latest event (the causation id of the next one).
ALTER TABLE jobs ADD COLUMN correlation_id text;
ALTER TABLE jobs ADD COLUMN last_event_id text;
