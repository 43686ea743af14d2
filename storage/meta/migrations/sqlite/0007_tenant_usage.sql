-- A running count of each tenant's usage (schema version 7).
--
-- A quota check used to add up the sizes of all of the tenant's files on every commit that
-- grew its usage (an index scan of nodes_usage: milliseconds at 10,000 files, 160 ms at a
-- million, under SQLite's single writer). The counter is kept instead by every statement that
-- adds, resizes or removes a file, in the same transaction, and `coffer fsck` compares it with
-- a recount (`--repair` recounts).
--
-- shard: a file counts in the shard `id % shards`, where shards is 1 on SQLite (one writer)
-- and 16 on MySQL (commits of one tenant on many nodes then rarely wait for one row). A
-- tenant's usage is the sum of its shards; a shard alone means nothing and may even be
-- negative after a recount with another shard count.
CREATE TABLE tenant_usage (
    tenant_id INTEGER NOT NULL REFERENCES tenants (id),
    shard     INTEGER NOT NULL,
    bytes     INTEGER NOT NULL,
    files     INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, shard)
) STRICT, WITHOUT ROWID;

INSERT INTO tenant_usage (tenant_id, shard, bytes, files)
    SELECT tenant_id, 0, SUM(size), COUNT(*) FROM nodes WHERE kind = 'f' GROUP BY tenant_id;

-- Only usage() read it: one index fewer to write on every commit.
DROP INDEX nodes_usage;
