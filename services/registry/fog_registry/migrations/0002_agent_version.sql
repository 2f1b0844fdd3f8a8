-- What each node's agent said it is (its WebSocket's User-Agent, "fog-agent/0.4.0"), as of its last beat
-- written: owners and operators see which nodes run which agent, as they upgrade them one by one.
ALTER TABLE nodes ADD COLUMN agent text;
