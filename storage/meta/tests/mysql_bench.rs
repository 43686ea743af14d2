//! Metadata-heavy workloads on SQLite and on MariaDB in one run, printing per-operation
//! medians: 10,000 files created in one folder, listing it, resolving a path 8 folders deep,
//! renaming a folder of 10 and of 10,000 files. Ignored by default (about a minute):
//! `cargo test --release -p coffer-meta --test mysql_bench -- --ignored --nocapture`.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use coffer_meta::{
    CommitFile, FileContent, MetadataStore, MySqlOptions, MySqlStore, MySqlTls, NewDir, NewTenant,
    RenameNode, SqliteStore, Tenant,
};

#[path = "support/mariadb.rs"]
mod mariadb;

const FILES: usize = 10_000;
const WRITERS: usize = 8;
const DEPTH: usize = 8;

/// Unique positive ids for one run.
fn next_id() -> i64 {
    static NEXT: AtomicI64 = AtomicI64::new(0);
    let base = i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_micros(),
    )
    .unwrap();
    let _ = NEXT.compare_exchange(0, base << 8, Ordering::Relaxed, Ordering::Relaxed);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

fn bytes(id: i64, len: usize) -> Vec<u8> {
    id.to_le_bytes().iter().copied().cycle().take(len).collect()
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort_unstable();
    samples[samples.len() / 2]
}

async fn new_tenant(store: &dyn MetadataStore) -> Tenant {
    let id = next_id();
    store
        .create_tenant(&NewTenant {
            id,
            name: format!("bench-{id}"),
            root_node_id: next_id(),
            root_name_enc: bytes(id, 40),
            root_name_index: bytes(id, 32),
            quota_bytes: None,
            keys: Vec::new(),
            master_keys: Vec::new(),
            now_ms: 0,
        })
        .await
        .unwrap()
}

async fn mkdir(store: &dyn MetadataStore, tenant: &Tenant, parent_id: i64) -> i64 {
    let id = next_id();
    store
        .create_dir(&NewDir {
            id,
            tenant_id: tenant.id,
            parent_id,
            name_enc: bytes(id, 40),
            name_index: bytes(id, 32),
            name_key_version: 1,
            now_ms: 0,
        })
        .await
        .unwrap()
        .id
}

fn file(tenant: &Tenant, parent_id: i64) -> CommitFile {
    let id = next_id();
    CommitFile {
        new_id: id,
        tenant_id: tenant.id,
        parent_id,
        name_enc: bytes(id, 60),
        name_index: bytes(id, 32),
        content: FileContent {
            size: 1_000,
            object_key: format!("{id:032x}"),
            content_id: bytes(id, 16),
            wrapped_dek: bytes(id, 72),
            key_version: 1,
            chunk_size: 65_536,
            content_hash_enc: bytes(id, 60),
            inline: false,
        },
        inline_object: None,
        mtime_ms: 0,
        now_ms: 0,
        expect_node: None,
        expect_absent: true,
        upload_id: None,
        enforce_quota: false,
    }
}

/// Creates `count` files in `folder` with `WRITERS` concurrent writers; returns the median
/// commit latency and the total time.
async fn create_files(
    store: Arc<dyn MetadataStore>,
    tenant: &Tenant,
    folder: i64,
    count: usize,
) -> (Duration, Duration) {
    let started = Instant::now();
    let mut writers = Vec::new();
    for _ in 0..WRITERS {
        let store = Arc::clone(&store);
        let tenant = tenant.clone();
        writers.push(tokio::spawn(async move {
            let mut samples = Vec::new();
            for _ in 0..count / WRITERS {
                let commit = file(&tenant, folder);
                let one = Instant::now();
                store.commit_file(&commit).await.unwrap();
                samples.push(one.elapsed());
            }
            samples
        }));
    }
    let mut samples = Vec::new();
    for writer in writers {
        samples.extend(writer.await.unwrap());
    }
    (median(samples), started.elapsed())
}

async fn workloads(label: &str, store: Arc<dyn MetadataStore>) {
    let tenant = new_tenant(&*store).await;
    let big = mkdir(&*store, &tenant, tenant.root_node_id).await;
    let (commit_median, total) = create_files(Arc::clone(&store), &tenant, big, FILES).await;

    let mut listings = Vec::new();
    for _ in 0..5 {
        let one = Instant::now();
        assert_eq!(store.children(tenant.id, big).await.unwrap().len(), FILES);
        listings.push(one.elapsed());
    }

    let mut chain = vec![(tenant.root_node_id, Vec::new())];
    for _ in 0..DEPTH {
        let parent = chain.last().unwrap().0;
        let id = next_id();
        store
            .create_dir(&NewDir {
                id,
                tenant_id: tenant.id,
                parent_id: parent,
                name_enc: bytes(id, 40),
                name_index: bytes(id, 32),
                name_key_version: 1,
                now_ms: 0,
            })
            .await
            .unwrap();
        chain.push((id, bytes(id, 32)));
    }
    let mut resolves = Vec::new();
    for _ in 0..50 {
        let one = Instant::now();
        let mut at = tenant.root_node_id;
        for (_, index) in &chain[1..] {
            at = store.child(tenant.id, at, index).await.unwrap().id;
        }
        resolves.push(one.elapsed());
        assert_eq!(at, chain.last().unwrap().0);
    }

    let small = mkdir(&*store, &tenant, tenant.root_node_id).await;
    create_files(Arc::clone(&store), &tenant, small, 16).await;
    let rename_median = |folder: i64| {
        let store = Arc::clone(&store);
        let tenant = tenant.clone();
        async move {
            let mut samples = Vec::new();
            for _ in 0..5 {
                let id = next_id();
                let one = Instant::now();
                store
                    .rename(&RenameNode {
                        tenant_id: tenant.id,
                        id: folder,
                        new_parent_id: tenant.root_node_id,
                        new_name_enc: bytes(id, 40),
                        new_name_index: bytes(id, 32),
                        name_key_version: 1,
                        other_name_index: None,
                        replace: false,
                        now_ms: 0,
                    })
                    .await
                    .unwrap();
                samples.push(one.elapsed());
            }
            median(samples)
        }
    };
    let rename_small = rename_median(small).await;
    let rename_big = rename_median(big).await;

    println!(
        "{label:>8}: create {FILES} files ({WRITERS} writers): {:.0} files/s, median commit {:?} | \
         list {FILES}: {:?} | resolve depth {DEPTH}: {:?} | rename folder of 16: {:?}, of {FILES}: {:?}",
        FILES as f64 / total.as_secs_f64(),
        commit_median,
        median(listings),
        median(resolves),
        rename_small,
        rename_big,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run with --ignored --nocapture"]
async fn metadata_workloads_on_sqlite_and_mariadb() {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = SqliteStore::open(dir.path().join("meta.db").to_str().unwrap())
        .await
        .unwrap();
    sqlite.migrate().await.unwrap();
    workloads("sqlite", Arc::new(sqlite)).await;

    let Some(server) = mariadb::shared() else {
        return;
    };
    let url = server.fresh_database().await;
    let mysql = MySqlStore::open(&MySqlOptions {
        tls: MySqlTls::Disable,
        pool_size: 16,
        ..MySqlOptions::new(url)
    })
    .await
    .unwrap();
    mysql.migrate().await.unwrap();
    workloads("mariadb", Arc::new(mysql)).await;
}
