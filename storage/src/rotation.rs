//! Rotation of a tenant's key: a new version becomes current at once (new writes use it),
//! then every row under the old version is rewritten under the new one — names re-encrypted
//! and re-indexed, data keys rewrapped, content hashes resealed; file contents are never
//! touched — in bounded batches under a cursor kept in the database, online and resumable.
//! When no row is under the old version any more, its wrapped copies are destroyed.
//!
//! Lookups meanwhile find rows under either version (`Vfs::child_of`), and listings decrypt
//! each row with its own version. Each batch updates a row only if it is as it was read, so a
//! row a client changes meanwhile is found again by a later pass; a pass that rewrote
//! anything, or missed anything, is followed by another, and the old version is destroyed in
//! the same transaction that finds no row under it.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use coffer_format::ContentId;
use coffer_keys::{TenantKey, TenantKeys};
use coffer_meta::{
    KeyRotation, MetaError, Node, RekeyedContent, RekeyedNode, RotationCursor, Tenant,
};
use tracing::{info, warn};

use crate::error::{ErrorKind, VfsError, VfsResult};
use crate::tenant_keys::{KeyVersions, key_rows, own_keys};
use crate::vault::Vault;

/// Rows rewritten per transaction by default.
pub const DEFAULT_ROTATION_BATCH: u32 = 500;

/// The old version is destroyed no sooner than this after the rotation began: far beyond the
/// bound in which every process sees the new version as current
/// ([`crate::tenant_keys::VERSIONS_TTL`]), so no write under the old version can still be on
/// its way when no row is found under it.
pub(crate) const OLD_VERSION_GRACE: Duration = Duration::from_secs(5);

/// No row moves to the new version sooner than this after the rotation began: twice the
/// bound in which every process reads the tenant's key versions again
/// ([`crate::tenant_keys::VERSIONS_TTL`]). Until a process has read them, it looks names up
/// under the old version only; a row re-indexed before then would be missing to it (a folder
/// listed during the first second of a rotation answered 404).
pub(crate) const FIRST_MOVE_AFTER: Duration = Duration::from_secs(2);

/// How a rotation runs.
#[derive(Debug, Clone, Copy)]
pub struct RotateOptions {
    /// Rows per batch (one transaction each).
    pub batch: u32,
    /// Stop after this many batches, leaving the rotation to be resumed (tests; `None`: run
    /// to the end).
    pub max_batches: Option<u64>,
}

impl Default for RotateOptions {
    fn default() -> Self {
        Self {
            batch: DEFAULT_ROTATION_BATCH,
            max_batches: None,
        }
    }
}

/// Where a tenant's rotation stands (for progress lines and `coffer keys status`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotationProgress {
    /// The tenant.
    pub tenant: String,
    /// The version rows move from.
    pub from_version: u32,
    /// The version rows move to (current).
    pub to_version: u32,
    /// Rows under the old version when it began.
    pub total: i64,
    /// Rows rewritten so far.
    pub rewritten: i64,
    /// The pass (a later pass picks up rows changed while an earlier one read them).
    pub pass: u32,
    /// When it began, ms since the epoch.
    pub started_ms: i64,
    /// When it last made progress, ms since the epoch.
    pub updated_ms: i64,
}

impl RotationProgress {
    pub(crate) fn new(tenant: &str, r: &KeyRotation) -> Self {
        Self {
            tenant: tenant.to_owned(),
            from_version: r.from_version,
            to_version: r.to_version,
            total: r.total,
            rewritten: r.rewritten,
            pass: r.pass,
            started_ms: r.started_ms,
            updated_ms: r.updated_ms,
        }
    }
}

/// What `rotate_tenant` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantRotation {
    /// The rotation as it ended (or stopped).
    pub progress: RotationProgress,
    /// `true` if this call began it, `false` if it resumed one.
    pub started: bool,
    /// `true` if it finished: the old version's copies are destroyed.
    pub finished: bool,
    /// Wrapped copies of the old version destroyed.
    pub destroyed_copies: u64,
    /// Rows rewritten by this call.
    pub rewritten_now: u64,
    /// Rows whose name was taken under the new version by an entry written meanwhile (two
    /// uploads of one new name as the rotation began): renamed `NAME (key rotation ID)`.
    pub renamed: u64,
}

impl Vault {
    /// Rotates the tenant's key: begins a rotation (a new version, wrapped like version 1
    /// under every region's master key or the tenant's own keys), or resumes the one under
    /// way, and runs it to the end (or `opts.max_batches`). `progress` is called after every
    /// batch.
    pub(crate) async fn rotate_tenant(
        &self,
        tenant: &Tenant,
        opts: RotateOptions,
        progress: &mut (dyn FnMut(&RotationProgress) + Send),
    ) -> VfsResult<TenantRotation> {
        let meta = &self.inner.b.meta;
        let (rotation, started) = match meta.key_rotation(tenant.id).await? {
            Some(r) => (r, false),
            None => (self.start_rotation(tenant).await?, true),
        };
        if started {
            info!(
                tenant = tenant.name,
                from = rotation.from_version,
                to = rotation.to_version,
                rows = rotation.total,
                "tenant key rotation started: new writes use the new version"
            );
        } else {
            info!(
                tenant = tenant.name,
                from = rotation.from_version,
                to = rotation.to_version,
                done = rotation.rewritten,
                of = rotation.total,
                pass = rotation.pass,
                "tenant key rotation resumed"
            );
        }
        let mut run = Run {
            vault: self,
            tenant,
            report: TenantRotation {
                progress: RotationProgress::new(&tenant.name, &rotation),
                started,
                finished: false,
                destroyed_copies: 0,
                rewritten_now: 0,
                renamed: 0,
            },
            rotation,
            opts,
            name_taken: HashSet::new(),
            batches: 0,
        };
        run.run(progress).await?;
        Ok(run.report)
    }

    /// Makes a new version current: the next version number, a fresh key wrapped for every
    /// region, the rotation row, in one transaction.
    async fn start_rotation(&self, tenant: &Tenant) -> VfsResult<KeyRotation> {
        let meta = &self.inner.b.meta;
        let stored = meta.tenant_keys(tenant.id).await?;
        let from = tenant.key_version;
        let to = stored
            .iter()
            .map(|k| k.version)
            .max()
            .unwrap_or(from)
            .max(from)
            + 1;
        let own = meta.tenant_master_keys(tenant.id).await?;
        let key = TenantKey::generate()?;
        let copies = self
            .inner
            .b
            .keys
            .wrap_for_each_region(&key, tenant.id, to, &own_keys(&own))
            .await
            .map_err(VfsError::from)?;
        let now = crate::now_ms();
        let rows = key_rows(copies, tenant.id, to, now);
        let rotation = meta
            .start_key_rotation(tenant.id, from, to, &rows, now)
            .await
            .map_err(|e| match e {
                MetaError::Conflict => VfsError::new(
                    ErrorKind::Conflict,
                    format!(
                        "tenant {:?}: its key changed meanwhile (another rotation began); run \
                         the command again to resume it",
                        tenant.name
                    ),
                ),
                e => e.into(),
            })?;
        self.inner.key_cache.insert(
            tenant.id,
            to,
            Arc::new(TenantKeys::derive(&key, tenant.id, to)),
        );
        self.inner.key_versions.set(
            tenant.id,
            KeyVersions {
                current: to,
                previous: Some(from),
            },
        );
        Ok(rotation)
    }
}

/// Sleeps until `after` has passed since `started_ms` (ms since the epoch).
async fn wait_until(started_ms: i64, after: Duration) {
    let since = crate::now_ms().saturating_sub(started_ms);
    let after = i64::try_from(after.as_millis()).unwrap_or(i64::MAX);
    if since < after {
        let wait = u64::try_from(after - since).unwrap_or(0);
        tokio::time::sleep(Duration::from_millis(wait)).await;
    }
}

/// One run of a rotation.
struct Run<'a> {
    vault: &'a Vault,
    tenant: &'a Tenant,
    rotation: KeyRotation,
    opts: RotateOptions,
    report: TenantRotation,
    /// Rows whose new blind index was taken: given a distinct name on the next try.
    name_taken: HashSet<i64>,
    batches: u64,
}

impl Run<'_> {
    async fn run(&mut self, progress: &mut (dyn FnMut(&RotationProgress) + Send)) -> VfsResult<()> {
        let meta = &self.vault.inner.b.meta;
        let tid = self.tenant.id;
        wait_until(self.rotation.started_ms, FIRST_MOVE_AFTER).await;
        loop {
            if self.opts.max_batches.is_some_and(|max| self.batches >= max) {
                return Ok(());
            }
            let rows = meta
                .nodes_under_key_version(
                    tid,
                    self.rotation.from_version,
                    self.rotation.after_id,
                    self.opts.batch.max(1),
                )
                .await?;
            if rows.is_empty() {
                if self.try_finish().await? {
                    progress(&self.report.progress);
                    return Ok(());
                }
                // Rows are left (changed while a pass read them): another pass.
                self.advance(&[], 0, self.rotation.pass + 1).await?;
                continue;
            }
            let last = rows.last().map_or(self.rotation.after_id, |n| n.id);
            let rekeyed = self.rekey(&rows).await?;
            self.advance(&rekeyed, last, self.rotation.pass).await?;
            self.batches += 1;
            progress(&self.report.progress);
        }
    }

    /// The new names and keys of a batch of rows.
    async fn rekey(&mut self, rows: &[Node]) -> VfsResult<Vec<RekeyedNode>> {
        let to = self
            .vault
            .tenant_keys(self.tenant.id, self.rotation.to_version)
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for node in rows {
            out.push(self.rekey_node(node, &to).await?);
        }
        Ok(out)
    }

    async fn rekey_node(&mut self, node: &Node, to: &TenantKeys) -> VfsResult<RekeyedNode> {
        let vault = self.vault;
        let tid = self.tenant.id;
        let target = to.key_version();
        let (name_enc, name_index) = if node.name_key_version == target {
            (node.name_enc.clone(), node.name_index.clone())
        } else {
            let from = vault.tenant_keys(tid, node.name_key_version).await?;
            let mut name = from.decrypt_name(node.id, &node.name_enc).map_err(|e| {
                vault.inner.b.keys.metrics.failed_decryption();
                VfsError::from(e)
            })?;
            if self.name_taken.contains(&node.id) {
                name = format!("{name} (key rotation {:x})", node.id);
                self.report.renamed += 1;
                warn!(
                    tenant = self.tenant.name,
                    node = node.id,
                    "an entry of the same name was written under the new key version while \
                     the rotation began; this one is renamed with the suffix \
                     \"(key rotation <id>)\""
                );
            }
            let parent = node.parent_id.unwrap_or(0);
            (
                to.encrypt_name(node.id, &name)?,
                to.blind_index(parent, &name).to_vec(),
            )
        };
        let content = match &node.content {
            Some(c) if c.key_version != target => {
                let from = vault.tenant_keys(tid, c.key_version).await?;
                let cid: [u8; 16] = c.content_id.as_slice().try_into().map_err(|_| {
                    VfsError::new(ErrorKind::Integrity, "stored content id is malformed")
                })?;
                let cid = ContentId(cid);
                let dek = from.unwrap_dek(&c.wrapped_dek, &cid).inspect_err(|_| {
                    vault.inner.b.keys.metrics.failed_decryption();
                })?;
                let hash = from
                    .open_field("content-sha256", &c.content_id, &c.content_hash_enc)
                    .inspect_err(|_| vault.inner.b.keys.metrics.failed_decryption())?;
                Some(RekeyedContent {
                    wrapped_dek: to.wrap_dek(&dek, &cid)?,
                    content_hash_enc: to.seal_field("content-sha256", &c.content_id, &hash)?,
                    key_version: target,
                })
            }
            Some(c) => Some(RekeyedContent {
                wrapped_dek: c.wrapped_dek.clone(),
                content_hash_enc: c.content_hash_enc.clone(),
                key_version: c.key_version,
            }),
            None => None,
        };
        Ok(RekeyedNode {
            id: node.id,
            expect_version: node.version,
            expect_name_key_version: node.name_key_version,
            expect_key_version: node.content.as_ref().map(|c| c.key_version),
            name_enc,
            name_index,
            name_key_version: target,
            content,
        })
    }

    /// Writes a batch and moves the cursor to `after_id` in pass `pass`.
    async fn advance(&mut self, rows: &[RekeyedNode], after_id: i64, pass: u32) -> VfsResult<()> {
        let meta = &self.vault.inner.b.meta;
        let now = crate::now_ms();
        let cursor = RotationCursor { after_id, pass };
        let outcome = meta.rekey_nodes(self.tenant.id, rows, cursor, now).await?;
        self.name_taken.extend(outcome.name_taken.iter().copied());
        self.report.rewritten_now += outcome.rewritten;
        let rewritten = i64::try_from(outcome.rewritten).unwrap_or(i64::MAX);
        self.rotation.after_id = after_id;
        self.rotation.pass = pass;
        self.rotation.rewritten = self.rotation.rewritten.saturating_add(rewritten);
        self.rotation.updated_ms = now;
        self.report.progress = RotationProgress::new(&self.tenant.name, &self.rotation);
        Ok(())
    }

    /// Destroys the old version if no row is under it (waiting out the grace period first);
    /// `false` if rows are left (then another pass follows).
    async fn try_finish(&mut self) -> VfsResult<bool> {
        wait_until(self.rotation.started_ms, OLD_VERSION_GRACE).await;
        self.finish_now().await
    }

    async fn finish_now(&mut self) -> VfsResult<bool> {
        let meta = &self.vault.inner.b.meta;
        let tid = self.tenant.id;
        let Some(destroyed) = meta.finish_key_rotation(tid).await? else {
            return Ok(false);
        };
        self.vault
            .inner
            .key_cache
            .forget_version(tid, self.rotation.from_version);
        self.vault.inner.key_versions.forget(tid);
        self.report.finished = true;
        self.report.destroyed_copies = destroyed;
        info!(
            tenant = self.tenant.name,
            version = self.rotation.from_version,
            copies = destroyed,
            rewritten = self.rotation.rewritten,
            "tenant key rotation finished: no row is under the old version; its wrapped \
             copies are destroyed"
        );
        Ok(true)
    }
}
