//! How the SQLite store makes a commit durable: with `fdatasync`, never `fsync`.
//!
//! The SQLite that libsqlite3-sys bundles calls `fsync` unless it is compiled with
//! `HAVE_FDATASYNC`; the workspace's `.cargo/config.toml` sets that flag (docs/PERFORMANCE.md,
//! "fdatasync for SQLite's commits"). Nothing inside the process can tell which call SQLite
//! makes, so this test runs a child process (this test binary again) under `strace` and reads
//! the system calls it made: a build that lost the flag fails here. `strace` is one of the
//! packages `integration/run-tests` installs; `COFFER_SKIP_STRACE=1` skips the test where it
//! cannot run, and a missing `strace` otherwise fails it.

use std::process::{Command, Stdio};

use coffer_meta::{SqliteStore, TenantStore};

#[path = "support/tenant.rs"]
mod tenant;

use tenant::tenant_spec;

/// Set in the child's environment: the directory to commit in.
const CHILD_DIR: &str = "COFFER_SQLITE_SYNC_CHILD_DIR";
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
        .args(["-f", "-qq", "-e", "trace=fsync,fdatasync", "-o"])
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
}

/// The child: a new database file, its schema, one tenant committed, closed.
fn commit_one_tenant(dir: &str) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let path = std::path::Path::new(dir).join("meta.db");
        let store = SqliteStore::open(path.to_str().unwrap()).await.unwrap();
        store.migrate().await.unwrap();
        store.create_tenant(&tenant_spec(7, "sync")).await.unwrap();
        store.close().await;
    });
}
