-- Keypad-protection pauses of a call (JSON array of spans: times, trigger, digit count; never digits).
ALTER TABLE calls ADD COLUMN pauses_json TEXT;
