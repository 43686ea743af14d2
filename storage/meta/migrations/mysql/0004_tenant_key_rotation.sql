-- Rotation of tenant keys (schema version 4). Same rules as the SQLite migration.
ALTER TABLE nodes ADD COLUMN name_key_version BIGINT NOT NULL DEFAULT 1,
    ADD CONSTRAINT nodes_name_key_version_positive CHECK (name_key_version >= 1);
UPDATE nodes SET name_key_version = (SELECT key_version FROM tenants WHERE tenants.id = nodes.tenant_id);

CREATE INDEX nodes_by_name_key ON nodes (tenant_id, name_key_version, id);
CREATE INDEX nodes_by_data_key ON nodes (tenant_id, key_version, id);

CREATE TABLE key_rotations (
    tenant_id    BIGINT NOT NULL PRIMARY KEY,
    from_version BIGINT NOT NULL,
    to_version   BIGINT NOT NULL,
    after_id     BIGINT NOT NULL DEFAULT 0,
    pass_number  BIGINT NOT NULL DEFAULT 1,
    total        BIGINT NOT NULL DEFAULT 0,
    rewritten    BIGINT NOT NULL DEFAULT 0,
    started_ms   BIGINT NOT NULL,
    updated_ms   BIGINT NOT NULL,
    CONSTRAINT key_rotations_tenant FOREIGN KEY (tenant_id) REFERENCES tenants (id) ON DELETE CASCADE,
    CONSTRAINT key_rotations_versions CHECK (from_version >= 1 AND to_version > from_version)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
