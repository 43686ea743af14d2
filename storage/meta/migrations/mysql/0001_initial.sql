-- Coffer metadata schema, version 1 (MySQL 8 / MariaDB 10.11, InnoDB).
--
-- The same tables, keys and rules as the SQLite schema of the same version. No column holds
-- a plaintext file or folder name or path: nodes carry only the encrypted name (name_enc)
-- and its blind index (name_index), opaque bytes handed in by the layer above.
-- Identifiers compared for equality or uniqueness (tenant and user names, fingerprints,
-- object keys) are VARBINARY so they compare byte for byte exactly as in SQLite: no case
-- folding, no trailing-space padding. Free text is utf8mb4 with a binary collation.
-- Queue tables use AUTO_INCREMENT, which InnoDB never hands out twice (the counter is
-- persisted since MySQL 8.0 and MariaDB 10.2.4).

CREATE TABLE tenants (
    id           BIGINT          NOT NULL PRIMARY KEY,
    name         VARBINARY(255)  NOT NULL,
    root_node_id BIGINT          NOT NULL,
    key_version  BIGINT          NOT NULL,
    quota_bytes  BIGINT          NULL,
    created_ms   BIGINT          NOT NULL,
    CONSTRAINT tenants_name_unique UNIQUE (name),
    CONSTRAINT tenants_key_version_positive CHECK (key_version >= 1),
    CONSTRAINT tenants_quota_not_negative CHECK (quota_bytes IS NULL OR quota_bytes >= 0)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- Deleting a tenant's key rows crypto-shreds its data; keys follow their tenant.
CREATE TABLE tenant_keys (
    tenant_id     BIGINT         NOT NULL,
    version       BIGINT         NOT NULL,
    region        VARBINARY(64)  NOT NULL,
    master_key_id VARCHAR(1024)  NOT NULL,
    wrapped       BLOB           NOT NULL,
    PRIMARY KEY (tenant_id, version, region),
    CONSTRAINT tenant_keys_tenant FOREIGN KEY (tenant_id) REFERENCES tenants (id) ON DELETE CASCADE,
    CONSTRAINT tenant_keys_version_positive CHECK (version >= 1)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- kind: 'd' folder, 'f' file. A tenant root has parent_id NULL; roots are found through
-- tenants.root_node_id, so the NULL-distinct UNIQUE below needs no special case for them
-- (MySQL, like SQLite, lets several rows share a key that contains NULL).
-- The UNIQUE index (tenant_id, parent_id, name_index) also serves children() lookups.
CREATE TABLE nodes (
    id               BIGINT          NOT NULL PRIMARY KEY,
    tenant_id        BIGINT          NOT NULL,
    parent_id        BIGINT          NULL,
    kind             CHAR(1)         NOT NULL,
    name_enc         BLOB            NOT NULL,
    name_index       VARBINARY(255)  NOT NULL,
    mtime_ms         BIGINT          NOT NULL,
    ctime_ms         BIGINT          NOT NULL,
    version          BIGINT          NOT NULL,
    size             BIGINT          NULL,
    object_key       VARBINARY(128)  NULL,
    content_id       VARBINARY(255)  NULL,
    wrapped_dek      BLOB            NULL,
    key_version      BIGINT          NULL,
    chunk_size       BIGINT          NULL,
    content_hash_enc BLOB            NULL,
    CONSTRAINT nodes_tenant FOREIGN KEY (tenant_id) REFERENCES tenants (id),
    CONSTRAINT nodes_parent FOREIGN KEY (parent_id) REFERENCES nodes (id),
    CONSTRAINT nodes_kind_known CHECK (kind IN ('d', 'f')),
    CONSTRAINT nodes_version_positive CHECK (version >= 1),
    CONSTRAINT nodes_size_not_negative CHECK (size IS NULL OR size >= 0),
    CONSTRAINT nodes_content_matches_kind CHECK (
        (kind = 'd' AND size IS NULL AND object_key IS NULL AND content_id IS NULL
            AND wrapped_dek IS NULL AND key_version IS NULL AND chunk_size IS NULL
            AND content_hash_enc IS NULL)
        OR
        (kind = 'f' AND size IS NOT NULL AND object_key IS NOT NULL AND content_id IS NOT NULL
            AND wrapped_dek IS NOT NULL AND key_version IS NOT NULL AND chunk_size IS NOT NULL
            AND content_hash_enc IS NOT NULL)
    ),
    CONSTRAINT nodes_name_unique_in_folder UNIQUE (tenant_id, parent_id, name_index),
    -- One object belongs to at most one file version: a garbage row for a replaced object
    -- can then never delete bytes a live row still points at.
    CONSTRAINT nodes_object_key UNIQUE (object_key),
    -- usage(): an index-only scan over one tenant's files.
    INDEX nodes_usage (tenant_id, kind, size)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- home_node_id is checked on insert; it is not a foreign key so that a folder row's
-- lifecycle stays the namespace's business.
CREATE TABLE users (
    id               BIGINT          NOT NULL PRIMARY KEY,
    tenant_id        BIGINT          NOT NULL,
    name             VARBINARY(255)  NOT NULL,
    password_hash    VARCHAR(1024)   NULL,
    home_node_id     BIGINT          NOT NULL,
    perms            BIGINT          NOT NULL,
    disabled         BOOLEAN         NOT NULL DEFAULT FALSE,
    failed_count     BIGINT          NOT NULL DEFAULT 0,
    first_failure_ms BIGINT          NULL,
    locked_until_ms  BIGINT          NULL,
    created_ms       BIGINT          NOT NULL,
    CONSTRAINT users_name_unique UNIQUE (name),
    CONSTRAINT users_tenant FOREIGN KEY (tenant_id) REFERENCES tenants (id),
    CONSTRAINT users_perms_not_negative CHECK (perms >= 0),
    CONSTRAINT users_failed_count_not_negative CHECK (failed_count >= 0),
    INDEX users_by_tenant (tenant_id, name)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE ssh_keys (
    id          BIGINT          NOT NULL AUTO_INCREMENT PRIMARY KEY,
    user_id     BIGINT          NOT NULL,
    algorithm   VARCHAR(255)    NOT NULL,
    key_base64  TEXT            NOT NULL,
    fingerprint VARBINARY(255)  NOT NULL,
    comment     TEXT            NOT NULL,
    CONSTRAINT ssh_keys_user FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE,
    CONSTRAINT ssh_keys_fingerprint_unique_per_user UNIQUE (user_id, fingerprint)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE uploads (
    id         BIGINT          NOT NULL AUTO_INCREMENT PRIMARY KEY,
    tenant_id  BIGINT          NOT NULL,
    spool_name VARCHAR(1024)   NOT NULL,
    object_key VARBINARY(128)  NOT NULL,
    node_name  VARCHAR(1024)   NOT NULL,
    started_ms BIGINT          NOT NULL,
    CONSTRAINT uploads_tenant FOREIGN KEY (tenant_id) REFERENCES tenants (id),
    INDEX uploads_by_age (started_ms, id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- op: 'copy' or 'delete'. next_attempt_ms carries the retry backoff.
CREATE TABLE replication_outbox (
    id              BIGINT          NOT NULL AUTO_INCREMENT PRIMARY KEY,
    object_key      VARBINARY(128)  NOT NULL,
    op              VARCHAR(16)     NOT NULL,
    attempts        BIGINT          NOT NULL DEFAULT 0,
    last_error      TEXT            NULL,
    created_ms      BIGINT          NOT NULL,
    next_attempt_ms BIGINT          NOT NULL,
    CONSTRAINT replication_outbox_op_known CHECK (op IN ('copy', 'delete')),
    CONSTRAINT replication_outbox_attempts_not_negative CHECK (attempts >= 0),
    INDEX replication_outbox_due (next_attempt_ms, id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE garbage (
    id         BIGINT          NOT NULL AUTO_INCREMENT PRIMARY KEY,
    object_key VARBINARY(128)  NOT NULL,
    created_ms BIGINT          NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- Audit rows name ids, never paths; they outlive the users and nodes they mention, so no
-- foreign keys here.
CREATE TABLE audit (
    id          BIGINT         NOT NULL AUTO_INCREMENT PRIMARY KEY,
    at_ms       BIGINT         NOT NULL,
    tenant_id   BIGINT         NULL,
    user_id     BIGINT         NULL,
    user_name   VARCHAR(1024)  NULL,
    protocol    VARCHAR(64)    NOT NULL,
    remote_addr VARCHAR(255)   NULL,
    action      VARCHAR(64)    NOT NULL,
    node_id     BIGINT         NULL,
    outcome     VARCHAR(255)   NOT NULL,
    bytes       BIGINT         NULL,
    INDEX audit_by_time (at_ms)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
