-- Keys that customers own (schema version 3).
--
-- tenant_master_keys: a tenant's own KMS key per region (customer-managed). A region without
-- a row wraps the tenant's key under the deployment's master key of that region.
-- tenant_keys.created_ms: when a key version was made (rotation policy; 0 = before version 3,
-- the tenant's own created_ms is its age then).
CREATE TABLE tenant_master_keys (
    tenant_id INTEGER NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    region    TEXT    NOT NULL,
    key_id    TEXT    NOT NULL,
    PRIMARY KEY (tenant_id, region)
) STRICT;

ALTER TABLE tenant_keys ADD COLUMN created_ms INTEGER NOT NULL DEFAULT 0;
