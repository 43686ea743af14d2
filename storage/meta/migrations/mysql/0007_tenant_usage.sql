-- A running count of each tenant's usage (schema version 7; the SQLite migration of the same
-- version explains it). 16 shards: a file counts in shard `id % 16`, so commits of one
-- tenant on many nodes rarely wait for the same row.
CREATE TABLE tenant_usage (
    tenant_id BIGINT NOT NULL,
    shard     BIGINT NOT NULL,
    bytes     BIGINT NOT NULL,
    files     BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, shard),
    CONSTRAINT tenant_usage_tenant FOREIGN KEY (tenant_id) REFERENCES tenants (id)
) ENGINE = InnoDB;

INSERT INTO tenant_usage (tenant_id, shard, bytes, files)
    SELECT tenant_id, id % 16, SUM(size), COUNT(*) FROM nodes WHERE kind = 'f'
    GROUP BY tenant_id, id % 16;

-- Only usage() read it: one index fewer to write on every commit. The foreign key on
-- tenant_id is served by nodes_name_unique_in_folder (tenant_id, parent_id, name_index).
DROP INDEX nodes_usage ON nodes;
