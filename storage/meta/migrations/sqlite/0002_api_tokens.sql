-- API tokens for the HTTPS API. The secret is never stored: only its SHA-256 (the secret is
-- 256 random bits, so a fast hash is enough). `token_id` is the public half used to look it up.
CREATE TABLE api_tokens (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id     INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    token_id    TEXT    NOT NULL UNIQUE,
    secret_hash BLOB    NOT NULL,
    created_ms  INTEGER NOT NULL,
    expires_ms  INTEGER
) STRICT;

CREATE INDEX api_tokens_by_user ON api_tokens (user_id, id);
