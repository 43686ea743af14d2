-- API tokens for the HTTPS API. The secret is never stored: only its SHA-256 (the secret is
-- 256 random bits, so a fast hash is enough). `token_id` is the public half used to look it up.
CREATE TABLE api_tokens (
    id          BIGINT          NOT NULL AUTO_INCREMENT PRIMARY KEY,
    user_id     BIGINT          NOT NULL,
    token_id    VARBINARY(64)   NOT NULL,
    secret_hash VARBINARY(64)   NOT NULL,
    created_ms  BIGINT          NOT NULL,
    expires_ms  BIGINT          NULL,
    CONSTRAINT api_tokens_user FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE,
    CONSTRAINT api_tokens_token_id_unique UNIQUE (token_id),
    INDEX api_tokens_by_user (user_id, id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
