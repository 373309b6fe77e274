-- callgate initial schema (PostgreSQL).
-- Times are Unix milliseconds (BIGINT). Ids are the text of the newtypes in src/ids.rs.
-- No foreign keys on purpose: the serve shell writes calls, recordings and keys from different
-- tasks in no guaranteed order; rows are joined by id.

-- One row per call through the gateway (both legs). Phone numbers are personal data.
CREATE TABLE calls (
    call_id                    TEXT PRIMARY KEY NOT NULL,
    sip_call_id                TEXT NOT NULL,
    direction                  TEXT NOT NULL,
    from_number                TEXT NOT NULL,
    to_number                  TEXT NOT NULL,
    dialled                    TEXT NOT NULL,
    route                      TEXT NOT NULL,
    target                     TEXT NOT NULL,
    started_at_ms              BIGINT NOT NULL,
    answered_at_ms             BIGINT,
    bridged_at_ms              BIGINT,
    ended_at_ms                BIGINT,
    hangup_cause               TEXT,
    hangup_side                TEXT,
    final_status               BIGINT,
    caller_codec               TEXT,
    agent_codec                TEXT,
    caller_packets             BIGINT NOT NULL DEFAULT 0,
    caller_lost                BIGINT NOT NULL DEFAULT 0,
    agent_packets              BIGINT NOT NULL DEFAULT 0,
    agent_lost                 BIGINT NOT NULL DEFAULT 0,
    announcement_sha256        TEXT,
    announcement_started_at_ms BIGINT,
    announcement_ended_at_ms   BIGINT,
    announcement_state         TEXT NOT NULL DEFAULT 'none',
    announcement_error         TEXT,
    recording_id               TEXT,
    recording_state            TEXT NOT NULL DEFAULT 'none',
    recording_error            TEXT,
    key_id                     TEXT,
    recording_bytes            BIGINT,
    recording_sha256           TEXT,
    recording_location         TEXT,
    audio_ms                   BIGINT
);
CREATE INDEX calls_started_idx ON calls (started_at_ms DESC, call_id DESC);
CREATE INDEX calls_recording_state_idx ON calls (recording_state);
CREATE INDEX calls_recording_id_idx ON calls (recording_id);
CREATE INDEX calls_from_number_idx ON calls (from_number);
CREATE INDEX calls_to_number_idx ON calls (to_number);

-- One row per recording file.
CREATE TABLE recordings (
    recording_id    TEXT PRIMARY KEY NOT NULL,
    call_id         TEXT NOT NULL,
    location        TEXT NOT NULL,
    state           TEXT NOT NULL,
    bytes           BIGINT NOT NULL DEFAULT 0,
    sha256          TEXT,
    created_at_ms   BIGINT NOT NULL,
    finished_at_ms  BIGINT
);
CREATE INDEX recordings_call_idx ON recordings (call_id, created_at_ms DESC);

-- The wrapped data key (DEK) of each recording, wrapped by the key-encryption key `key_id`.
-- It lives ONLY here: deleting the row crypto-shreds every copy of the audio.
CREATE TABLE recording_keys (
    recording_id    TEXT PRIMARY KEY NOT NULL,
    key_id          TEXT NOT NULL,
    wrapped_dek     BYTEA NOT NULL,
    created_at_ms   BIGINT NOT NULL,
    rewrapped_at_ms BIGINT
);
CREATE INDEX recording_keys_key_idx ON recording_keys (key_id);
