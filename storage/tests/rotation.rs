//! Rotation of a tenant's key at the Vault level, on SQLite and on MariaDB: online (another
//! task uploads, replaces, lists and reads throughout and nothing fails), complete (every
//! file reads back byte-identical, names list as they were, no row is left under the old
//! version, the old version's wrapped copies are gone) and resumable (a rotation stopped
//! after a few batches, or dropped mid-batch, is finished by another process).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

#[path = "../meta/tests/support/mariadb.rs"]
mod mariadb;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use coffer_keys::{KeyRing, LocalKeyProvider};
use coffer_meta::{MetadataStore, MySqlOptions, MySqlStore, MySqlTls};
use coffer_object::LocalDirStore;
use coffer_storage::{
    Backends, ErrorKind, LockoutPolicy, Password, Permissions, RotateOptions, VPath, Vault,
    VaultOptions, Vfs,
};
use common::{bytes, get, put};

/// Folders the tree is spread over.
const FOLDERS: usize = 8;

/// Files made before the rotation: `default`, or `COFFER_ROTATION_FILES` (a multiple of
/// `FOLDERS`) for a measurement.
fn files_or(default: usize) -> usize {
    std::env::var("COFFER_ROTATION_FILES")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .map_or(default, |n| n.div_ceil(FOLDERS) * FOLDERS)
}

/// A vault on MariaDB with its stores and keys under `root`.
async fn mariadb_vault(root: &Path, url: &str, node: &str) -> (Vault, Arc<dyn MetadataStore>) {
    let meta = MySqlStore::open(&MySqlOptions {
        tls: MySqlTls::Disable,
        pool_size: 6,
        connect_timeout: Duration::from_secs(3),
        ..MySqlOptions::new(url)
    })
    .await
    .unwrap();
    meta.migrate().await.unwrap();
    let meta: Arc<dyn MetadataStore> = Arc::new(meta);
    let keys = KeyRing::new(
        Arc::new(LocalKeyProvider::load_or_create(&root.join("keys/primary.key")).unwrap()),
        Some(Arc::new(
            LocalKeyProvider::load_or_create(&root.join("keys/replica.key")).unwrap(),
        )),
    );
    let backends = Backends {
        meta: meta.clone(),
        primary: Arc::new(LocalDirStore::open(&root.join("store/primary")).unwrap()),
        replica: Some(Arc::new(
            LocalDirStore::open(&root.join("store/replica")).unwrap(),
        )),
        keys,
    };
    let options = VaultOptions {
        chunk_size: common::CHUNK,
        spool_dir: root.join(format!("spool-{node}")),
        node_name: node.into(),
        max_buffered_write_bytes: 8 * 1024 * 1024,
        lockout: LockoutPolicy::default(),
        partial_uploads: coffer_storage::PartialUploads::KeepNewFiles,
        key_cache: coffer_storage::DEFAULT_KEY_CACHE,
        free_space_floor: coffer_storage::FreeSpaceFloor::NONE,
        local_store_dir: Some(root.join("store/primary")),
        inline_max_bytes: coffer_storage::DEFAULT_INLINE_MAX_BYTES,
    };
    (Vault::open(backends, options).await.unwrap(), meta)
}

async fn session(vault: &Vault, tenant: &str, user: &str) -> Vfs {
    let t = vault.create_tenant(tenant, None).await.unwrap();
    vault
        .create_user(
            &t,
            user,
            Some(&Password::new(format!("pw-{user}-secret"))),
            &VPath::parse("/").unwrap(),
            Permissions::ALL,
        )
        .await
        .unwrap();
    vault.operator_session(user).await.unwrap()
}

/// An awkward name for file `i`.
fn name(i: usize) -> String {
    format!("f{i:05} &+-é\" .txt")
}

fn path(i: usize) -> String {
    format!("/d{} ü/{}", i % FOLDERS, name(i))
}

fn content(i: usize) -> Vec<u8> {
    bytes(20 + (i * 37) % 9000, i as u64)
}

/// `files` small files over `FOLDERS` folders; returns what each path holds.
async fn fill(vfs: &Vfs, files: usize) -> BTreeMap<String, Vec<u8>> {
    for d in 0..FOLDERS {
        vfs.mkdir(&format!("/d{d} ü")).await.unwrap();
    }
    let mut expected = BTreeMap::new();
    for i in 0..files {
        put(vfs, &path(i), &content(i)).await;
        expected.insert(path(i), content(i));
    }
    expected
}

/// What the client task did while the rotation ran.
#[derive(Default)]
struct Traffic {
    ops: AtomicU64,
    failures: AtomicU64,
}

/// Uploads new files, replaces old ones, renames, lists folders and reads files back, until
/// `stop`; every operation must succeed. Returns what it wrote.
async fn client(
    vfs: Vfs,
    files: usize,
    stop: Arc<AtomicBool>,
    traffic: Arc<Traffic>,
) -> BTreeMap<String, Vec<u8>> {
    let mut wrote = BTreeMap::new();
    let mut n = 0usize;
    while !stop.load(Ordering::Relaxed) {
        let i = n % files;
        let new_path = format!("/d{} ü/new {n} é.bin", n % FOLDERS);
        let data = bytes(10 + n % 3000, 1_000_000 + n as u64);
        let fail = |what: &str, e: coffer_storage::VfsError| {
            traffic.failures.fetch_add(1, Ordering::Relaxed);
            eprintln!("client {what} failed: {e}");
        };
        // A new file, then a replacement of one the rotation may not have reached yet.
        match upload(&vfs, &new_path, &data).await {
            Ok(()) => {
                wrote.insert(new_path, data);
            }
            Err(e) => fail("upload", e),
        }
        if n.is_multiple_of(3) {
            let replaced = bytes(33 + n % 500, 2_000_000 + n as u64);
            match upload(&vfs, &path(i), &replaced).await {
                Ok(()) => {
                    wrote.insert(path(i), replaced);
                }
                Err(e) => fail("replace", e),
            }
        }
        match vfs.list(&format!("/d{} ü", n % FOLDERS)).await {
            Ok(entries)
                if entries.iter().any(|e| e.name == name(i)) || i % FOLDERS != n % FOLDERS => {}
            Ok(_) => fail(
                "list",
                coffer_storage::VfsError::new(ErrorKind::NotFound, "a name is missing"),
            ),
            Err(e) => fail("list", e),
        }
        if let Err(e) = get(&vfs, &path(i)).await {
            fail("read", e);
        }
        if let Err(e) = vfs.stat(&path((i * 7 + 3) % files)).await {
            fail("stat", e);
        }
        traffic.ops.fetch_add(1, Ordering::Relaxed);
        n += 1;
    }
    wrote
}

async fn upload(vfs: &Vfs, path: &str, data: &[u8]) -> coffer_storage::VfsResult<()> {
    let mut w = vfs
        .create(
            path,
            coffer_storage::WriteOptions {
                truncate: true,
                exclusive: false,
            },
        )
        .await?;
    w.write_at(0, data).await?;
    w.commit().await.map(|_| ())
}

/// Every path reads back as expected and every folder lists exactly the expected names.
async fn check_tree(vfs: &Vfs, expected: &BTreeMap<String, Vec<u8>>) {
    for (p, data) in expected {
        assert_eq!(&get(vfs, p).await.unwrap(), data, "{p}");
    }
    for d in 0..FOLDERS {
        let folder = format!("/d{d} ü");
        let mut listed: Vec<String> = vfs
            .list(&folder)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .collect();
        listed.sort();
        let mut want: Vec<String> = expected
            .keys()
            .filter_map(|p| p.strip_prefix(&format!("{folder}/")).map(str::to_owned))
            .collect();
        want.sort();
        assert_eq!(listed, want, "{folder}");
    }
}

/// No row under `old`, only `new`'s wrapped copies left.
async fn assert_fully_rotated(meta: &dyn MetadataStore, tenant_id: i64, old: u32, new: u32) {
    assert_eq!(
        meta.count_under_key_version(tenant_id, old).await.unwrap(),
        0
    );
    let versions: Vec<u32> = meta
        .tenant_keys(tenant_id)
        .await
        .unwrap()
        .iter()
        .map(|k| k.version)
        .collect();
    assert_eq!(
        versions,
        [new, new],
        "only the new version's two copies are left"
    );
    assert_eq!(meta.key_rotation(tenant_id).await.unwrap(), None);
}

/// The whole scenario on one engine. The client runs in `client_vault`, another process on
/// the same stores: it read the tenant's key versions a moment before the rotation began, and
/// still holds them while the first rows move.
async fn rotates_online(
    vault: Vault,
    client_vault: Vault,
    meta: Arc<dyn MetadataStore>,
    files: usize,
    engine: &str,
) {
    let vfs = session(&vault, "rot", "rot-user").await;
    let began = Instant::now();
    let mut expected = fill(&vfs, files).await;
    eprintln!("{engine}: {files} files made in {:?}", began.elapsed());
    let tenant = vault.admin().tenant("rot").await.unwrap();
    assert_eq!(tenant.key_version, 1);

    let stop = Arc::new(AtomicBool::new(false));
    let traffic = Arc::new(Traffic::default());
    let other = client_vault.operator_session("rot-user").await.unwrap();
    let task = tokio::spawn(client(other, files, stop.clone(), traffic.clone()));
    // Let the client get going under version 1 first.
    tokio::time::sleep(Duration::from_millis(300)).await;

    // (when, rows rewritten) after every batch: the rate is measured up to the batch that
    // rewrote the last row, without the grace period before the old version is destroyed.
    let mut marks: Vec<(Instant, i64)> = Vec::new();
    let mut on_batch =
        |p: &coffer_storage::RotationProgress| marks.push((Instant::now(), p.rewritten));
    let began = Instant::now();
    let report = vault
        .admin()
        .rotate_tenant_key(
            "rot",
            RotateOptions {
                batch: 200,
                max_batches: None,
            },
            &mut on_batch,
        )
        .await
        .unwrap();
    let took = began.elapsed();
    stop.store(true, Ordering::Relaxed);
    let wrote = task.await.unwrap();
    let last = marks.last().map_or(0, |m| m.1);
    let full = marks.iter().find(|m| m.1 == last).map_or(began, |m| m.0);
    let scan = full.duration_since(began);
    eprintln!(
        "{engine}: rotated {} rows in {scan:?} ({:.0} rows/s; {took:?} with the grace before \
         the old version is destroyed; {} passes, {} batches) while the client did {} rounds",
        report.rewritten_now,
        report.rewritten_now as f64 / scan.as_secs_f64().max(0.001),
        report.progress.pass,
        marks.len(),
        traffic.ops.load(Ordering::Relaxed),
    );
    assert_eq!(
        traffic.failures.load(Ordering::Relaxed),
        0,
        "no client operation failed"
    );
    assert!(traffic.ops.load(Ordering::Relaxed) > 0);
    assert!(report.started && report.finished);
    assert_eq!(
        (report.progress.from_version, report.progress.to_version),
        (1, 2)
    );
    assert_eq!(report.destroyed_copies, 2);
    assert!(report.rewritten_now >= files as u64);
    expected.extend(wrote);

    assert_fully_rotated(&*meta, tenant.id, 1, 2).await;
    // A fresh process (no cached keys) reads everything with version 2 alone.
    check_tree(&vfs, &expected).await;
    let status = vault.admin().key_status(365).await.unwrap();
    let t = status.tenants.iter().find(|t| t.tenant == "rot").unwrap();
    assert_eq!(t.current_version, 2);
    assert!(t.rotation.is_none());
    assert_eq!(
        t.versions.iter().map(|v| v.version).collect::<Vec<_>>(),
        [2]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_rotation_of_thousands_of_files_while_a_client_uploads_and_lists() {
    let tv = common::vault().await;
    let client_vault = tv.other_process().await;
    rotates_online(
        tv.vault.clone(),
        client_vault,
        tv.meta.clone(),
        files_or(3_000),
        "sqlite",
    )
    .await;
    // A second process, with nothing cached, reads under the new version alone.
    let fresh = tv.other_process().await;
    let vfs = fresh.operator_session("rot-user").await.unwrap();
    assert!(!get(&vfs, &path(5)).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_rotation_of_thousands_of_files_while_a_client_uploads_and_lists() {
    let Some(server) = mariadb::shared() else {
        return;
    };
    let url = server.fresh_database().await;
    let dir = tempfile::tempdir().unwrap();
    let (vault, meta) = mariadb_vault(dir.path(), &url, "rot-node").await;
    let (client_vault, _) = mariadb_vault(dir.path(), &url, "rot-client-node").await;
    rotates_online(vault, client_vault, meta, files_or(2_000), "mariadb").await;
}

/// A rotation stopped after two batches is visible in the status, leaves every file
/// readable under either version (lookups find both), is resumed by another process, and
/// finishes; one dropped in the middle of a batch resumes too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_rotation_resumes_and_finishes() {
    let tv = common::vault().await;
    let vfs = session(&tv.vault, "halt", "halt-user").await;
    let files = 600;
    let mut expected = fill(&vfs, files).await;
    let t = tv.vault.admin().tenant("halt").await.unwrap();
    let admin = tv.vault.admin();
    let two = RotateOptions {
        batch: 50,
        max_batches: Some(2),
    };
    let stopped = admin
        .rotate_tenant_key("halt", two, &mut |_| {})
        .await
        .unwrap();
    assert!(stopped.started && !stopped.finished);
    assert_eq!(stopped.progress.rewritten, 100);

    // Status shows it; both versions' copies are there.
    let status = admin.key_status(365).await.unwrap();
    let ts = status.tenants.iter().find(|s| s.tenant == "halt").unwrap();
    let p = ts.rotation.as_ref().expect("rotation in progress");
    assert_eq!((p.from_version, p.to_version, p.rewritten), (1, 2, 100));
    assert_eq!(p.total, files as i64 + FOLDERS as i64 + 1);
    assert_eq!(ts.versions.len(), 2);

    // Mixed state: old and new rows are all found, listed and read; changes work on both.
    check_tree(&vfs, &expected).await;
    // Ids are random, so which rows the two batches reached is found by asking.
    let mut versions = Vec::with_capacity(files);
    for i in 0..files {
        versions.push(name_version(&tv.meta, t.id, &vfs, &path(i)).await);
    }
    let old_i = versions
        .iter()
        .position(|v| *v == 1)
        .expect("a row under version 1");
    let new_i = versions
        .iter()
        .position(|v| *v == 2)
        .expect("a row under version 2");
    // Overwrite an old-version file: replaced in place, no second entry of that name.
    put(&vfs, &path(old_i), b"replaced while half rotated").await;
    expected.insert(path(old_i), b"replaced while half rotated".to_vec());
    // A folder of a name still under the old version cannot be made twice.
    let dir_of = format!("/d{} ü", old_i % FOLDERS);
    let again = vfs
        .mkdir(&format!("{dir_of}/{}", name(old_i)))
        .await
        .unwrap_err();
    assert_eq!(again.kind(), ErrorKind::AlreadyExists, "{again}");
    // Rename a new-version file onto an old-version one: it replaces it.
    let target =
        (0..files).find(|&i| i != old_i && i % FOLDERS == new_i % FOLDERS && versions[i] == 1);
    let target = target.expect("an old-version file in the same folder");
    vfs.rename(&path(new_i), &path(target), true).await.unwrap();
    let moved = expected.remove(&path(new_i)).unwrap();
    expected.insert(path(target), moved);
    check_tree(&vfs, &expected).await;

    // A run dropped in the middle (a crash of its process) leaves the rotation resumable.
    let dropped = tokio::time::timeout(
        Duration::from_millis(30),
        admin.rotate_tenant_key(
            "halt",
            RotateOptions {
                batch: 20,
                max_batches: None,
            },
            &mut |_| {},
        ),
    )
    .await;
    assert!(dropped.is_err(), "the run was cut off");

    // Another process resumes and finishes.
    let other = tv.other_process().await;
    let report = other
        .admin()
        .rotate_tenant_key("halt", RotateOptions::default(), &mut |_| {})
        .await
        .unwrap();
    assert!(!report.started && report.finished, "{report:?}");
    assert_fully_rotated(&*tv.meta, t.id, 1, 2).await;
    check_tree(&vfs, &expected).await;
    let vfs_other = other.operator_session("halt-user").await.unwrap();
    check_tree(&vfs_other, &expected).await;

    // Rotating again makes version 3 from version 2.
    let again = other
        .admin()
        .rotate_tenant_key("halt", RotateOptions::default(), &mut |_| {})
        .await
        .unwrap();
    assert_eq!(
        (again.progress.from_version, again.progress.to_version),
        (2, 3)
    );
    assert_fully_rotated(&*tv.meta, t.id, 2, 3).await;
    check_tree(&vfs, &expected).await;
}

/// The name key version of the row at `path`.
async fn name_version(meta: &Arc<dyn MetadataStore>, tenant_id: i64, vfs: &Vfs, path: &str) -> u32 {
    let info = vfs.stat(path).await.unwrap();
    meta.node(tenant_id, info.id)
        .await
        .unwrap()
        .name_key_version
}
