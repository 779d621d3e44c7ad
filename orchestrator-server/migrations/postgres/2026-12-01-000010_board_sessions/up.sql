-- Sessions of the reviewer board: one row per signed-in browser. The cookie holds a random
-- id; only its SHA-256 is kept here, so a copy of the database signs no one in. `actor` is
-- who the session acts as (a principal's name, or the name given at sign-in without
-- principals); `credential` what signed it in (the SHA-256 of the principal's or the shared
-- token, or 'open'), so a rotated or removed token, or another auth mode, ends it; `csrf` is
-- the token the page sends back with its writes. Signing out deletes the row; expired rows
-- are purged.
CREATE TABLE board_sessions (
    id_sha256 TEXT PRIMARY KEY NOT NULL,
    actor TEXT NOT NULL,
    credential TEXT NOT NULL,
    csrf TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX board_sessions_expires_at ON board_sessions (expires_at);
