-- callgate 0002 (PostgreSQL): tags, retention, legal holds, restriction, tombstones, audit log.
-- See docs/retention.md.

-- Retention state on each recording. `expires_at_ms` NULL means "kept indefinitely" (an open
-- legal hold or an open until-released tag) when `retention_rule` is set, and "not computed
-- yet" (a row the gateway wrote since the last sweep) when `retention_policy` is NULL.
ALTER TABLE recordings ADD COLUMN expires_at_ms BIGINT;
ALTER TABLE recordings ADD COLUMN retention_rule TEXT;
-- Fingerprint of the retention config that computed the expiry; a config change recomputes.
ALTER TABLE recordings ADD COLUMN retention_policy TEXT;
-- 1 while any open legal hold covers the recording (never swept nor erased).
ALTER TABLE recordings ADD COLUMN held BIGINT NOT NULL DEFAULT 0;
-- Sweeper claim (several nodes may sweep at once).
ALTER TABLE recordings ADD COLUMN sweeping_by TEXT;
ALTER TABLE recordings ADD COLUMN sweeping_at_ms BIGINT;
-- Restriction of processing (UK GDPR art. 18): playback and export only for the DPO role.
ALTER TABLE recordings ADD COLUMN restricted_at_ms BIGINT;
ALTER TABLE recordings ADD COLUMN restricted_by TEXT;
ALTER TABLE recordings ADD COLUMN restricted_reason TEXT;
-- The sweeper's query: equality on the policy fingerprint, range and order on the expiry.
CREATE INDEX recordings_expiry_idx ON recordings (retention_policy, expires_at_ms, recording_id);

-- Tags, one row per (recording, tag). Removal keeps the row (removed_* set): the release time
-- of an until-released tag starts its grace period.
CREATE TABLE recording_tags (
    recording_id    TEXT NOT NULL,
    tag             TEXT NOT NULL,
    added_by        TEXT NOT NULL,
    added_at_ms     BIGINT NOT NULL,
    note            TEXT,
    removed_by      TEXT,
    removed_at_ms   BIGINT,
    PRIMARY KEY (recording_id, tag)
);

-- Legal holds (a case) and the recordings they cover.
CREATE TABLE legal_holds (
    case_ref        TEXT PRIMARY KEY NOT NULL,
    reason          TEXT NOT NULL,
    created_by      TEXT NOT NULL,
    created_at_ms   BIGINT NOT NULL,
    released_by     TEXT,
    released_at_ms  BIGINT,
    release_reason  TEXT
);
CREATE TABLE legal_hold_items (
    case_ref        TEXT NOT NULL,
    recording_id    TEXT NOT NULL,
    added_by        TEXT NOT NULL,
    added_at_ms     BIGINT NOT NULL,
    PRIMARY KEY (case_ref, recording_id)
);
CREATE INDEX legal_hold_items_recording_idx ON legal_hold_items (recording_id);

-- What is left of a deleted recording: no personal data.
CREATE TABLE recording_tombstones (
    recording_id    TEXT PRIMARY KEY NOT NULL,
    created_at_ms   BIGINT NOT NULL,
    expired_at_ms   BIGINT,
    deleted_at_ms   BIGINT NOT NULL,
    rule            TEXT NOT NULL
);

-- The hash-chained audit log (src/audit). Append-only: the triggers stop accidental edits;
-- the chain (`callgate audit verify`) detects deliberate ones.
CREATE TABLE audit_log (
    seq             BIGINT PRIMARY KEY NOT NULL,
    at_ms           BIGINT NOT NULL,
    actor           TEXT NOT NULL,
    role            TEXT NOT NULL,
    action          TEXT NOT NULL,
    targets         TEXT NOT NULL,
    reason          TEXT,
    details         TEXT NOT NULL,
    prev_hash       TEXT NOT NULL,
    hash            TEXT NOT NULL
);
-- The chain head: one row. Appends lock it first (serialising every audited change).
CREATE TABLE audit_head (
    id              BIGINT PRIMARY KEY NOT NULL,
    seq             BIGINT NOT NULL,
    hash            TEXT NOT NULL,
    locked_at_ms    BIGINT NOT NULL
);
INSERT INTO audit_head (id, seq, hash, locked_at_ms)
VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000', 0);
CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only';
END;
$$;
CREATE TRIGGER audit_log_no_update BEFORE UPDATE OR DELETE ON audit_log
FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
