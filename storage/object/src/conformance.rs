//! The behaviour every [`ObjectStore`] must show, as async checks that panic on a violation.
//!
//! Run [`run_all`] (or each check from its own test) against a store. Every check writes
//! under fresh random keys and deletes what it wrote, so the suite can run against a
//! long-lived store such as a shared S3 bucket.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::task::Poll;

use bytes::Bytes;

use crate::{ObjectError, ObjectKey, ObjectStore};

const MIB: usize = 1024 * 1024;
/// Size of the file handed to `put_file`: several typical read sizes.
const PUT_FILE_SIZE: usize = 5 * MIB;
/// Size of the large round trip: larger than any single buffer a store might use.
const LARGE_OBJECT_SIZE: usize = 20 * MIB;
/// How many puts and gets run at once in [`concurrent_puts_and_gets`].
const CONCURRENT_TASKS: usize = 32;
/// Size of the object most checks work on: not a power of two, so off-by-ones show.
const SMALL_OBJECT_SIZE: usize = 10_007;

/// Runs every check in this module against `store`; `scratch` is a local directory where
/// [`put_file_stores_content`] may create its source file.
pub async fn run_all(store: &dyn ObjectStore, scratch: &Path) {
    put_then_get_whole(store).await;
    get_range_at_start(store).await;
    get_range_in_middle(store).await;
    get_range_at_end(store).await;
    get_range_empty(store).await;
    get_range_out_of_bounds(store).await;
    head_reports_size(store).await;
    missing_key_is_not_found(store).await;
    put_file_stores_content(store, scratch).await;
    large_object_round_trip(store).await;
    copy_then_delete_original_keeps_copy(store).await;
    delete_missing_is_ok(store).await;
    overwrite_replaces_whole_object(store).await;
    empty_object_round_trip(store).await;
    concurrent_puts_and_gets(store).await;
    put_many_stores_each_object(store).await;
}

/// A put object reads back byte for byte.
pub async fn put_then_get_whole(store: &dyn ObjectStore) {
    let (key, body) = put_random(store, SMALL_OBJECT_SIZE).await;
    assert_same_bytes(&get_whole(store, &key, body.len()).await, &body);
    store.delete(&key).await.unwrap();
}

/// A range at offset 0 returns the object's first bytes.
pub async fn get_range_at_start(store: &dyn ObjectStore) {
    let (key, body) = put_random(store, SMALL_OBJECT_SIZE).await;
    let got = store.get_range(&key, 0, 100).await.unwrap();
    assert_same_bytes(&got, &body.slice(0..100));
    store.delete(&key).await.unwrap();
}

/// A range inside the object returns exactly those bytes.
pub async fn get_range_in_middle(store: &dyn ObjectStore) {
    let (key, body) = put_random(store, SMALL_OBJECT_SIZE).await;
    let got = store.get_range(&key, 4093, 1500).await.unwrap();
    assert_same_bytes(&got, &body.slice(4093..5593));
    store.delete(&key).await.unwrap();
}

/// A range ending exactly at the object's end returns its tail, the last byte included.
pub async fn get_range_at_end(store: &dyn ObjectStore) {
    let (key, body) = put_random(store, SMALL_OBJECT_SIZE).await;
    let got = store.get_range(&key, 9_000, 1_007).await.unwrap();
    assert_same_bytes(&got, &body.slice(9_000..));
    let last = store.get_range(&key, 10_006, 1).await.unwrap();
    assert_same_bytes(&last, &body.slice(10_006..));
    store.delete(&key).await.unwrap();
}

/// An empty range anywhere up to and including the end is valid and returns nothing.
pub async fn get_range_empty(store: &dyn ObjectStore) {
    let (key, _) = put_random(store, SMALL_OBJECT_SIZE).await;
    for start in [0, 5_000, SMALL_OBJECT_SIZE as u64] {
        let got = store.get_range(&key, start, 0).await.unwrap();
        assert!(
            got.is_empty(),
            "empty range at {start} returned {} bytes",
            got.len()
        );
    }
    store.delete(&key).await.unwrap();
}

/// A range reaching past the end is refused with the range and the real size, never
/// shortened and never a panic, even when `start + len` overflows.
pub async fn get_range_out_of_bounds(store: &dyn ObjectStore) {
    let (key, _) = put_random(store, SMALL_OBJECT_SIZE).await;
    let size = SMALL_OBJECT_SIZE as u64;
    for (start, len) in [
        (0, size + 1),
        (size - 10, 11),
        (size, 1),
        (size + 1, 0),
        (u64::MAX, 2),
    ] {
        let result = store.get_range(&key, start, len).await;
        let expected_end = start.saturating_add(len);
        assert!(
            matches!(
                result,
                Err(ObjectError::RangeOutOfBounds { start: s, end: e, size: z })
                    if s == start && e == expected_end && z == size
            ),
            "range {start}+{len} of a {size}-byte object gave {result:?}"
        );
    }
    store.delete(&key).await.unwrap();
}

/// `head` reports the stored size.
pub async fn head_reports_size(store: &dyn ObjectStore) {
    let (key, body) = put_random(store, SMALL_OBJECT_SIZE).await;
    assert_eq!(store.head(&key).await.unwrap().size, body.len() as u64);
    store.delete(&key).await.unwrap();
}

/// `head`, `get_range` and `copy` of a key never written answer `NotFound`.
pub async fn missing_key_is_not_found(store: &dyn ObjectStore) {
    let missing = ObjectKey::generate().unwrap();
    assert_not_found(store.head(&missing).await);
    assert_not_found(store.get_range(&missing, 0, 0).await);
    assert_not_found(store.get_range(&missing, 0, 1).await);
    let target = ObjectKey::generate().unwrap();
    assert_not_found(store.copy(&missing, &target).await);
    assert_not_found(store.head(&target).await);
}

/// `put_file` stores the file's whole content, and the object does not depend on the source
/// file afterwards (the source is removed here if the store left it).
pub async fn put_file_stores_content(store: &dyn ObjectStore, scratch: &Path) {
    let key = ObjectKey::generate().unwrap();
    let body = random_bytes(PUT_FILE_SIZE);
    let source = scratch.join(format!("upload-{}", ObjectKey::generate().unwrap()));
    tokio::fs::write(&source, &body).await.unwrap();

    store.put_file(&key, &source).await.unwrap();
    match tokio::fs::remove_file(&source).await {
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        result => result.unwrap(),
    }

    assert_eq!(store.head(&key).await.unwrap().size, PUT_FILE_SIZE as u64);
    assert_same_bytes(&get_whole(store, &key, PUT_FILE_SIZE).await, &body);
    store.delete(&key).await.unwrap();
}

/// A 20 MiB object reads back whole and by a range that straddles MiB boundaries.
pub async fn large_object_round_trip(store: &dyn ObjectStore) {
    let (key, body) = put_random(store, LARGE_OBJECT_SIZE).await;
    assert_eq!(
        store.head(&key).await.unwrap().size,
        LARGE_OBJECT_SIZE as u64
    );
    assert_same_bytes(&get_whole(store, &key, LARGE_OBJECT_SIZE).await, &body);
    let start = 7 * MIB + 12_345;
    let got = store
        .get_range(&key, start as u64, (3 * MIB) as u64)
        .await
        .unwrap();
    assert_same_bytes(&got, &body.slice(start..start + 3 * MIB));
    store.delete(&key).await.unwrap();
}

/// A copy is an independent object: deleting the original leaves the copy whole.
pub async fn copy_then_delete_original_keeps_copy(store: &dyn ObjectStore) {
    let (original, body) = put_random(store, SMALL_OBJECT_SIZE).await;
    let copy = ObjectKey::generate().unwrap();
    store.copy(&original, &copy).await.unwrap();
    store.delete(&original).await.unwrap();

    assert_not_found(store.head(&original).await);
    assert_eq!(store.head(&copy).await.unwrap().size, body.len() as u64);
    assert_same_bytes(&get_whole(store, &copy, body.len()).await, &body);
    store.delete(&copy).await.unwrap();
}

/// Deleting a key never written, or deleting twice, succeeds.
pub async fn delete_missing_is_ok(store: &dyn ObjectStore) {
    store.delete(&ObjectKey::generate().unwrap()).await.unwrap();
    let (key, _) = put_random(store, 10).await;
    store.delete(&key).await.unwrap();
    assert_not_found(store.head(&key).await);
    store.delete(&key).await.unwrap();
}

/// `put` on an existing key replaces the object whole: a shorter body leaves no old tail.
pub async fn overwrite_replaces_whole_object(store: &dyn ObjectStore) {
    let (key, _) = put_random(store, SMALL_OBJECT_SIZE).await;
    let replacement = random_bytes(1_000);
    store.put(&key, replacement.clone()).await.unwrap();

    assert_eq!(store.head(&key).await.unwrap().size, 1_000);
    assert_same_bytes(&get_whole(store, &key, 1_000).await, &replacement);
    assert!(matches!(
        store.get_range(&key, 0, 1_001).await,
        Err(ObjectError::RangeOutOfBounds { size: 1_000, .. })
    ));
    store.delete(&key).await.unwrap();
}

/// A 0-byte object exists, has size 0, reads back empty and refuses any byte.
pub async fn empty_object_round_trip(store: &dyn ObjectStore) {
    let (key, _) = put_random(store, 0).await;
    assert_eq!(store.head(&key).await.unwrap().size, 0);
    assert!(store.get_range(&key, 0, 0).await.unwrap().is_empty());
    assert!(matches!(
        store.get_range(&key, 0, 1).await,
        Err(ObjectError::RangeOutOfBounds {
            start: 0,
            end: 1,
            size: 0
        })
    ));
    store.delete(&key).await.unwrap();
    assert_not_found(store.head(&key).await);
}

/// `put_many` stores every object as `put` would, each result in its item's place: new keys,
/// an empty object, and a key that already held an object (replaced whole).
pub async fn put_many_stores_each_object(store: &dyn ObjectStore) {
    let (existing, _) = put_random(store, SMALL_OBJECT_SIZE).await;
    let mut items: Vec<(ObjectKey, Bytes)> = [4_096, 0, 16_001, 1]
        .into_iter()
        .map(|size| (ObjectKey::generate().unwrap(), random_bytes(size)))
        .collect();
    items.push((existing, random_bytes(1_000)));

    let stored = store.put_many(items.clone()).await;

    assert_eq!(stored.len(), items.len(), "one result per object");
    for ((key, body), result) in items.iter().zip(stored) {
        result.unwrap();
        assert_eq!(store.head(key).await.unwrap().size, body.len() as u64);
        assert_same_bytes(&get_whole(store, key, body.len()).await, body);
        store.delete(key).await.unwrap();
    }
}

/// 32 puts, then 32 gets, all in flight at once, each see only their own bytes.
pub async fn concurrent_puts_and_gets(store: &dyn ObjectStore) {
    let objects: Vec<(ObjectKey, Bytes)> = (0..CONCURRENT_TASKS)
        .map(|task| {
            (
                ObjectKey::generate().unwrap(),
                random_bytes(1_000 + task * 37_123),
            )
        })
        .collect();

    join_all(
        objects
            .iter()
            .map(|(key, body)| store.put(key, body.clone())),
    )
    .await
    .into_iter()
    .for_each(|r| r.unwrap());

    let reads = join_all(
        objects
            .iter()
            .map(|(key, body)| store.get_range(key, 0, body.len() as u64)),
    )
    .await;
    for ((_, body), read) in objects.iter().zip(reads) {
        assert_same_bytes(&read.unwrap(), body);
    }

    join_all(objects.iter().map(|(key, _)| store.delete(key)))
        .await
        .into_iter()
        .for_each(|r| r.unwrap());
}

/// Puts `len` random bytes under a fresh key.
async fn put_random(store: &dyn ObjectStore, len: usize) -> (ObjectKey, Bytes) {
    let key = ObjectKey::generate().unwrap();
    let body = random_bytes(len);
    store.put(&key, body.clone()).await.unwrap();
    (key, body)
}

async fn get_whole(store: &dyn ObjectStore, key: &ObjectKey, len: usize) -> Bytes {
    store.get_range(key, 0, len as u64).await.unwrap()
}

/// Random content, so a store that mixed up two objects or offsets cannot pass by luck.
fn random_bytes(len: usize) -> Bytes {
    let mut bytes = vec![0u8; len];
    aws_lc_rs::rand::fill(&mut bytes).unwrap();
    Bytes::from(bytes)
}

/// Compares two bodies without printing megabytes when they differ.
fn assert_same_bytes(got: &[u8], expected: &[u8]) {
    let first_difference = got.iter().zip(expected).position(|(g, e)| g != e);
    assert!(
        got.len() == expected.len() && first_difference.is_none(),
        "read {} bytes, expected {}; first differing byte at {first_difference:?}",
        got.len(),
        expected.len()
    );
}

fn assert_not_found<T: std::fmt::Debug>(result: Result<T, ObjectError>) {
    assert!(
        matches!(result, Err(ObjectError::NotFound)),
        "expected NotFound, got {result:?}"
    );
}

/// Polls every future in one task until all are done, so that their store calls are in
/// flight at the same time without requiring `'static` futures for `tokio::spawn`.
async fn join_all<F: Future>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    let mut pending: Vec<Option<Pin<Box<F>>>> =
        futures.into_iter().map(|f| Some(Box::pin(f))).collect();
    let mut outputs: Vec<Option<F::Output>> = pending.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        for (slot, output) in pending.iter_mut().zip(outputs.iter_mut()) {
            if let Some(future) = slot
                && let Poll::Ready(value) = future.as_mut().poll(cx)
            {
                *output = Some(value);
                *slot = None;
            }
        }
        if pending.iter().all(Option::is_none) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await;
    outputs.into_iter().flatten().collect()
}
