//! `LocalDirStore` against the conformance suite, plus what only a local directory can show:
//! file modes, the on-disk layout, crash leftovers and cross-filesystem `put_file`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use bytes::Bytes;
use coffer_object::{LocalDirStore, ObjectError, ObjectKey, ObjectStore, conformance};
use tempfile::TempDir;

/// A store in a fresh temp dir, with a separate scratch dir beside it.
fn fresh_store() -> (TempDir, LocalDirStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalDirStore::open(&dir.path().join("store")).unwrap();
    fs::create_dir(dir.path().join("scratch")).unwrap();
    (dir, store)
}

fn mode_of(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

macro_rules! conformance_tests {
    ($($check:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $check() {
            let (_dir, store) = fresh_store();
            conformance::$check(&store).await;
        }
    )*};
}

conformance_tests!(
    put_then_get_whole,
    get_range_at_start,
    get_range_in_middle,
    get_range_at_end,
    get_range_empty,
    get_range_out_of_bounds,
    head_reports_size,
    missing_key_is_not_found,
    large_object_round_trip,
    copy_then_delete_original_keeps_copy,
    delete_missing_is_ok,
    overwrite_replaces_whole_object,
    empty_object_round_trip,
    concurrent_puts_and_gets,
    put_many_stores_each_object,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_file_stores_content() {
    let (dir, store) = fresh_store();
    conformance::put_file_stores_content(&store, &dir.path().join("scratch")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_all_passes_on_one_long_lived_store() {
    let (dir, store) = fresh_store();
    conformance::run_all(&store, &dir.path().join("scratch")).await;
    conformance::run_all(&store, &dir.path().join("scratch")).await;
}

#[tokio::test]
async fn objects_are_0600_and_directories_0700() {
    let (dir, store) = fresh_store();
    let put_key = ObjectKey::generate().unwrap();
    store
        .put(&put_key, Bytes::from_static(b"sealed"))
        .await
        .unwrap();
    let source = dir.path().join("scratch").join("upload");
    fs::write(&source, b"sealed upload").unwrap();
    fs::set_permissions(&source, fs::Permissions::from_mode(0o644)).unwrap();
    let file_key = ObjectKey::generate().unwrap();
    store.put_file(&file_key, &source).await.unwrap();
    let copy_key = ObjectKey::generate().unwrap();
    store.copy(&put_key, &copy_key).await.unwrap();

    for key in [&put_key, &file_key, &copy_key] {
        let object = store.object_path(key);
        assert_eq!(mode_of(&object), 0o600, "{}", object.display());
        let inner = object.parent().unwrap();
        assert_eq!(mode_of(inner), 0o700, "{}", inner.display());
        assert_eq!(mode_of(inner.parent().unwrap()), 0o700);
    }
    assert_eq!(mode_of(store.root()), 0o700);
    assert_eq!(mode_of(&store.root().join(".tmp")), 0o700);
}

#[tokio::test]
async fn on_disk_path_is_sharded_and_names_only_the_key() {
    let (_dir, store) = fresh_store();
    let key = ObjectKey::parse("0123456789abcdef0123456789abcdef").unwrap();
    store
        .put(&key, Bytes::from_static(b"sealed"))
        .await
        .unwrap();

    let expected = store
        .root()
        .join("01")
        .join("0123456789abcdef0123456789abcdef");
    assert_eq!(store.object_path(&key), expected);
    assert_eq!(fs::read(&expected).unwrap(), b"sealed");
    // The 256 shard directories exist from the start; the only file is the object.
    let mut names = Vec::new();
    collect_names(store.root(), &mut names);
    names.sort();
    let mut want: Vec<String> = (0..=0xffu8).map(|b| format!("{b:02x}")).collect();
    want.push(".tmp".into());
    want.push("0123456789abcdef0123456789abcdef".into());
    want.sort();
    assert_eq!(names, want);
}

/// Objects written by earlier builds, one level deeper (ab/cd/<key>), stay readable, copyable
/// and removable.
#[tokio::test]
async fn objects_in_the_earlier_two_level_layout_are_still_served() {
    let (_dir, store) = fresh_store();
    let key = ObjectKey::parse("abcdef0123456789abcdef0123456789").unwrap();
    let legacy = store.root().join("ab").join("cd");
    fs::create_dir_all(&legacy).unwrap();
    fs::write(legacy.join(key.as_str()), b"old layout").unwrap();

    assert_eq!(store.head(&key).await.unwrap().size, 10);
    assert_eq!(&store.get_range(&key, 4, 6).await.unwrap()[..], b"layout");
    let copy = ObjectKey::generate().unwrap();
    store.copy(&key, &copy).await.unwrap();
    assert_eq!(&store.get_range(&copy, 0, 3).await.unwrap()[..], b"old");
    store.delete(&key).await.unwrap();
    assert!(matches!(
        store.head(&key).await,
        Err(coffer_object::ObjectError::NotFound)
    ));
    assert!(!legacy.join(key.as_str()).exists());
}

/// A shard directory removed by hand is created again by the next write into it.
#[tokio::test]
async fn a_missing_shard_directory_is_recreated() {
    let (_dir, store) = fresh_store();
    let key = ObjectKey::parse("7f000000000000000000000000000000").unwrap();
    fs::remove_dir(store.root().join("7f")).unwrap();
    store.put(&key, Bytes::from_static(b"x")).await.unwrap();
    assert_eq!(fs::read(store.object_path(&key)).unwrap(), b"x");
}

fn collect_names(dir: &Path, names: &mut Vec<String>) {
    for entry in fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        names.push(entry.file_name().into_string().unwrap());
        if entry.file_type().unwrap().is_dir() {
            collect_names(&entry.path(), names);
        }
    }
}

#[tokio::test]
async fn crash_leftover_in_temp_is_never_an_object_and_clean_temp_removes_it() {
    let (_dir, store) = fresh_store();
    let key = ObjectKey::generate().unwrap();
    let temp_dir = store.root().join(".tmp");
    fs::write(temp_dir.join(key.as_str()), b"half a write").unwrap();
    fs::create_dir(temp_dir.join("stray-dir")).unwrap();
    fs::write(temp_dir.join("stray-dir").join("inner"), b"x").unwrap();

    assert!(matches!(store.head(&key).await, Err(ObjectError::NotFound)));
    assert_eq!(store.clean_temp().unwrap(), 2);
    assert_eq!(fs::read_dir(&temp_dir).unwrap().count(), 0);
    assert_eq!(store.clean_temp().unwrap(), 0);

    let reopened = LocalDirStore::open(store.root()).unwrap();
    reopened
        .put(&key, Bytes::from_static(b"after restart"))
        .await
        .unwrap();
    assert_eq!(
        reopened.get_range(&key, 0, 13).await.unwrap(),
        Bytes::from_static(b"after restart")
    );
}

#[tokio::test]
async fn writes_leave_nothing_in_temp() {
    let (_dir, store) = fresh_store();
    let key = ObjectKey::generate().unwrap();
    store.put(&key, Bytes::from_static(b"one")).await.unwrap();
    store
        .copy(&key, &ObjectKey::generate().unwrap())
        .await
        .unwrap();
    assert_eq!(store.clean_temp().unwrap(), 0);
}

#[tokio::test]
async fn put_file_on_same_filesystem_moves_the_source() {
    let (dir, store) = fresh_store();
    let source = dir.path().join("scratch").join("upload");
    fs::write(&source, b"sealed upload").unwrap();
    let inode = fs::metadata(&source).unwrap().ino();
    let key = ObjectKey::generate().unwrap();

    store.put_file(&key, &source).await.unwrap();

    assert!(!source.exists(), "the source file was left behind");
    assert_eq!(
        fs::metadata(store.object_path(&key)).unwrap().ino(),
        inode,
        "expected a rename, not a copy"
    );
}

/// /dev/shm is a tmpfs on Linux, so a source there forces the copy fallback for real.
#[tokio::test]
async fn put_file_across_filesystems_copies_and_removes_the_source() {
    let (_dir, store) = fresh_store();
    let Ok(shm) = tempfile::tempdir_in("/dev/shm") else {
        eprintln!("skipped: no /dev/shm (the fallback is also covered by a unit test)");
        return;
    };
    if fs::metadata(shm.path()).unwrap().dev() == fs::metadata(store.root()).unwrap().dev() {
        eprintln!("skipped: /dev/shm is on the same filesystem as the temp dir");
        return;
    }
    let source = shm.path().join("upload");
    let body: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
    fs::write(&source, &body).unwrap();
    let key = ObjectKey::generate().unwrap();

    store.put_file(&key, &source).await.unwrap();

    assert!(!source.exists(), "the source file was left behind");
    assert!(fs::read(store.object_path(&key)).unwrap() == body);
    assert_eq!(mode_of(&store.object_path(&key)), 0o600);
}

#[tokio::test]
async fn put_file_of_missing_source_fails_without_creating_the_object() {
    let (dir, store) = fresh_store();
    let key = ObjectKey::generate().unwrap();
    let result = store
        .put_file(&key, &dir.path().join("scratch").join("absent"))
        .await;
    assert!(matches!(result, Err(ObjectError::Io(_))), "{result:?}");
    assert!(matches!(store.head(&key).await, Err(ObjectError::NotFound)));
}

/// Overwrites race with reads: every read sees one whole version, never a mix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reader_never_sees_a_partial_object() {
    let (_dir, store) = fresh_store();
    let key = ObjectKey::generate().unwrap();
    let size = 1024 * 1024;
    let versions = [Bytes::from(vec![b'a'; size]), Bytes::from(vec![b'b'; size])];
    store.put(&key, versions[0].clone()).await.unwrap();

    let writer = {
        let (store, key, versions) = (store.clone(), key.clone(), versions.clone());
        tokio::spawn(async move {
            for round in 0..40 {
                store.put(&key, versions[round % 2].clone()).await.unwrap();
            }
        })
    };
    let mut reads = 0;
    while reads < 10 || !writer.is_finished() {
        reads += 1;
        let read = store.get_range(&key, 0, size as u64).await.unwrap();
        assert!(
            read == versions[0] || read == versions[1],
            "a read mixed two versions"
        );
    }
    writer.await.unwrap();
}

#[test]
fn object_key_parse_refuses_anything_but_32_lowercase_hex_digits() {
    for bad in [
        "../etc/passwd",
        "0123456789ABCDEF0123456789abcdef",
        "0123456789abcdef0123456789abcde",
        "0123456789abcdef0123456789abcdef0",
        "0123456789abcdef/123456789abcdef",
        "0123456789abcdef0123456789abcdeg",
        "éééééééééééééééé",
        "",
    ] {
        assert!(
            matches!(ObjectKey::parse(bad), Err(ObjectError::InvalidKey)),
            "{bad:?} was accepted"
        );
    }
    let key = ObjectKey::generate().unwrap();
    assert_eq!(ObjectKey::parse(key.as_str()).unwrap(), key);
}

#[test]
fn open_refuses_a_root_that_is_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    fs::write(&file, b"").unwrap();
    assert!(matches!(
        LocalDirStore::open(&file),
        Err(ObjectError::Io(_))
    ));
}
