//! What the usage tests of both engines share: rows written at schema version 6, before the
//! usage count existed, for migration 7 to count.

use std::path::{Path, PathBuf};

use coffer_meta::{NamespaceStore, Usage};

/// Adds [`coffer_meta::conformance::DRIFT_BYTES`] and one file to a tenant's usage count
/// behind the store's back (binds: tenant, bytes), in a shard no file counts in.
pub const DRIFT: &str =
    "INSERT INTO tenant_usage (tenant_id, shard, bytes, files) VALUES (?, 1000, ?, 1)";

/// The schema version before `tenant_usage`.
pub const BEFORE_COUNT: i64 = 6;

/// Two tenants with files (and folders, which count for nothing), as SQL for schema
/// version 6; each tenant's `(bytes, files)` follows.
pub fn rows_at_version_6() -> (Vec<String>, [(i64, i64, i64); 2]) {
    let mut sql = Vec::new();
    let mut expected = [(0, 0, 0); 2];
    for (t, tenant) in [(0_usize, 900_i64), (1, 950)] {
        let root = tenant * 1_000;
        sql.push(format!(
            "INSERT INTO tenants (id, name, root_node_id, key_version, quota_bytes, created_ms) \
             VALUES ({tenant}, 'old-{tenant}', {root}, 1, NULL, 1)"
        ));
        sql.push(format!(
            "INSERT INTO nodes (id, tenant_id, parent_id, kind, name_enc, name_index, mtime_ms, \
             ctime_ms, version) VALUES ({root}, {tenant}, NULL, 'd', X'01', X'01', 1, 1, 1)"
        ));
        let files = 37 + i64::try_from(t).unwrap_or(0) * 5;
        let mut bytes = 0;
        for i in 1..=files {
            let id = root + i;
            let size = i * 1_000 + tenant;
            bytes += size;
            sql.push(format!(
                "INSERT INTO nodes (id, tenant_id, parent_id, kind, name_enc, name_index, \
                 mtime_ms, ctime_ms, version, size, object_key, content_id, wrapped_dek, \
                 key_version, chunk_size, content_hash_enc) VALUES ({id}, {tenant}, {root}, \
                 'f', X'02', X'{id:08x}', 1, 1, 1, {size}, 'key-{id}', X'03', X'04', 1, \
                 65536, X'05')"
            ));
        }
        sql.push(format!(
            "INSERT INTO nodes (id, tenant_id, parent_id, kind, name_enc, name_index, mtime_ms, \
             ctime_ms, version) VALUES ({}, {tenant}, {root}, 'd', X'06', X'06', 1, 1, 1)",
            root + 999
        ));
        expected[t] = (tenant, bytes, files);
    }
    (sql, expected)
}

/// A directory holding copies of the engine's migrations up to [`BEFORE_COUNT`] (the same
/// bytes, so the same checksums the full set records), and the directory to keep.
pub fn migrations_before_count(engine: &str) -> (PathBuf, tempfile::TempDir) {
    let all = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("migrations")
        .join(engine);
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(&all).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        let version: i64 = name.split('_').next().unwrap().parse().unwrap();
        if version <= BEFORE_COUNT {
            std::fs::copy(&path, dir.path().join(&name)).unwrap();
        }
    }
    (dir.path().to_path_buf(), dir)
}

/// Asserts that each tenant of [`rows_at_version_6`] has the usage its rows add up to, and
/// that a recount agrees.
pub async fn assert_counted(store: &impl NamespaceStore, expected: [(i64, i64, i64); 2]) {
    for (tenant, bytes, files) in expected {
        let usage = Usage { bytes, files };
        assert_eq!(store.usage(tenant).await.unwrap(), usage);
        let check = store.check_usage(tenant, false).await.unwrap();
        assert_eq!((check.recorded, check.counted), (usage, usage));
    }
}
