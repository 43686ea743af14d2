//! Operator checks over every committed file: replication status, resync and fsck.
//!
//! They walk the namespace rows (never a bucket listing), so they need only `GetObject` and
//! `HeadObject`, and they report object keys and node ids, never names.

use std::sync::Arc;

use bytes::BytesMut;
use coffer_format::{ChunkCipher, ContentId, HEADER_LEN, Layout};
use coffer_meta::{FileContent, MetaError, Node, NodeKind};
use coffer_object::{ObjectError, ObjectKey, ObjectStore};

use crate::clock::now_ms;
use crate::error::{ErrorKind, VfsError, VfsResult};
use crate::inline::{EmptyStore, InlineObject};
use crate::vault::Vault;

/// Chunks opened per ranged read by `fsck --deep`.
const DEEP_CHECK_CHUNKS: u64 = 16;

/// The replication outbox at a glance.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplicationStatus {
    /// Jobs (copies and deletes) not yet done.
    pub pending: usize,
    /// Age of the oldest pending job in milliseconds; `None` when nothing is pending.
    pub oldest_pending_age_ms: Option<i64>,
    /// Pending jobs that have failed at least once.
    pub failing: usize,
    /// The error of the most-retried pending job, if any failed.
    pub last_error: Option<String>,
}

/// What `resync` did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ResyncReport {
    /// Committed files looked at.
    pub checked: usize,
    /// Objects that were missing or wrong on the replica and were copied again.
    pub copied: usize,
    /// Objects that could not be copied.
    pub failed: usize,
}

/// One thing `fsck` found wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FsckProblem {
    /// The file's node id (for `usage`: the tenant's root folder).
    pub node_id: i64,
    /// Its object key (empty for `usage`).
    pub object_key: String,
    /// `"primary"`, `"replica"`, `"inline"` (a small file's object in its metadata row), or
    /// `"usage"` (a tenant's usage count, which quotas are checked against).
    pub store: &'static str,
    /// What is wrong.
    pub problem: String,
    /// `fsck --repair` replaced the primary's (or the row's, for `inline`) copy with the
    /// replica's verified copy, or (for `usage`) set the count to a recount.
    pub repaired: bool,
}

/// The result of `fsck`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FsckReport {
    /// Committed files checked.
    pub files: usize,
    /// Everything found wrong; empty means clean.
    pub problems: Vec<FsckProblem>,
}

/// A committed file: its node id, tenant and content row.
struct CommittedFile {
    node_id: i64,
    tenant_id: i64,
    content: FileContent,
}

impl Vault {
    /// Counts of the replication outbox (reads every pending job).
    pub async fn replication_status(&self) -> VfsResult<ReplicationStatus> {
        let jobs = self.inner.b.meta.pending_replication(u32::MAX).await?;
        let now = now_ms();
        let worst = jobs
            .iter()
            .filter(|job| job.attempts > 0)
            .max_by_key(|job| job.attempts);
        Ok(ReplicationStatus {
            pending: jobs.len(),
            oldest_pending_age_ms: jobs.iter().map(|job| now - job.created_ms).max(),
            failing: jobs.iter().filter(|job| job.attempts > 0).count(),
            last_error: worst.and_then(|job| job.last_error.clone()),
        })
    }

    /// Copies again, verified, every committed object the replica lacks or holds at the
    /// wrong size. A no-op without a replica.
    pub async fn resync_replica(&self) -> VfsResult<ResyncReport> {
        let mut report = ResyncReport::default();
        let Some(replica) = self.inner.b.replica.clone() else {
            return Ok(report);
        };
        for file in self.committed_files().await? {
            report.checked += 1;
            let key = ObjectKey::parse(&file.content.object_key)?;
            let expected = expected_object_len(&file.content)?;
            match replica.head(&key).await {
                Ok(meta) if meta.size == expected => continue,
                Ok(_) | Err(ObjectError::NotFound) => {}
                Err(e) => return Err(e.into()),
            }
            match self.copy_to_replica(&key, replica.as_ref()).await {
                Ok(()) => report.copied += 1,
                Err(e) => {
                    tracing::warn!(object = %key, error = %e, "resync could not copy an object");
                    report.failed += 1;
                }
            }
        }
        Ok(report)
    }

    /// Checks that every committed file's object exists with the right size in the primary
    /// and the replica; with `deep`, also reads and authenticates every chunk of both. With
    /// `repair`, a primary object that is missing or wrong is replaced by the replica's copy
    /// once every chunk of that copy has been authenticated (a damaged replica is never copied).
    /// Then checks each tenant's usage count against its files; `repair` recounts one that
    /// differs.
    pub async fn fsck(&self, deep: bool, repair: bool) -> VfsResult<FsckReport> {
        let b = &self.inner.b;
        let mut stores: Vec<(&'static str, Arc<dyn ObjectStore>)> =
            vec![("primary", b.primary.clone())];
        if let Some(replica) = &b.replica {
            stores.push(("replica", replica.clone()));
        }
        let mut report = FsckReport::default();
        for file in self.committed_files().await? {
            report.files += 1;
            for (name, store) in &stores {
                let (name, store) = match (file.content.inline, *name) {
                    // A small file's object is in its row, not in the primary store: check
                    // the row's bytes in its place (the replica's copy as for any object).
                    (true, "primary") => ("inline", self.inline_source(&file).await),
                    _ => (*name, store.clone()),
                };
                if let Err(problem) = self.check_file(store.as_ref(), &file, deep).await {
                    let repaired = repair
                        && match name {
                            "primary" => self.repair_primary(&file).await,
                            "inline" => self.repair_inline(&file).await,
                            _ => false,
                        };
                    report.problems.push(FsckProblem {
                        node_id: file.node_id,
                        object_key: file.content.object_key.clone(),
                        store: name,
                        problem,
                        repaired,
                    });
                }
            }
        }
        self.check_usage(repair, &mut report).await?;
        Ok(report)
    }

    /// Adds a problem for each tenant whose usage count differs from its files.
    async fn check_usage(&self, repair: bool, report: &mut FsckReport) -> VfsResult<()> {
        let meta = &self.inner.b.meta;
        for tenant in meta.list_tenants().await? {
            let check = match meta.check_usage(tenant.id, repair).await {
                Ok(check) => check,
                // Deleted since it was listed.
                Err(MetaError::NotFound) => continue,
                Err(e) => return Err(e.into()),
            };
            if check.recorded == check.counted {
                continue;
            }
            report.problems.push(FsckProblem {
                node_id: tenant.root_node_id,
                object_key: String::new(),
                store: "usage",
                problem: format!(
                    "tenant {}: the usage count says {} bytes in {} files, its files hold {} \
                     bytes in {}",
                    tenant.id,
                    check.recorded.bytes,
                    check.recorded.files,
                    check.counted.bytes,
                    check.counted.files
                ),
                repaired: check.recounted,
            });
        }
        Ok(())
    }

    /// The row's copy of an inline file's object, as a store; an empty one (every check then
    /// finds the object missing) if the row no longer holds it.
    async fn inline_source(&self, file: &CommittedFile) -> Arc<dyn ObjectStore> {
        let empty = || -> Arc<dyn ObjectStore> { Arc::new(EmptyStore) };
        let Ok(key) = ObjectKey::parse(&file.content.object_key) else {
            return empty();
        };
        match InlineObject::fetch(self.inner.b.meta.as_ref(), &key).await {
            Ok(Some(store)) => store,
            Ok(None) => empty(),
            Err(e) => {
                tracing::warn!(object = %key, error = %e, "fsck could not read an inline object");
                empty()
            }
        }
    }

    /// Puts the replica's copy of an inline file's object back into its row, after
    /// authenticating every chunk of that copy; `true` if the row now holds a good copy.
    async fn repair_inline(&self, file: &CommittedFile) -> bool {
        let b = &self.inner.b;
        let Some(replica) = &b.replica else {
            return false;
        };
        let (Ok(key), Ok(len)) = (
            ObjectKey::parse(&file.content.object_key),
            expected_object_len(&file.content),
        ) else {
            return false;
        };
        if let Err(e) = self.check_file(replica.as_ref(), file, true).await {
            tracing::warn!(object = %key, node_id = file.node_id, error = %e, "cannot repair an inline object: the replica's copy is bad too");
            return false;
        }
        let restored = match replica.get_range(&key, 0, len).await {
            Ok(sealed) => b.meta.restore_inline_object(key.as_str(), &sealed).await,
            Err(e) => {
                tracing::warn!(object = %key, error = %e, "reading the replica's copy failed");
                return false;
            }
        };
        match restored {
            Ok(true) => {
                tracing::warn!(object = %key, node_id = file.node_id, "repaired an inline object from the verified replica copy");
                let source = self.inline_source(file).await;
                self.check_file(source.as_ref(), file, true).await.is_ok()
            }
            Ok(false) => false,
            Err(e) => {
                tracing::warn!(object = %key, error = %e, "writing the repaired inline object failed");
                false
            }
        }
    }

    /// Copies `file`'s object from the replica to the primary after authenticating every chunk
    /// of the replica's copy; `true` if the primary now holds a good copy.
    async fn repair_primary(&self, file: &CommittedFile) -> bool {
        let b = &self.inner.b;
        let Some(replica) = &b.replica else {
            return false;
        };
        let Ok(key) = ObjectKey::parse(&file.content.object_key) else {
            return false;
        };
        if let Err(e) = self.check_file(replica.as_ref(), file, true).await {
            tracing::warn!(object = %key, node_id = file.node_id, error = %e, "cannot repair the primary copy: the replica's copy is bad too");
            return false;
        }
        let tmp = self.inner.spool.path(&format!("{key}.repair"));
        match super::copy_verified(replica.as_ref(), b.primary.as_ref(), &key, &tmp).await {
            Ok(()) => {
                tracing::warn!(object = %key, node_id = file.node_id, "repaired the primary copy from the verified replica copy");
                self.check_file(b.primary.as_ref(), file, true)
                    .await
                    .is_ok()
            }
            Err(e) => {
                tracing::warn!(object = %key, node_id = file.node_id, error = %e, "copying the replica's copy to the primary failed");
                false
            }
        }
    }

    /// `Err` with a description of what is wrong with `file`'s object in `store`.
    async fn check_file(
        &self,
        store: &dyn ObjectStore,
        file: &CommittedFile,
        deep: bool,
    ) -> Result<(), String> {
        let key = ObjectKey::parse(&file.content.object_key).map_err(|e| e.to_string())?;
        let expected = expected_object_len(&file.content).map_err(|e| e.to_string())?;
        match store.head(&key).await {
            Ok(meta) if meta.size == expected => {}
            Ok(meta) => return Err(format!("size {} where {expected} is expected", meta.size)),
            Err(ObjectError::NotFound) => return Err("object missing".to_owned()),
            Err(e) => return Err(format!("cannot check: {e}")),
        }
        if deep {
            self.open_every_chunk(store, &key, file)
                .await
                .map_err(|e| format!("chunk check failed: {e}"))?;
        }
        Ok(())
    }

    /// Reads the object `DEEP_CHECK_CHUNKS` chunks at a time and opens each run; the
    /// plaintext is dropped at once.
    async fn open_every_chunk(
        &self,
        store: &dyn ObjectStore,
        key: &ObjectKey,
        file: &CommittedFile,
    ) -> VfsResult<()> {
        let content = &file.content;
        let content_id =
            ContentId(content.content_id.as_slice().try_into().map_err(|_| {
                VfsError::new(ErrorKind::Integrity, "stored content id is malformed")
            })?);
        let keys = self
            .tenant_keys(file.tenant_id, content.key_version)
            .await?;
        let dek = keys.unwrap_dek(&content.wrapped_dek, &content_id)?;
        let header = store.get_range(key, 0, HEADER_LEN as u64).await?;
        let cipher = ChunkCipher::open_header(&dek, content_id, &header)?;
        let layout = cipher.layout();
        let size = u64::try_from(content.size).unwrap_or(0);
        let count = layout.chunk_count(size);
        let mut first = 0;
        let mut plaintext = Vec::new();
        while first < count {
            let end = count.min(first + DEEP_CHECK_CHUNKS);
            let start_byte = layout.chunk_offset(first);
            let end_byte = if end >= count {
                layout.object_len(size)
            } else {
                layout.chunk_offset(end)
            };
            let sealed = store
                .get_range(key, start_byte, end_byte - start_byte)
                .await?;
            let mut sealed = BytesMut::from(&sealed[..]);
            plaintext.clear();
            cipher.open_chunks(first, &mut sealed, size, &mut plaintext)?;
            first = end;
        }
        Ok(())
    }

    /// Every committed file of every tenant, found by walking the folder rows.
    async fn committed_files(&self) -> VfsResult<Vec<CommittedFile>> {
        let meta = &self.inner.b.meta;
        let mut files = Vec::new();
        for tenant in meta.list_tenants().await? {
            let mut folders = vec![tenant.root_node_id];
            while let Some(folder) = folders.pop() {
                for node in meta.children(tenant.id, folder).await? {
                    collect_node(node, &mut folders, &mut files);
                }
            }
        }
        Ok(files)
    }
}

fn collect_node(node: Node, folders: &mut Vec<i64>, files: &mut Vec<CommittedFile>) {
    match (node.kind, node.content) {
        (NodeKind::Dir, _) => folders.push(node.id),
        (NodeKind::File, Some(content)) => files.push(CommittedFile {
            node_id: node.id,
            tenant_id: node.tenant_id,
            content,
        }),
        (NodeKind::File, None) => {}
    }
}

/// The stored length of a file's object, from its trusted row.
fn expected_object_len(content: &FileContent) -> VfsResult<u64> {
    let layout = Layout::new(content.chunk_size)?;
    Ok(layout.object_len(u64::try_from(content.size).unwrap_or(0)))
}
