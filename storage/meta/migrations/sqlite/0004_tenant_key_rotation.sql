-- Rotation of tenant keys (schema version 4).
--
-- nodes.name_key_version: the tenant key version that encrypted the row's name and made its
-- blind index (a file's data key and content hash carry theirs in key_version). Every row
-- before this version was written under its tenant's current version.
-- key_rotations: one row per tenant whose key is being rotated: the version rows move from
-- and to, the cursor (after_id: last node id done in this pass), the counts for progress, and when it
-- began. The row goes when the old version's wrapped copies are destroyed.
ALTER TABLE nodes ADD COLUMN name_key_version INTEGER NOT NULL DEFAULT 1 CHECK (name_key_version >= 1);
UPDATE nodes SET name_key_version = (SELECT key_version FROM tenants WHERE tenants.id = nodes.tenant_id);

-- The rotation's scans: rows still under a version, in id order, one tenant at a time.
CREATE INDEX nodes_by_name_key ON nodes (tenant_id, name_key_version, id);
CREATE INDEX nodes_by_data_key ON nodes (tenant_id, key_version, id);

CREATE TABLE key_rotations (
    tenant_id    INTEGER NOT NULL PRIMARY KEY REFERENCES tenants (id) ON DELETE CASCADE,
    from_version INTEGER NOT NULL CHECK (from_version >= 1),
    to_version   INTEGER NOT NULL,
    after_id     INTEGER NOT NULL DEFAULT 0,
    pass_number  INTEGER NOT NULL DEFAULT 1 CHECK (pass_number >= 1),
    total        INTEGER NOT NULL DEFAULT 0 CHECK (total >= 0),
    rewritten    INTEGER NOT NULL DEFAULT 0 CHECK (rewritten >= 0),
    started_ms   INTEGER NOT NULL,
    updated_ms   INTEGER NOT NULL,
    CHECK (to_version > from_version)
) STRICT;
