//! Small objects in their metadata row (`uploads.inline_max_bytes`), over real SQLite and
//! local directory stores: nothing reaches the primary store, reads are verified like any
//! object's, the replica still gets a verified copy, and replace, delete, garbage collection,
//! fsck, shredding and read repair treat them like any object.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use coffer_format::Layout;
use coffer_storage::{ErrorKind, GarbageAges};
use common::{CHUNK, TestVault, bytes, get, put, vault_inlining};
use sqlx::Connection;
use sqlx::sqlite::SqliteConnection;

/// Sealed bytes of a file of `size` plaintext bytes in the test vault.
fn sealed_len(size: u64) -> u64 {
    Layout::new(CHUNK).unwrap().object_len(size)
}

/// A connection of its own to the vault's database, as an operator's `sqlite3` would open it.
async fn raw_db(tv: &TestVault) -> SqliteConnection {
    let url = format!("sqlite://{}", tv.root().join("meta.db").display());
    SqliteConnection::connect(&url).await.unwrap()
}

/// (object_key, inline bytes) of every row that holds its object.
async fn inline_rows(tv: &TestVault) -> Vec<(String, Vec<u8>)> {
    let mut db = raw_db(tv).await;
    sqlx::query_as(
        "SELECT object_key, inline_object FROM nodes WHERE inline_object IS NOT NULL \
         ORDER BY object_key",
    )
    .fetch_all(&mut db)
    .await
    .unwrap()
}

/// The replica's copy of `key`.
fn replica_copy(tv: &TestVault, key: &str) -> Option<Vec<u8>> {
    tv.replica_objects()
        .into_iter()
        .find(|p| p.file_name().is_some_and(|n| n == key))
        .map(|p| std::fs::read(p).unwrap())
}

const THRESHOLD_FILE: u64 = 5_000;

/// A vault that inlines objects of files up to `THRESHOLD_FILE` bytes, not one byte more.
async fn vault() -> TestVault {
    vault_inlining(sealed_len(THRESHOLD_FILE) as u32).await
}

#[tokio::test]
async fn a_small_upload_lives_in_its_row_reads_back_and_is_replicated_verified() {
    let tv = vault().await;
    let vfs = tv.user("acme", "alice").await;
    let small = bytes(4_096, 1);
    let info = put(&vfs, "/small", &small).await;
    assert_eq!(info.size, 4_096);
    assert!(
        tv.primary_objects().is_empty(),
        "no object file in the primary store: {:?}",
        tv.primary_objects()
    );
    let rows = inline_rows(&tv).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].1.len() as u64, sealed_len(4_096));

    // Full and ranged reads, byte for byte.
    assert_eq!(get(&vfs, "/small").await.unwrap(), small);
    let reader = vfs.open_read("/small").await.unwrap();
    for (at, len) in [(0, 1), (100, 1_000), (4_000, 500), (4_095, 10)] {
        let got = reader.read_at(at, len).await.unwrap();
        let end = (at as usize + len).min(small.len());
        assert_eq!(&got[..], &small[at as usize..end], "range at {at}");
    }
    assert!(reader.read_at(4_096, 10).await.unwrap().is_empty());
    drop(reader);
    let listed = vfs.list("/").await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].size, 4_096);

    // The replicator copies the row's bytes to the replica, verified, under the object key.
    assert!(replica_copy(&tv, &rows[0].0).is_none());
    let report = tv.vault.replicate_once(100).await.unwrap();
    assert_eq!((report.copied, report.failed), (1, 0));
    assert_eq!(replica_copy(&tv, &rows[0].0), Some(rows[0].1.clone()));
    assert!(tv.primary_objects().is_empty());

    // fsck checks the row's bytes (every chunk, deep) and the replica's copy.
    let report = tv.vault.fsck(true, false).await.unwrap();
    assert_eq!(report.files, 1);
    assert!(report.problems.is_empty(), "{report:?}");
    assert_eq!(tv.vault.resync_replica().await.unwrap().copied, 0);
}

#[tokio::test]
async fn a_file_just_over_the_threshold_goes_to_the_store() {
    let tv = vault().await;
    let vfs = tv.user("acme", "alice").await;
    let at = bytes(THRESHOLD_FILE as usize, 2);
    let over = bytes(THRESHOLD_FILE as usize + 1, 3);
    put(&vfs, "/at", &at).await;
    assert!(tv.primary_objects().is_empty(), "at the threshold: inline");
    put(&vfs, "/over", &over).await;
    let objects = tv.primary_objects();
    assert_eq!(objects.len(), 1, "one byte over: in the store");
    assert_eq!(
        std::fs::metadata(&objects[0]).unwrap().len(),
        sealed_len(THRESHOLD_FILE + 1)
    );
    assert_eq!(inline_rows(&tv).await.len(), 1);
    assert_eq!(get(&vfs, "/at").await.unwrap(), at);
    assert_eq!(get(&vfs, "/over").await.unwrap(), over);

    // Off: every object goes to the store.
    let off = vault_inlining(0).await;
    let vfs = off.user("acme", "alice").await;
    put(&vfs, "/tiny", b"x").await;
    assert_eq!(off.primary_objects().len(), 1);
    assert!(inline_rows(&off).await.is_empty());
}

/// Flips one byte of the row's sealed bytes with a direct SQL update.
async fn tamper(tv: &TestVault, key: &str, at: usize) {
    let mut db = raw_db(tv).await;
    let (mut sealed,): (Vec<u8>,) =
        sqlx::query_as("SELECT inline_object FROM nodes WHERE object_key = ?")
            .bind(key)
            .fetch_one(&mut db)
            .await
            .unwrap();
    sealed[at] ^= 0x01;
    sqlx::query("UPDATE nodes SET inline_object = ? WHERE object_key = ?")
        .bind(&sealed)
        .bind(key)
        .execute(&mut db)
        .await
        .unwrap();
}

#[tokio::test]
async fn tampered_inline_bytes_are_an_integrity_error_and_nothing_is_served() {
    let tv = vault().await;
    let vfs = tv.user("acme", "alice").await;
    put(&vfs, "/a", &bytes(4_500, 4)).await;
    put(&vfs, "/b", &bytes(100, 5)).await;
    let rows = inline_rows(&tv).await;
    assert_eq!(rows.len(), 2);
    let a_key = rows
        .iter()
        .find(|(_, s)| s.len() as u64 == sealed_len(4_500))
        .unwrap()
        .0
        .clone();
    let len = sealed_len(4_500) as usize;
    // The header, the first chunk, the last chunk's tag: each an integrity error, nothing read.
    for at in [3, 40, 2_000, len - 1] {
        tamper(&tv, &a_key, at).await;
        let err = get(&vfs, "/a").await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Integrity, "byte {at}: {err}");
        let opened = vfs.open_read("/a").await;
        if let Ok(reader) = opened {
            assert!(reader.read_at(4_100, 10).await.is_err(), "byte {at}");
        }
        tamper(&tv, &a_key, at).await; // back as it was
        assert_eq!(get(&vfs, "/a").await.unwrap(), bytes(4_500, 4));
    }
    assert_eq!(get(&vfs, "/b").await.unwrap(), bytes(100, 5));

    // fsck reports the damaged row; once the replica holds the good copy, reads are repaired
    // from it like a damaged primary object's.
    tv.vault.replicate_once(100).await.unwrap();
    tamper(&tv, &a_key, 2_000).await;
    let report = tv.vault.fsck(true, false).await.unwrap();
    assert_eq!(report.problems.len(), 1, "{report:?}");
    assert_eq!(report.problems[0].store, "inline");
    assert_eq!(report.problems[0].object_key, a_key);
    let before = coffer_storage::repaired_reads();
    assert_eq!(get(&vfs, "/a").await.unwrap(), bytes(4_500, 4));
    assert!(coffer_storage::repaired_reads() > before);

    // fsck --repair puts the replica's verified copy back into the row.
    let report = tv.vault.fsck(true, true).await.unwrap();
    assert_eq!(report.problems.len(), 1, "{report:?}");
    assert!(report.problems[0].repaired, "{report:?}");
    let row = inline_rows(&tv)
        .await
        .into_iter()
        .find(|r| r.0 == a_key)
        .unwrap();
    assert_eq!(Some(row.1), replica_copy(&tv, &a_key));
    assert!(
        tv.vault
            .fsck(true, false)
            .await
            .unwrap()
            .problems
            .is_empty()
    );
}

#[tokio::test]
async fn replace_and_delete_take_the_bytes_along_and_gc_collects_the_replica_copy() {
    let tv = vault().await;
    let vfs = tv.user("acme", "alice").await;
    put(&vfs, "/doc", b"first version").await;
    tv.vault.replicate_once(100).await.unwrap();
    let first = inline_rows(&tv).await[0].0.clone();
    assert!(replica_copy(&tv, &first).is_some());

    put(&vfs, "/doc", b"second version").await;
    let rows = inline_rows(&tv).await;
    assert_eq!(rows.len(), 1, "the row holds the new bytes only");
    let second = rows[0].0.clone();
    assert_ne!(first, second);
    let report = tv.vault.replicate_once(100).await.unwrap();
    assert_eq!((report.copied, report.deleted, report.failed), (1, 1, 0));
    assert!(replica_copy(&tv, &first).is_none(), "old copy deleted");
    assert!(replica_copy(&tv, &second).is_some());
    // The primary store never held the old object: nothing is queued for its collector (on
    // S3 that would be one DELETE request per replaced small file).
    assert!(tv.meta.garbage(100).await.unwrap().is_empty());
    assert_eq!(
        tv.vault
            .collect_garbage(100, GarbageAges::NOW)
            .await
            .unwrap(),
        0
    );
    assert_eq!(get(&vfs, "/doc").await.unwrap(), b"second version");

    // Replaced by a large file: to the store; the small version's copy goes.
    let large = bytes(20 * CHUNK as usize, 6);
    put(&vfs, "/doc", &large).await;
    assert!(inline_rows(&tv).await.is_empty());
    assert_eq!(tv.primary_objects().len(), 1);
    tv.vault.replicate_once(100).await.unwrap();
    assert!(replica_copy(&tv, &second).is_none());
    assert_eq!(get(&vfs, "/doc").await.unwrap(), large);

    // A small file deleted: row, bytes and replica copy go.
    put(&vfs, "/note", b"short-lived").await;
    tv.vault.replicate_once(100).await.unwrap();
    let note = inline_rows(&tv).await[0].0.clone();
    vfs.remove("/note").await.unwrap();
    assert!(inline_rows(&tv).await.is_empty());
    assert_eq!(
        get(&vfs, "/note").await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    tv.vault.replicate_once(100).await.unwrap();
    assert!(replica_copy(&tv, &note).is_none());
    tv.vault
        .collect_garbage(100, GarbageAges::NOW)
        .await
        .unwrap();
    assert!(tv.meta.garbage(100).await.unwrap().is_empty());
}

#[tokio::test]
async fn shredding_a_tenant_takes_its_inline_objects_and_leaves_nothing_readable() {
    let tv = vault().await;
    let admin = tv.vault.admin();
    let g = tv.user("gone", "g").await;
    let s = tv.user("stays", "s").await;
    put(&g, "/secret", b"shred me").await;
    put(&s, "/keep", b"kept").await;
    tv.vault.replicate_once(100).await.unwrap();
    assert_eq!(inline_rows(&tv).await.len(), 2);
    assert_eq!(tv.replica_objects().len(), 2);

    admin.shred_tenant("gone").await.unwrap();
    assert!(get(&g, "/secret").await.is_err());
    assert_eq!(
        inline_rows(&tv).await.len(),
        1,
        "the shredded tenant's bytes are gone"
    );
    tv.vault.replicate_once(100).await.unwrap();
    assert_eq!(tv.replica_objects().len(), 1, "its replica copy too");
    assert_eq!(get(&s, "/keep").await.unwrap(), b"kept");
}

#[tokio::test]
async fn the_database_holds_no_plaintext_name_or_content_of_inline_files() {
    let tv = vault().await;
    let vfs = tv.user("acme", "alice").await;
    let marker = format!("CANARY{}", hex::encode(bytes(8, 77)));
    let mut content = bytes(3_000, 8);
    content[10..10 + marker.len()].copy_from_slice(marker.as_bytes());
    put(&vfs, &format!("/{marker}.txt"), &content).await;
    put(&vfs, "/plain", marker.as_bytes()).await;
    tv.vault.replicate_once(100).await.unwrap();
    tv.vault.flush_audit().await;
    assert_eq!(inline_rows(&tv).await.len(), 2);
    assert!(tv.primary_objects().is_empty());
    // Able to fail: the marker is what a user reads back.
    assert_eq!(get(&vfs, "/plain").await.unwrap(), marker.as_bytes());
    let mut checked = 0;
    for path in tv.all_files() {
        let data = std::fs::read(&path).unwrap();
        assert!(
            !data.windows(marker.len()).any(|w| w == marker.as_bytes()),
            "{} holds the canary",
            path.display()
        );
        checked += 1;
    }
    assert!(checked > 2);
}

/// The measurement behind the default of `uploads.inline_max_bytes` (docs/PERFORMANCE.md,
/// "Small files inline"): per-file upload time and the listing of the folder that holds them,
/// objects in the row against objects in the local store, at several sizes. Run by hand:
/// `cargo test --release -p coffer-storage --test inline_objects -- --ignored --nocapture`.
#[tokio::test]
#[ignore = "a measurement, run by hand"]
async fn measure_upload_and_listing_cost_by_size() {
    const FILES: usize = 200;
    for size in [1_024usize, 4_096, 16_384, 65_536, 262_144] {
        let mut line = format!("{size:>7} B:");
        for (label, max) in [("store", 0), ("inline", coffer_storage::MAX_INLINE_BYTES)] {
            let tv = vault_inlining(max).await;
            let vfs = tv.user("acme", "alice").await;
            let data = bytes(size, 9);
            let t = std::time::Instant::now();
            for i in 0..FILES {
                put(&vfs, &format!("/f{i}"), &data).await;
            }
            let per_file = t.elapsed() / FILES as u32;
            let t = std::time::Instant::now();
            for _ in 0..20 {
                assert_eq!(vfs.list("/").await.unwrap().len(), FILES);
            }
            let listing = t.elapsed() / 20;
            let db = std::fs::metadata(tv.root().join("meta.db")).unwrap().len()
                + std::fs::metadata(tv.root().join("meta.db-wal")).map_or(0, |m| m.len());
            line += &format!(
                "  {label}: {per_file:>9.2?}/file, list {listing:>8.2?}, db {} KiB;",
                db / 1024
            );
        }
        println!("{line}");
    }
}

#[tokio::test]
async fn inline_bytes_swapped_between_tenants_open_for_neither() {
    let tv = vault().await;
    let alice = tv.user("acme", "alice").await;
    let bob = tv.user("globex", "bob").await;
    put(&alice, "/report.pdf", b"acme secret").await;
    put(&bob, "/report.pdf", b"globex secret").await;
    let rows = inline_rows(&tv).await;
    assert_eq!(rows.len(), 2);
    let mut db = raw_db(&tv).await;
    for (i, (key, _)) in rows.iter().enumerate() {
        sqlx::query("UPDATE nodes SET inline_object = ? WHERE object_key = ?")
            .bind(&rows[1 - i].1)
            .bind(key)
            .execute(&mut db)
            .await
            .unwrap();
    }
    for vfs in [&alice, &bob] {
        assert_eq!(
            get(vfs, "/report.pdf").await.unwrap_err().kind(),
            ErrorKind::Integrity
        );
    }
}

/// A download as HTTPS makes it: one lookup (`stat_for_read`), then `open_target`.
async fn get_by_target(
    vfs: &coffer_storage::Vfs,
    path: &str,
) -> Result<(Vec<u8>, Option<[u8; 32]>), coffer_storage::VfsError> {
    let target = vfs.stat_for_read(path).await?;
    let (size, sha256) = (target.info().size, target.sha256());
    let reader = vfs.open_target(target).await?;
    let mut out = Vec::new();
    while (out.len() as u64) < size {
        let piece = reader
            .read_at(out.len() as u64, size as usize - out.len())
            .await?;
        assert!(!piece.is_empty(), "short read");
        out.extend_from_slice(&piece);
    }
    Ok((out, sha256))
}

#[tokio::test]
async fn a_download_lookup_brings_the_rows_bytes_verified_and_refuses_tampered_ones() {
    let tv = vault().await;
    let vfs = tv.user("acme", "alice").await;
    let small = bytes(4_500, 7);
    let large = bytes(3 * CHUNK as usize + 10, 8);
    vfs.mkdir("/dir").await.unwrap();
    put(&vfs, "/dir/small", &small).await;
    put(&vfs, "/dir/large", &large).await;
    let (read, sha) = get_by_target(&vfs, "/dir/small").await.unwrap();
    assert_eq!(read, small);
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &small);
    assert_eq!(sha.as_ref().map(|h| &h[..]), Some(digest.as_ref()));
    // A file in the store takes the same path, its bytes from the store.
    assert_eq!(get_by_target(&vfs, "/dir/large").await.unwrap().0, large);
    // A folder is described, not opened; a missing name is NotFound.
    let folder = vfs.stat_for_read("/dir").await.unwrap();
    assert!(folder.info().is_dir());
    assert_eq!(folder.sha256(), None);
    assert_eq!(
        vfs.open_target(folder).await.unwrap_err().kind(),
        ErrorKind::IsADirectory
    );
    assert_eq!(
        vfs.stat_for_read("/dir/none").await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    // The bytes the lookup brought are verified like any object's.
    let key = inline_rows(&tv).await[0].0.clone();
    tamper(&tv, &key, 40).await;
    assert_eq!(
        get_by_target(&vfs, "/dir/small").await.unwrap_err().kind(),
        ErrorKind::Integrity
    );
    tamper(&tv, &key, 40).await;
    assert_eq!(get_by_target(&vfs, "/dir/small").await.unwrap().0, small);
}
