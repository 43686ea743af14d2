//! The replicator and the garbage collector: background work over the outbox and garbage tables;
//! copies are verified by SHA-256 of the ciphertext before a job is marked done.

mod fsck;

use std::collections::HashSet;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::digest;
use bytes::Bytes;
use coffer_meta::{GarbageCut, ReplicationJob, ReplicationOp};
use coffer_object::{ObjectError, ObjectKey, ObjectStore};
use tracing::{debug, warn};

use crate::clock::now_ms;
use crate::error::{ErrorKind, VfsError, VfsResult, internal};
use crate::inline::InlineObject;
use crate::vault::Vault;

pub use fsck::{FsckProblem, FsckReport, ReplicationStatus, ResyncReport};

/// Bytes copied per ranged read while replicating.
const COPY_STEP: u64 = 8 * 1024 * 1024;

/// Replication jobs run at once. Each is several round trips to both stores (read, write, read
/// back); one at a time, 500 small files reached an s3s-fs replica 30 s after the client
/// finished. Objects over [`COPY_STEP`] pass through a spool file each, so this also bounds
/// the spool space replication takes.
const PARALLEL_JOBS: usize = 4;

/// What one replication pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReplicationReport {
    /// Objects copied to the replica and verified.
    pub copied: usize,
    /// Objects deleted from the replica.
    pub deleted: usize,
    /// Jobs that failed and stay pending.
    pub failed: usize,
}

impl Vault {
    /// Works through up to `limit` pending replication jobs, [`PARALLEL_JOBS`] at a time. A
    /// job is marked done only after the replica holds an object of the same size and SHA-256
    /// as the primary's; the pass marks its finished jobs in one statement at its end (a crash
    /// before that repeats them, which is harmless: a copy or delete may run twice).
    pub async fn replicate_once(&self, limit: u32) -> VfsResult<ReplicationReport> {
        let mut report = ReplicationReport::default();
        let b = &self.inner.b;
        let Some(replica) = &b.replica else {
            return Ok(report);
        };
        let pending = b.meta.pending_replication(limit).await?;
        // A copy of an object this pass also deletes is not made: the object is gone, and a
        // copy running beside the delete could land after it and stay on the replica.
        let deleted: HashSet<String> = pending
            .iter()
            .filter(|j| j.op == ReplicationOp::Delete)
            .map(|j| j.object_key.clone())
            .collect();
        let mut done = Vec::new();
        let mut todo = Vec::with_capacity(pending.len());
        for job in pending {
            if job.op == ReplicationOp::Copy && deleted.contains(&job.object_key) {
                done.push(job.id);
            } else {
                todo.push(job);
            }
        }
        // Copies of objects kept in their rows came with their bytes: the replica takes them
        // in batches (`copy_batch_verified`), then each copy is verified on its own.
        let (batched, todo): (Vec<_>, Vec<_>) = todo
            .into_iter()
            .partition(|j| j.op == ReplicationOp::Copy && j.inline_object.is_some());
        for (job, result) in copy_batch_verified(batched, replica.as_ref()).await {
            self.settle_job(job, result, &mut done, &mut report).await?;
        }
        let mut jobs = todo.into_iter();
        let mut running = tokio::task::JoinSet::new();
        loop {
            while running.len() < PARALLEL_JOBS {
                let Some(mut job) = jobs.next() else { break };
                let vault = self.clone();
                let replica = replica.clone();
                running.spawn(async move {
                    let result = vault.run_job(&mut job, replica.as_ref()).await;
                    (job, result)
                });
            }
            let Some(joined) = running.join_next().await else {
                b.meta.replication_done(&done).await?;
                return Ok(report);
            };
            let (job, result) = joined.map_err(|e| internal("replication task", e))?;
            self.settle_job(job, result, &mut done, &mut report).await?;
        }
    }

    /// Counts a finished job: done (marked at the pass's end), or failed (recorded now, and
    /// retried by a later pass).
    async fn settle_job(
        &self,
        job: ReplicationJob,
        result: VfsResult<()>,
        done: &mut Vec<i64>,
        report: &mut ReplicationReport,
    ) -> VfsResult<()> {
        match result {
            Ok(()) => {
                done.push(job.id);
                match job.op {
                    ReplicationOp::Copy => report.copied += 1,
                    ReplicationOp::Delete => report.deleted += 1,
                }
            }
            Err(e) => {
                warn!(object = %job.object_key, attempts = job.attempts + 1, error = %e, "replication failed; will retry");
                self.inner
                    .b
                    .meta
                    .replication_failed(job.id, e.message(), now_ms())
                    .await?;
                report.failed += 1;
            }
        }
        Ok(())
    }

    /// One replication job: a verified copy from the primary store, or a delete, on the
    /// replica. A job whose key is malformed has nothing to do. (Copies of objects kept in
    /// their rows go in batches, [`copy_batch_verified`].)
    async fn run_job(&self, job: &mut ReplicationJob, replica: &dyn ObjectStore) -> VfsResult<()> {
        let Ok(key) = ObjectKey::parse(&job.object_key) else {
            return Ok(());
        };
        match job.op {
            ReplicationOp::Copy => {
                let tmp = self.inner.spool.path(&format!("{key}.replica"));
                copy_verified(self.inner.b.primary.as_ref(), replica, &key, &tmp).await
            }
            ReplicationOp::Delete => replica.delete(&key).await.map_err(Into::into),
        }
    }

    /// Copies one object to the replica through a spool file; see [`copy_verified`]. An
    /// object stored in its row (a small file) is copied from there, verified the same way.
    pub(crate) async fn copy_to_replica(
        &self,
        key: &ObjectKey,
        replica: &dyn ObjectStore,
    ) -> VfsResult<()> {
        let tmp = self.inner.spool.path(&format!("{key}.replica"));
        let source = self.object_source(key).await?;
        copy_verified(source.as_ref(), replica, key, &tmp).await
    }

    /// Where `key`'s committed object is read from: its row if the row holds it, else the
    /// primary store (an object whose row is gone is looked for there, and is not found once
    /// collected).
    pub(crate) async fn object_source(&self, key: &ObjectKey) -> VfsResult<Arc<dyn ObjectStore>> {
        let b = &self.inner.b;
        Ok(match InlineObject::fetch(b.meta.as_ref(), key).await? {
            Some(inline) => inline,
            None => b.primary.clone(),
        })
    }

    /// Deletes from the primary store up to `limit` objects no committed row refers to, under
    /// `ages`: an object goes once it has been garbage for `ages.grace` and no reader holds it
    /// — neither one of this process nor one another node published within `ages.reader_ttl`
    /// — and after `ages.max_age` whatever holds it (a reader that crashed or never ends).
    /// (Replica copies are deleted by the replicator through the outbox.)
    pub async fn collect_garbage(&self, limit: u32, ages: GarbageAges) -> VfsResult<usize> {
        let b = &self.inner.b;
        let now = now_ms();
        let ago =
            |d: Duration| now.saturating_sub(i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        let cut = GarbageCut {
            settled_ms: ago(ages.grace),
            readers_seen_ms: ago(ages.reader_ttl),
            abandoned_ms: ago(ages.max_age),
        };
        if let Err(e) = b.meta.expire_open_readers(cut.readers_seen_ms).await {
            warn!(error = %e, "could not expire stale reader rows");
        }
        let (mut deleted, mut kept, mut after_id) = (0, 0, 0);
        loop {
            let page = b.meta.collectable_garbage(after_id, limit, cut).await?;
            let last_page = page.len() < limit as usize;
            for g in page {
                after_id = g.id;
                if g.created_ms > cut.abandoned_ms && self.inner.open_readers.holds(&g.object_key) {
                    kept += 1;
                    continue;
                }
                if let Ok(key) = ObjectKey::parse(&g.object_key) {
                    b.primary.delete(&key).await?;
                }
                b.meta.garbage_done(g.id).await?;
                deleted += 1;
                if deleted >= limit as usize {
                    return Ok(deleted);
                }
            }
            if last_page {
                break;
            }
        }
        if kept > 0 {
            debug!(objects = kept, "garbage kept for readers of this process");
        }
        Ok(deleted)
    }

    /// Publishes the objects this process's readers have held since at least
    /// `open_longer_than` ago, replacing what it published before, so the garbage collector of
    /// every node keeps them. Shorter reads are covered by the collector's grace and are never
    /// written: a small download costs no database write. Writes nothing while this process
    /// has nothing to publish and published nothing last time. Returns how many it published.
    pub async fn publish_open_readers(&self, open_longer_than: Duration) -> VfsResult<usize> {
        let now = now_ms();
        let since =
            now.saturating_sub(i64::try_from(open_longer_than.as_millis()).unwrap_or(i64::MAX));
        let readers = &self.inner.open_readers;
        let keys = readers.held_since(since);
        if !readers.swap_published_any(!keys.is_empty()) && keys.is_empty() {
            return Ok(0);
        }
        let published = self
            .inner
            .b
            .meta
            .publish_open_readers(&self.inner.opts.node_name, &keys, now)
            .await;
        if published.is_err() {
            // Try again next time, even if nothing is held then.
            readers.swap_published_any(true);
        }
        published?;
        Ok(keys.len())
    }
}

/// How long garbage waits; see [`Vault::collect_garbage`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GarbageAges {
    /// Garbage younger than this is kept, held or not: a reader on another node that looked
    /// the old row up just before the replace has not published itself yet. Longer than
    /// [`READER_PUBLISH_AFTER`] plus the publication interval.
    pub grace: Duration,
    /// A reader row another node published counts this long after it was last refreshed;
    /// then its node is taken to have stopped (crashed, cut off).
    pub reader_ttl: Duration,
    /// Garbage older than this goes whatever holds it: a download open this long is taken to
    /// be stuck, and a crashed reader must not keep an object forever.
    pub max_age: Duration,
}

/// A download is published to the other nodes once it has been open this long: most are over
/// sooner, and cost no database write.
pub const READER_PUBLISH_AFTER: Duration = Duration::from_secs(5);

impl GarbageAges {
    /// What `coffer serve` and `coffer gc` use: a minute of grace, reader rows valid for a
    /// minute after their last refresh (`serve` refreshes them every 10 s), an hour at most.
    pub const DEFAULT: Self = Self {
        grace: Duration::from_secs(60),
        reader_ttl: Duration::from_secs(60),
        max_age: Duration::from_secs(3600),
    };

    /// Everything now, whatever holds it (tests; an operator who needs the space at once).
    pub const NOW: Self = Self {
        grace: Duration::ZERO,
        reader_ttl: Duration::ZERO,
        max_age: Duration::ZERO,
    };
}

/// SHA-256 of a stored object of `size` bytes, read in [`COPY_STEP`] ranges.
pub(crate) async fn object_digest(
    store: &dyn ObjectStore,
    key: &ObjectKey,
    size: u64,
) -> VfsResult<digest::Digest> {
    let mut hasher = digest::Context::new(&digest::SHA256);
    let mut at = 0;
    while at < size {
        let n = COPY_STEP.min(size - at);
        hasher.update(&store.get_range(key, at, n).await?);
        at += n;
    }
    Ok(hasher.finish())
}

/// Downloads the object into the private file `path` and returns its SHA-256.
async fn download_hashing(
    store: &dyn ObjectStore,
    key: &ObjectKey,
    size: u64,
    path: &Path,
) -> VfsResult<digest::Digest> {
    let mut file = std::fs::File::create(path).map_err(|e| internal("replica temp file", e))?;
    let mut hasher = digest::Context::new(&digest::SHA256);
    let mut at = 0;
    while at < size {
        let n = COPY_STEP.min(size - at);
        let part = store.get_range(key, at, n).await?;
        hasher.update(&part);
        file.write_all(&part)
            .map_err(|e| internal("replica temp file", e))?;
        at += n;
    }
    file.sync_all()
        .map_err(|e| internal("replica temp file", e))?;
    Ok(hasher.finish())
}

/// Copies `key` from `primary` to `replica` (the replica may be another account, where
/// `CopyObject` cannot reach): from memory when one read holds the object, else through the
/// local file `tmp`. Then reads the replica's copy back and accepts it only if its size and
/// SHA-256 match what was read from the primary. An object already gone from the primary
/// (replaced or deleted) needs no copy.
async fn copy_verified(
    primary: &dyn ObjectStore,
    replica: &dyn ObjectStore,
    key: &ObjectKey,
    tmp: &Path,
) -> VfsResult<()> {
    let size = match primary.head(key).await {
        Ok(m) => m.size,
        Err(ObjectError::NotFound) => {
            debug!(object = %key, "object gone before replication");
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    let source_digest = if size <= COPY_STEP {
        // One read holds it all: copy from memory, no spool file.
        let body = primary.get_range(key, 0, size).await?;
        let source_digest = digest::digest(&digest::SHA256, &body);
        replica.put(key, body).await?;
        source_digest
    } else {
        let copied = match download_hashing(primary, key, size, tmp).await {
            Ok(source_digest) => replica
                .put_file(key, tmp)
                .await
                .map(|()| source_digest)
                .map_err(VfsError::from),
            Err(e) => Err(e),
        };
        let _ = std::fs::remove_file(tmp);
        copied?
    };
    verify_copy(replica, key, size, &source_digest).await
}

/// Accepts the replica's copy of `key` only if it has `size` bytes and SHA-256 `source_digest`.
async fn verify_copy(
    replica: &dyn ObjectStore,
    key: &ObjectKey,
    size: u64,
    source_digest: &digest::Digest,
) -> VfsResult<()> {
    let replica_size = replica.head(key).await?.size;
    if replica_size != size
        || object_digest(replica, key, size).await?.as_ref() != source_digest.as_ref()
    {
        return Err(VfsError::new(
            ErrorKind::Integrity,
            "replica copy differs from the primary (size or SHA-256)",
        ));
    }
    Ok(())
}

/// Copies objects whose bytes came with their jobs (small files kept in their rows) to the
/// replica and verifies each copy as [`copy_verified`] does, in [`PARALLEL_JOBS`] groups at
/// once: a store that makes a batch durable at once (a local directory) flushes once per
/// group, and one that takes objects one request at a time (S3) has as many requests in
/// flight as the other jobs. Returns every job with its outcome.
async fn copy_batch_verified(
    jobs: Vec<ReplicationJob>,
    replica: &dyn ObjectStore,
) -> Vec<(ReplicationJob, VfsResult<()>)> {
    let mut groups: [Vec<ReplicationJob>; PARALLEL_JOBS] = Default::default();
    for (i, job) in jobs.into_iter().enumerate() {
        if let Some(group) = groups.get_mut(i % PARALLEL_JOBS) {
            group.push(job);
        }
    }
    let [a, b, c, d] = groups;
    let (a, b, c, d) = tokio::join!(
        copy_group_verified(a, replica),
        copy_group_verified(b, replica),
        copy_group_verified(c, replica),
        copy_group_verified(d, replica),
    );
    a.into_iter().chain(b).chain(c).chain(d).collect()
}

/// One group of [`copy_batch_verified`]: one [`ObjectStore::put_many`], then each copy
/// verified. A job whose key is malformed has nothing to do.
async fn copy_group_verified(
    jobs: Vec<ReplicationJob>,
    replica: &dyn ObjectStore,
) -> Vec<(ReplicationJob, VfsResult<()>)> {
    if jobs.is_empty() {
        return Vec::new();
    }
    let mut outcomes = Vec::with_capacity(jobs.len());
    let mut copies = Vec::with_capacity(jobs.len());
    for mut job in jobs {
        match (ObjectKey::parse(&job.object_key), job.inline_object.take()) {
            (Ok(key), Some(bytes)) => {
                let body = Bytes::from(bytes);
                let source_digest = digest::digest(&digest::SHA256, &body);
                copies.push((job, key, body, source_digest));
            }
            _ => outcomes.push((job, Ok(()))),
        }
    }
    let items = copies
        .iter()
        .map(|(_, key, body, _)| (key.clone(), body.clone()))
        .collect();
    let stored = replica.put_many(items).await;
    for ((job, key, body, source_digest), stored) in copies.into_iter().zip(stored) {
        let result = match stored {
            Ok(()) => verify_copy(replica, &key, body.len() as u64, &source_digest).await,
            Err(e) => Err(e.into()),
        };
        outcomes.push((job, result));
    }
    outcomes
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use async_trait::async_trait;
    use bytes::Bytes;
    use coffer_object::{LocalDirStore, ObjectMeta};

    use super::*;

    /// A replica that stores what it is given with one byte flipped: a copy damaged on the
    /// way or at rest.
    #[derive(Debug)]
    struct FlippingStore(LocalDirStore);

    #[async_trait]
    impl ObjectStore for FlippingStore {
        fn describe(&self) -> String {
            "flipping".to_owned()
        }
        async fn put(&self, key: &ObjectKey, body: Bytes) -> Result<(), ObjectError> {
            let mut bytes = body.to_vec();
            if let Some(last) = bytes.last_mut() {
                *last ^= 1;
            }
            self.0.put(key, Bytes::from(bytes)).await
        }
        async fn put_file(&self, key: &ObjectKey, file: &Path) -> Result<(), ObjectError> {
            let mut bytes = std::fs::read(file)?;
            if let Some(last) = bytes.last_mut() {
                *last ^= 1;
            }
            self.0.put(key, Bytes::from(bytes)).await
        }
        async fn get_range(
            &self,
            key: &ObjectKey,
            start: u64,
            len: u64,
        ) -> Result<Bytes, ObjectError> {
            self.0.get_range(key, start, len).await
        }
        async fn head(&self, key: &ObjectKey) -> Result<ObjectMeta, ObjectError> {
            self.0.head(key).await
        }
        async fn copy(&self, from: &ObjectKey, to: &ObjectKey) -> Result<(), ObjectError> {
            self.0.copy(from, to).await
        }
        async fn delete(&self, key: &ObjectKey) -> Result<(), ObjectError> {
            self.0.delete(key).await
        }
    }

    fn stores(dir: &Path) -> (LocalDirStore, LocalDirStore, PathBuf) {
        let primary = LocalDirStore::open(&dir.join("primary")).unwrap();
        let replica = LocalDirStore::open(&dir.join("replica")).unwrap();
        (primary, replica, dir.join("copy.tmp"))
    }

    /// Larger than one copy step, so the digest covers several ranged reads.
    fn body() -> Bytes {
        Bytes::from(
            (0..(COPY_STEP as usize + 4_099))
                .map(|i| (i % 253) as u8)
                .collect::<Vec<_>>(),
        )
    }

    #[tokio::test]
    async fn verified_copy_lands_byte_for_byte_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let (primary, replica, tmp) = stores(dir.path());
        let key = ObjectKey::generate().unwrap();
        primary.put(&key, body()).await.unwrap();

        copy_verified(&primary, &replica, &key, &tmp).await.unwrap();

        let size = body().len() as u64;
        assert_eq!(replica.get_range(&key, 0, size).await.unwrap(), body());
        assert!(!tmp.exists());
    }

    #[tokio::test]
    async fn copy_damaged_on_the_replica_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (primary, replica, tmp) = stores(dir.path());
        let key = ObjectKey::generate().unwrap();
        primary.put(&key, body()).await.unwrap();

        let result = copy_verified(&primary, &FlippingStore(replica), &key, &tmp).await;

        let error = result.expect_err("a damaged copy must not count as replicated");
        assert_eq!(error.kind(), ErrorKind::Integrity);
    }

    /// A copy job for an object kept in its row, with the row's bytes.
    fn inline_job(id: i64, object_key: &str, bytes: &[u8]) -> ReplicationJob {
        ReplicationJob {
            id,
            object_key: object_key.to_owned(),
            op: ReplicationOp::Copy,
            attempts: 0,
            last_error: None,
            created_ms: 0,
            inline_object: Some(bytes.to_vec()),
        }
    }

    #[tokio::test]
    async fn a_batch_of_small_objects_lands_byte_for_byte_and_verified() {
        let dir = tempfile::tempdir().unwrap();
        let (_, replica, _) = stores(dir.path());
        let keys: Vec<ObjectKey> = (0..3).map(|_| ObjectKey::generate().unwrap()).collect();
        let mut jobs: Vec<ReplicationJob> = keys
            .iter()
            .zip(1..)
            .map(|(key, id)| inline_job(id, key.as_str(), &vec![id as u8; 4_000 + id as usize]))
            .collect();
        jobs.push(inline_job(9, "not-a-key", b"ignored"));

        let outcomes = copy_batch_verified(jobs, &replica).await;

        assert_eq!(outcomes.len(), 4, "every job comes back");
        for (job, result) in &outcomes {
            assert!(result.is_ok(), "job {}: {result:?}", job.id);
        }
        for (key, id) in keys.iter().zip(1..) {
            let size = 4_000 + id as u64;
            let stored = replica.get_range(key, 0, size).await.unwrap();
            assert_eq!(stored, vec![id as u8; size as usize]);
        }
    }

    #[tokio::test]
    async fn a_batch_copy_damaged_on_the_replica_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (_, replica, _) = stores(dir.path());
        let jobs: Vec<ReplicationJob> = (1..=2)
            .map(|id| inline_job(id, ObjectKey::generate().unwrap().as_str(), b"sealed bytes"))
            .collect();

        let outcomes = copy_batch_verified(jobs, &FlippingStore(replica)).await;

        assert_eq!(outcomes.len(), 2);
        for (job, result) in outcomes {
            let error = result.expect_err("a damaged copy must not count as replicated");
            assert_eq!(error.kind(), ErrorKind::Integrity, "job {}", job.id);
        }
    }

    #[tokio::test]
    async fn object_gone_from_the_primary_needs_no_copy() {
        let dir = tempfile::tempdir().unwrap();
        let (primary, replica, tmp) = stores(dir.path());
        let key = ObjectKey::generate().unwrap();

        copy_verified(&primary, &replica, &key, &tmp).await.unwrap();

        assert!(matches!(
            replica.head(&key).await,
            Err(ObjectError::NotFound)
        ));
    }
}
