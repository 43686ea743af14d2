-- Coffer metadata schema, version 1 (SQLite).
--
-- No column holds a plaintext file or folder name or path: nodes carry only the encrypted
-- name (name_enc) and its blind index (name_index), both opaque BLOBs handed in by the layer
-- above. Ids of tenants, users and nodes are chosen by the caller (random, positive).
-- Queue tables (uploads, replication_outbox, garbage, audit) use AUTOINCREMENT so that a row
-- id is never reused: a slow worker acknowledging job N must never delete a newer job that
-- happened to get the same id.

CREATE TABLE tenants (
    id           INTEGER PRIMARY KEY,
    name         TEXT    NOT NULL UNIQUE,
    root_node_id INTEGER NOT NULL,
    key_version  INTEGER NOT NULL CHECK (key_version >= 1),
    quota_bytes  INTEGER NULL CHECK (quota_bytes IS NULL OR quota_bytes >= 0),
    created_ms   INTEGER NOT NULL
) STRICT;

-- Deleting a tenant's key rows crypto-shreds its data; keys follow their tenant.
CREATE TABLE tenant_keys (
    tenant_id     INTEGER NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    version       INTEGER NOT NULL CHECK (version >= 1),
    region        TEXT    NOT NULL,
    master_key_id TEXT    NOT NULL,
    wrapped       BLOB    NOT NULL,
    PRIMARY KEY (tenant_id, version, region)
) STRICT;

-- kind: 'd' folder, 'f' file. A tenant root has parent_id NULL; roots are found through
-- tenants.root_node_id, so the NULL-distinct UNIQUE below needs no special case for them.
-- The UNIQUE index (tenant_id, parent_id, name_index) also serves children() lookups.
CREATE TABLE nodes (
    id               INTEGER PRIMARY KEY,
    tenant_id        INTEGER NOT NULL REFERENCES tenants (id),
    parent_id        INTEGER NULL REFERENCES nodes (id),
    kind             TEXT    NOT NULL CHECK (kind IN ('d', 'f')),
    name_enc         BLOB    NOT NULL,
    name_index       BLOB    NOT NULL,
    mtime_ms         INTEGER NOT NULL,
    ctime_ms         INTEGER NOT NULL,
    version          INTEGER NOT NULL CHECK (version >= 1),
    size             INTEGER NULL CHECK (size IS NULL OR size >= 0),
    object_key       TEXT    NULL,
    content_id       BLOB    NULL,
    wrapped_dek      BLOB    NULL,
    key_version      INTEGER NULL,
    chunk_size       INTEGER NULL,
    content_hash_enc BLOB    NULL,
    CONSTRAINT nodes_content_matches_kind CHECK (
        (kind = 'd' AND size IS NULL AND object_key IS NULL AND content_id IS NULL
            AND wrapped_dek IS NULL AND key_version IS NULL AND chunk_size IS NULL
            AND content_hash_enc IS NULL)
        OR
        (kind = 'f' AND size IS NOT NULL AND object_key IS NOT NULL AND content_id IS NOT NULL
            AND wrapped_dek IS NOT NULL AND key_version IS NOT NULL AND chunk_size IS NOT NULL
            AND content_hash_enc IS NOT NULL)
    ),
    CONSTRAINT nodes_name_unique_in_folder UNIQUE (tenant_id, parent_id, name_index)
) STRICT;

-- One object belongs to at most one file version: a garbage row for a replaced object can
-- then never delete bytes a live row still points at.
CREATE UNIQUE INDEX nodes_object_key ON nodes (object_key);
-- usage(): an index-only scan over one tenant's files.
CREATE INDEX nodes_usage ON nodes (tenant_id, kind, size);

-- home_node_id is checked on insert; it is not a foreign key so that a folder row's
-- lifecycle stays the namespace's business.
CREATE TABLE users (
    id               INTEGER PRIMARY KEY,
    tenant_id        INTEGER NOT NULL REFERENCES tenants (id),
    name             TEXT    NOT NULL UNIQUE,
    password_hash    TEXT    NULL,
    home_node_id     INTEGER NOT NULL,
    perms            INTEGER NOT NULL CHECK (perms >= 0),
    disabled         INTEGER NOT NULL DEFAULT 0 CHECK (disabled IN (0, 1)),
    failed_count     INTEGER NOT NULL DEFAULT 0 CHECK (failed_count >= 0),
    first_failure_ms INTEGER NULL,
    locked_until_ms  INTEGER NULL,
    created_ms       INTEGER NOT NULL
) STRICT;

CREATE INDEX users_by_tenant ON users (tenant_id, name);

CREATE TABLE ssh_keys (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id     INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    algorithm   TEXT    NOT NULL,
    key_base64  TEXT    NOT NULL,
    fingerprint TEXT    NOT NULL,
    comment     TEXT    NOT NULL,
    CONSTRAINT ssh_keys_fingerprint_unique_per_user UNIQUE (user_id, fingerprint)
) STRICT;

CREATE TABLE uploads (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id  INTEGER NOT NULL REFERENCES tenants (id),
    spool_name TEXT    NOT NULL,
    object_key TEXT    NOT NULL,
    node_name  TEXT    NOT NULL,
    started_ms INTEGER NOT NULL
) STRICT;

CREATE INDEX uploads_by_age ON uploads (started_ms, id);

-- op: 'copy' or 'delete'. next_attempt_ms carries the retry backoff.
CREATE TABLE replication_outbox (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    object_key      TEXT    NOT NULL,
    op              TEXT    NOT NULL CHECK (op IN ('copy', 'delete')),
    attempts        INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    last_error      TEXT    NULL,
    created_ms      INTEGER NOT NULL,
    next_attempt_ms INTEGER NOT NULL
) STRICT;

CREATE INDEX replication_outbox_due ON replication_outbox (next_attempt_ms, id);

CREATE TABLE garbage (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    object_key TEXT    NOT NULL,
    created_ms INTEGER NOT NULL
) STRICT;

-- Audit rows name ids, never paths; they outlive the users and nodes they mention, so no
-- foreign keys here.
CREATE TABLE audit (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms       INTEGER NOT NULL,
    tenant_id   INTEGER NULL,
    user_id     INTEGER NULL,
    user_name   TEXT    NULL,
    protocol    TEXT    NOT NULL,
    remote_addr TEXT    NULL,
    action      TEXT    NOT NULL,
    node_id     INTEGER NULL,
    outcome     TEXT    NOT NULL,
    bytes       INTEGER NULL
) STRICT;

CREATE INDEX audit_by_time ON audit (at_ms);
