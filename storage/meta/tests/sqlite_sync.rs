//! How the SQLite store makes a commit durable: with `fdatasync`, never `fsync`, and a file's
//! commit made in place (`in_place.rs`) syncs the write-ahead log before it returns.
//!
//! The SQLite that libsqlite3-sys bundles calls `fsync` unless it is compiled with
//! `HAVE_FDATASYNC`; the workspace's `.cargo/config.toml` sets that flag (docs/PERFORMANCE.md,
//! "fdatasync for SQLite's commits"). Nothing inside the process can tell which call SQLite
//! makes, so this test runs a child process (this test binary again) under `strace` and reads
//! the system calls it made: a build that lost the flag fails here. `strace` is one of the
//! packages `integration/run-tests` installs; `COFFER_SKIP_STRACE=1` skips the test where it
//! cannot run, and a missing `strace` otherwise fails it.

use std::process::{Command, Stdio};

use coffer_meta::{CommitFile, FileContent, NamespaceStore, SqliteStore, TenantStore};

#[path = "support/tenant.rs"]
mod tenant;

use tenant::tenant_spec;

/// Set in the child's environment: the directory to commit in.
const CHILD_DIR: &str = "COFFER_SQLITE_SYNC_CHILD_DIR";
/// Files the child creates just before and just after the file's commit.
const COMMIT_BEGINS: &str = "commit-begins.marker";
const COMMIT_ENDS: &str = "commit-ends.marker";
const TEST_NAME: &str = "a_sqlite_commit_is_made_durable_with_fdatasync_not_fsync";

#[test]
fn a_sqlite_commit_is_made_durable_with_fdatasync_not_fsync() {
    if let Ok(dir) = std::env::var(CHILD_DIR) {
        commit_one_tenant(&dir);
        return;
    }
    if std::env::var("COFFER_SKIP_STRACE").is_ok_and(|v| v == "1") {
        eprintln!("COFFER_SKIP_STRACE=1: not checking which sync SQLite calls");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("strace.out");
    let status = Command::new("strace")
        .args(["-f", "-qq", "-y", "-e", "trace=fsync,fdatasync,openat", "-o"])
        .arg(&trace)
        .arg(std::env::current_exe().unwrap())
        .args(["--exact", TEST_NAME, "--test-threads=1"])
        .env(CHILD_DIR, dir.path())
        .stdout(Stdio::null())
        .status()
        .expect("strace must be installed (integration/run-tests installs it); COFFER_SKIP_STRACE=1 skips this test");
    assert!(status.success(), "the child under strace failed: {status}");
    let calls = std::fs::read_to_string(&trace).unwrap();
    let fdatasyncs = calls.lines().filter(|l| l.contains("fdatasync(")).count();
    let fsyncs: Vec<&str> = calls
        .lines()
        .filter(|l| l.contains("fsync(") && !l.contains("fdatasync("))
        .collect();
    // Opening a new database, migrating it and one commit: several syncs of the WAL and of
    // the database file at the checkpoint.
    assert!(
        fdatasyncs >= 1,
        "the commits made no fdatasync call at all:\n{calls}"
    );
    assert!(
        fsyncs.is_empty(),
        "SQLite called fsync (built without HAVE_FDATASYNC?):\n{}",
        fsyncs.join("\n")
    );
    // The file's commit (made in place: the child checks) synced the write-ahead log before
    // it returned: between the marker files the child opens around it (`synchronous=FULL` on
    // the in-place connection too; closing the store syncs again, after the second marker).
    let lines: Vec<&str> = calls.lines().collect();
    let marker = |name: &str| {
        lines
            .iter()
            .position(|l| l.contains("openat(") && l.contains(name))
            .unwrap_or_else(|| panic!("no {name} in the trace:\n{calls}"))
    };
    let (begins, ends) = (marker(COMMIT_BEGINS), marker(COMMIT_ENDS));
    assert!(
        lines[begins..ends]
            .iter()
            .any(|l| l.contains("fdatasync(") && l.contains("meta.db-wal>")),
        "the file's commit made in place did not sync the write-ahead log:\n{}",
        lines[begins..=ends].join("\n")
    );
}

/// The child: a new database file, its schema, one tenant and one file committed, closed.
fn commit_one_tenant(dir: &str) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let path = std::path::Path::new(dir).join("meta.db");
        let store = SqliteStore::open(path.to_str().unwrap()).await.unwrap();
        store.migrate().await.unwrap();
        let tenant = store.create_tenant(&tenant_spec(7, "sync")).await.unwrap();
        let file = CommitFile {
            new_id: 100,
            tenant_id: tenant.id,
            parent_id: tenant.root_node_id,
            name_enc: vec![1; 40],
            name_index: vec![2; 32],
            content: FileContent {
                size: 4,
                object_key: "0123456789abcdef0123456789abcdef".into(),
                content_id: vec![3; 16],
                wrapped_dek: vec![4; 72],
                key_version: 1,
                chunk_size: 65_536,
                content_hash_enc: vec![5; 60],
                inline: false,
            },
            inline_object: Some(vec![6; 60]),
            mtime_ms: 1_700_000_000_000,
            now_ms: 1_700_000_000_000,
            expect_node: None,
            expect_absent: true,
            upload_id: None,
            enforce_quota: true,
        };
        let marker = |name: &str| std::fs::File::create(std::path::Path::new(dir).join(name));
        marker(COMMIT_BEGINS).unwrap();
        assert!(store.commit_file(&file).await.unwrap().created);
        marker(COMMIT_ENDS).unwrap();
        assert_eq!(store.writes_in_place(), 1, "the commit was made in place");
        store.close().await;
    });
}
