//! Runs the metadata conformance suite against SQLite, on a file and in memory, plus the
//! SQLite-only properties: persistence, schema versioning and the absence of plaintext names.

use coffer_meta::{MetaError, NamespaceStore, NewTenant, SqliteStore, TenantStore, conformance};
use sqlx::{Connection, SqliteConnection};
use tempfile::TempDir;

#[path = "support/tenant.rs"]
mod tenant;
#[path = "support/usage.rs"]
mod usage;

/// A migrated store on a fresh database file, and the directory keeping the file alive.
async fn file_store() -> (SqliteStore, TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("meta.db").display());
    let store = SqliteStore::open(&url).await.unwrap();
    store.migrate().await.unwrap();
    (store, dir)
}

async fn memory_store() -> SqliteStore {
    let store = SqliteStore::open_in_memory().await.unwrap();
    store.migrate().await.unwrap();
    store
}

/// A direct connection to the database file, beside the store, for inspecting raw rows.
async fn raw_connection(dir: &TempDir) -> SqliteConnection {
    let url = format!("sqlite://{}", dir.path().join("meta.db").display());
    SqliteConnection::connect(&url).await.unwrap()
}

macro_rules! conformance_tests {
    ($($behaviour:ident),* $(,)?) => {
        mod on_file {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $behaviour() {
                    let (store, _dir) = super::file_store().await;
                    coffer_meta::conformance::$behaviour(&store).await;
                }
            )*
        }
        mod in_memory {
            $(
                #[tokio::test]
                async fn $behaviour() {
                    let store = super::memory_store().await;
                    coffer_meta::conformance::$behaviour(&store).await;
                }
            )*
        }
    };
}

coffer_meta::for_each_check!(conformance_tests);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_suite_runs_twice_on_one_database() {
    let (store, _dir) = file_store().await;
    conformance::run_all(&store).await;
    conformance::run_all(&store).await;
}

/// Point reads and file commits of a file store run in place, on the calling thread
/// (`in_place.rs`, `sql/commit_in_place.rs`): the whole suite, whose checks compare what is
/// read with what was written, passes with them, and both were used; an in-memory store reads
/// and commits everything through its pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn point_reads_and_commits_of_a_file_store_run_in_place_and_pass_the_whole_suite() {
    let (store, _dir) = file_store().await;
    conformance::run_all(&store).await;
    let (reads, commits) = (store.reads_in_place(), store.writes_in_place());
    println!("answered in place during the suite: {reads} reads, {commits} commits");
    assert!(reads > 0, "no read was answered in place");
    assert!(commits > 0, "no commit was made in place");
    let memory = memory_store().await;
    conformance::run_all(&memory).await;
    assert_eq!((memory.reads_in_place(), memory.writes_in_place()), (0, 0));
}

/// Each commit an upload makes (a new name, a replace of the version read) is made in place on
/// a file store: the four that succeed in `commits_as_uploads_make_them`, and none of its
/// refusals (those roll back, or are answered by the pool).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_commits_of_a_file_store_are_made_in_place() {
    let (store, _dir) = file_store().await;
    conformance::commits_as_uploads_make_them(&store).await;
    assert_eq!(store.writes_in_place(), 4);
}

/// A usage count changed behind the store's back is found by `check_usage` and recounted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drifted_usage_count_is_found_and_recounted() {
    let (store, dir) = file_store().await;
    conformance::usage_drift_is_found_and_recounted(&store, |tenant_id| async move {
        let mut raw = raw_connection(&dir).await;
        sqlx::query(usage::DRIFT)
            .bind(tenant_id)
            .bind(conformance::DRIFT_BYTES)
            .execute(&mut raw)
            .await
            .unwrap();
    })
    .await;
}

/// Migration 7 counts the files a database already holds: each tenant's usage, read from the
/// new count, is what its file rows add up to, and `check_usage` agrees.
#[tokio::test]
async fn migrating_to_the_usage_count_counts_the_files_already_there() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("meta.db").display());
    let (before, _keep) = usage::migrations_before_count("sqlite");
    let mut raw = SqliteConnection::connect(&url).await.unwrap();
    sqlx::migrate::Migrator::new(before.as_path())
        .await
        .unwrap()
        .run(&mut raw)
        .await
        .unwrap();
    let (rows, expected) = usage::rows_at_version_6();
    for sql in rows {
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut raw)
            .await
            .unwrap();
    }
    raw.close().await.unwrap();

    let store = SqliteStore::open(&url).await.unwrap();
    assert_eq!(
        store.schema_version().await.unwrap(),
        Some(usage::BEFORE_COUNT)
    );
    store.migrate().await.unwrap();
    usage::assert_counted(&store, expected).await;
}

/// The tenant most tests create (id 4242).
fn tenant_spec(name: &str) -> NewTenant {
    tenant::tenant_spec(4_242, name)
}

#[tokio::test]
async fn reopening_the_file_keeps_committed_rows() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meta.db");
    let first = SqliteStore::open(path.to_str().unwrap()).await.unwrap();
    first.migrate().await.unwrap();
    let created = first.create_tenant(&tenant_spec("acme")).await.unwrap();
    drop(first);

    let again = SqliteStore::open(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    again.migrate().await.unwrap();
    assert_eq!(again.tenant_by_name("acme").await.unwrap(), created);
    let root = again.node(created.id, created.root_node_id).await.unwrap();
    assert_eq!(root.name_enc, vec![1, 2, 3]);
    assert_eq!(
        again.schema_version().await.unwrap(),
        Some(SqliteStore::supported_schema_version())
    );
}

#[tokio::test]
async fn database_from_a_newer_build_is_refused() {
    let (store, dir) = file_store().await;
    let future = SqliteStore::supported_schema_version() + 1;
    let mut raw = raw_connection(&dir).await;
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (?, 'from the future', TRUE, X'00', 0)",
    )
    .bind(future)
    .execute(&mut raw)
    .await
    .unwrap();

    match store.migrate().await {
        Err(MetaError::SchemaTooNew { found, supported }) => {
            assert_eq!(found, future);
            assert_eq!(supported, SqliteStore::supported_schema_version());
        }
        other => panic!("expected SchemaTooNew, got {other:?}"),
    }
}

#[tokio::test]
async fn fresh_database_reports_no_schema_until_migrated() {
    let store = SqliteStore::open_in_memory().await.unwrap();
    assert_eq!(store.schema_version().await.unwrap(), None);
    assert!(matches!(
        store.tenant_by_name("x").await,
        Err(MetaError::Database(_))
    ));
    store.migrate().await.unwrap();
    store.migrate().await.unwrap();
    assert_eq!(
        store.schema_version().await.unwrap(),
        Some(SqliteStore::supported_schema_version())
    );
}

#[tokio::test]
async fn unreachable_database_file_is_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let missing_parent = dir.path().join("no-such-dir").join("meta.db");
    match SqliteStore::open(missing_parent.to_str().unwrap()).await {
        Err(MetaError::Unavailable(_)) => {}
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

/// Names reach the database only as the caller's opaque blobs: the `nodes` table has no
/// text column that could hold a name or a path, and the blobs are stored as given.
#[tokio::test]
async fn no_plaintext_columns() {
    let (store, dir) = file_store().await;
    let marker = b"PLAINTEXT-MARKER".to_vec();
    let spec = NewTenant {
        root_name_enc: marker.clone(),
        root_name_index: [marker.clone(), vec![0; 16]].concat(),
        ..tenant_spec("marker")
    };
    store.create_tenant(&spec).await.unwrap();

    let mut raw = raw_connection(&dir).await;
    let columns: Vec<(String, String)> =
        sqlx::query_as("SELECT name, type FROM pragma_table_info('nodes')")
            .fetch_all(&mut raw)
            .await
            .unwrap();
    assert!(columns.len() >= 10, "nodes columns: {columns:?}");
    for (column, kind) in &columns {
        let lower = column.to_lowercase();
        // `name_key_version` is the number of the key version a name is under, not a name.
        let names_something =
            (lower.contains("name") || lower.contains("path")) && column != "name_key_version";
        if names_something {
            assert_eq!(kind, "BLOB", "nodes.{column} must be an opaque blob");
        }
        if kind == "TEXT" {
            assert!(
                ["kind", "object_key"].contains(&column.as_str()),
                "unexpected text column nodes.{column}"
            );
        }
    }
    let mut name_columns: Vec<&str> = columns
        .iter()
        .map(|(c, _)| c.as_str())
        .filter(|c| c.contains("name"))
        .collect();
    name_columns.sort_unstable();
    assert_eq!(name_columns, ["name_enc", "name_index", "name_key_version"]);

    let any_path_column: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM sqlite_master m, pragma_table_info(m.name) c \
         WHERE m.type = 'table' AND lower(c.name) LIKE '%path%'",
    )
    .fetch_one(&mut raw)
    .await
    .unwrap();
    assert_eq!(any_path_column, 0, "no table stores a path");

    let (stored, stored_type): (Vec<u8>, String) =
        sqlx::query_as("SELECT name_enc, typeof(name_enc) FROM nodes WHERE id = ?")
            .bind(spec.root_node_id)
            .fetch_one(&mut raw)
            .await
            .unwrap();
    assert_eq!(stored, marker);
    assert_eq!(stored_type, "blob");
}

/// A file store's write-ahead log is copied back into the database file by the store's
/// checkpoint thread (`checkpoint.rs`), not in a commit: after 150 files' commits, fewer log
/// pages than the writers' own checkpoint waits for, the rows are in the database file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checkpoint_thread_copies_committed_files_into_the_database_file() {
    use coffer_meta::{CommitFile, FileContent};
    let (store, dir) = file_store().await;
    let t = store
        .create_tenant(&tenant::tenant_spec(7, "checkpoints"))
        .await
        .unwrap();
    let db = dir.path().join("meta.db");
    let before = std::fs::metadata(&db).unwrap().len();
    const FILES: i64 = 150;
    const SEALED: usize = 4_200;
    for i in 0..FILES {
        let mut name_index = vec![0; 32];
        name_index[..8].copy_from_slice(&i.to_be_bytes());
        let file = CommitFile {
            new_id: 1_000 + i,
            tenant_id: t.id,
            parent_id: t.root_node_id,
            name_enc: vec![1; 40],
            name_index,
            content: FileContent {
                size: 4_096,
                object_key: format!("{i:032x}"),
                content_id: vec![3; 16],
                wrapped_dek: vec![4; 72],
                key_version: 1,
                chunk_size: 65_536,
                content_hash_enc: vec![5; 60],
                inline: true,
            },
            inline_object: Some(vec![6; SEALED]),
            mtime_ms: 1_700_000_000_000,
            now_ms: 1_700_000_000_000,
            expect_node: None,
            expect_absent: true,
            upload_id: None,
            enforce_quota: false,
        };
        assert!(store.commit_file(&file).await.unwrap().created);
    }
    assert_eq!(store.writes_in_place(), FILES as u64);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while store.checkpoints_made() == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "no checkpoint after {FILES} commits"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    // At least the first 64 commits' rows were copied, and only the thread copies this early.
    let grown = std::fs::metadata(&db).unwrap().len() - before;
    assert!(
        grown >= 64 * SEALED as u64,
        "the database file grew by {grown} bytes only"
    );
    store.close().await;
}
