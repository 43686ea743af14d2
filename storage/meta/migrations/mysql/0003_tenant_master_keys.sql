-- Keys that customers own (schema version 3). Same rules as the SQLite migration.
CREATE TABLE tenant_master_keys (
    tenant_id BIGINT         NOT NULL,
    region    VARBINARY(64)  NOT NULL,
    key_id    VARCHAR(1024)  NOT NULL,
    PRIMARY KEY (tenant_id, region),
    CONSTRAINT tenant_master_keys_tenant FOREIGN KEY (tenant_id) REFERENCES tenants (id) ON DELETE CASCADE
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

ALTER TABLE tenant_keys ADD COLUMN created_ms BIGINT NOT NULL DEFAULT 0;
