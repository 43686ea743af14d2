//! The replicator and the garbage collector: background work over the outbox and garbage tables.

use std::io::Write;

use coffer_meta::ReplicationOp;
use coffer_object::{ObjectError, ObjectKey, ObjectStore};
use tracing::{debug, warn};

use crate::error::{VfsResult, internal};
use crate::vault::{Vault, now_ms};

/// Bytes copied per ranged read while replicating.
const COPY_STEP: u64 = 8 * 1024 * 1024;

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
    /// Works through up to `limit` pending replication jobs. A job is marked done only after
    /// the replica holds an object of the same size as the primary's.
    pub async fn replicate_once(&self, limit: u32) -> VfsResult<ReplicationReport> {
        let mut report = ReplicationReport::default();
        let b = &self.inner.b;
        let Some(replica) = &b.replica else {
            return Ok(report);
        };
        for job in b.meta.pending_replication(limit).await? {
            let key = match ObjectKey::parse(&job.object_key) {
                Ok(k) => k,
                Err(_) => {
                    b.meta.replication_done(job.id).await?;
                    continue;
                }
            };
            let result = match job.op {
                ReplicationOp::Copy => self.copy_to_replica(&key, replica.as_ref()).await,
                ReplicationOp::Delete => replica.delete(&key).await.map_err(Into::into),
            };
            match result {
                Ok(()) => {
                    b.meta.replication_done(job.id).await?;
                    match job.op {
                        ReplicationOp::Copy => report.copied += 1,
                        ReplicationOp::Delete => report.deleted += 1,
                    }
                }
                Err(e) => {
                    warn!(object = %key, attempts = job.attempts + 1, error = %e, "replication failed; will retry");
                    b.meta
                        .replication_failed(job.id, e.message(), now_ms())
                        .await?;
                    report.failed += 1;
                }
            }
        }
        Ok(report)
    }

    async fn copy_to_replica(&self, key: &ObjectKey, replica: &dyn ObjectStore) -> VfsResult<()> {
        let primary = &self.inner.b.primary;
        let size = match primary.head(key).await {
            Ok(m) => m.size,
            // Replaced or deleted before it was copied: nothing left to replicate.
            Err(ObjectError::NotFound) => {
                debug!(object = %key, "object gone before replication");
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        };
        let tmp = self.inner.spool.path(&format!("{key}.replica"));
        let mut file = std::fs::File::create(&tmp).map_err(|e| internal("replica temp file", e))?;
        let mut at = 0;
        while at < size {
            let n = COPY_STEP.min(size - at);
            let part = primary.get_range(key, at, n).await?;
            file.write_all(&part)
                .map_err(|e| internal("replica temp file", e))?;
            at += n;
        }
        file.sync_all()
            .map_err(|e| internal("replica temp file", e))?;
        drop(file);
        let put = replica.put_file(key, &tmp).await;
        let _ = std::fs::remove_file(&tmp);
        put?;
        let copied = replica.head(key).await?.size;
        if copied != size {
            return Err(crate::error::VfsError::new(
                crate::error::ErrorKind::Integrity,
                "replica copy has the wrong size",
            ));
        }
        Ok(())
    }

    /// Deletes from the primary store up to `limit` objects no committed row refers to.
    /// (Replica copies are deleted by the replicator through the outbox.)
    pub async fn collect_garbage(&self, limit: u32) -> VfsResult<usize> {
        let b = &self.inner.b;
        let mut n = 0;
        for g in b.meta.garbage(limit).await? {
            if let Ok(key) = ObjectKey::parse(&g.object_key) {
                b.primary.delete(&key).await?;
            }
            b.meta.garbage_done(g.id).await?;
            n += 1;
        }
        Ok(n)
    }
}
