-- Calls in both directions, per-route recording policy and the caller's consent choices.
-- customer_leg: which SIP leg is the customer ('caller' inbound, 'called' outbound); the
-- caller_* columns and the recording's left track always mean the customer.
ALTER TABLE calls ADD COLUMN customer_leg TEXT NOT NULL DEFAULT 'caller';
-- The route's policy when the call started: 'always', 'never' or 'on-demand'.
ALTER TABLE calls ADD COLUMN record_policy TEXT NOT NULL DEFAULT 'always';
-- When the recording started and who started it ('route', 'api:<token name>', 'agent-keys').
ALTER TABLE calls ADD COLUMN recording_started_at_ms INTEGER;
ALTER TABLE calls ADD COLUMN recording_started_by TEXT;
-- The consent prompt (NULL columns: the route offered none).
ALTER TABLE calls ADD COLUMN consent_prompt_sha256 TEXT;
-- 'offered' while the choice is open, 'decided', 'abandoned' (hung up before deciding).
ALTER TABLE calls ADD COLUMN consent_state TEXT;
-- 1 / 0: may the call be recorded, may it be used for training (NULL: not offered).
ALTER TABLE calls ADD COLUMN consent_recording INTEGER;
ALTER TABLE calls ADD COLUMN consent_training INTEGER;
-- 'keypad' (a key was pressed) or 'default' (no key before the timeout: the route's default).
ALTER TABLE calls ADD COLUMN consent_source TEXT;
ALTER TABLE calls ADD COLUMN consent_at_ms INTEGER;
