-- Portal users (`callgate user add NAME --role ROLE`). Only an argon2id hash of the password is
-- kept (PHC string). A disabled user keeps the row, so audit entries still name a known person
-- and the name cannot be reissued to someone else.
CREATE TABLE users (
    name            TEXT PRIMARY KEY NOT NULL,
    role            TEXT NOT NULL,
    password_hash   TEXT NOT NULL,
    created_at_ms   BIGINT NOT NULL,
    created_by      TEXT NOT NULL,
    password_set_at_ms BIGINT NOT NULL,
    disabled_at_ms  BIGINT
);
