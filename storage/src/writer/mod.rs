//! Writing a file version. [`FileWriter`] composes three stages, each in its own file:
//!
//! - [`reorder`]: writes at any offset (SFTP pipelines them) → one contiguous plaintext
//!   stream; the one record of which bytes arrived;
//! - [`sealer`]: plaintext → fixed-size chunks sealed under the version's data key;
//! - [`sink`]: sealed chunks → memory, the spool ([`spool_file`]) and the primary store, with
//!   the upload's row.
//!
//! The writer itself fills holes (from the base version a resume or append overlays, else with
//! zeros), and owns the outcome: one metadata transaction makes the file visible at
//! [`FileWriter::commit`]; [`FileWriter::interrupted`] applies the partial-upload policy;
//! [`FileWriter::abort`] (or a drop) leaves nothing. A resumed upload commits only if the base
//! version is unchanged.

mod batch;
mod reorder;
mod sealer;
mod sink;
mod spool_file;

use std::time::SystemTime;

use coffer_meta::{CommitFile, FileContent};
use coffer_object::ObjectKey;
use tracing::{debug, info, warn};

use crate::clock::{now_ms, time_to_ms};
use crate::error::{ErrorKind, VfsError, VfsResult};
use crate::ids::random_id;
use crate::reader::FileReader;
use crate::vfs::{FileInfo, Vfs};
use reorder::{Placement, ReorderBuffer};
use sealer::Sealer;
use sink::{Sink, SinkTarget, Stored};

/// A hole in the written data is filled (from the base version, else with zeros) once the
/// client has written this far beyond it: clients pipeline writes, but never this deep.
const GAP_SLACK: u64 = 8 * 1024 * 1024;
/// Holes are filled this much at a time.
const FILL_STEP: u64 = 1024 * 1024;
static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];

/// Where a writer's file will be committed.
#[derive(Debug)]
pub(crate) struct WriteTarget {
    pub(crate) parent_id: i64,
    pub(crate) name: String,
    pub(crate) name_index: Vec<u8>,
    /// The existing file's (id, version) when the upload started, if there was one.
    pub(crate) expect: Option<(i64, i64)>,
    /// For a new name: this upload's place among those in flight to it.
    pub(crate) _claim: Option<crate::inflight::NewNameClaim>,
}

/// What an upload cut off before its client finished it leaves behind. One policy for every
/// protocol, set by the deployment (`uploads.keep_partial`), applied by
/// [`FileWriter::interrupted`]. Whatever it says, an interrupted upload never replaces a
/// complete version: a file that existed when the upload began stays as it was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PartialUploads {
    /// Keep the contiguous bytes received as the file when the name held no file when the
    /// upload began, so the client can resume it (SFTP `reput`, FTP `REST`+`STOR`/`APPE`).
    KeepNewFiles,
    /// Keep nothing.
    Discard,
}

/// What [`FileWriter::interrupted`] did with the bytes received.
#[derive(Debug)]
pub enum Interrupted {
    /// They were committed as a new file (resumable).
    Kept(FileInfo),
    /// They were thrown away; any earlier version is untouched.
    Discarded,
}

/// An upload in progress. Nothing is visible to anyone until [`FileWriter::commit`] returns.
pub struct FileWriter {
    vfs: Vfs,
    target: WriteTarget,
    /// The version a resume or append overlays: holes below its length are filled from it.
    base: Option<FileReader>,
    reorder: ReorderBuffer,
    sealer: Sealer,
    sink: Sink,
    mtime_ms: Option<i64>,
}

impl std::fmt::Debug for FileWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileWriter")
            .field("object", self.sink.object_key())
            .field("end", &self.reorder.end())
            .finish()
    }
}

impl FileWriter {
    pub(crate) async fn start(
        vfs: Vfs,
        target: WriteTarget,
        base: Option<FileReader>,
    ) -> VfsResult<Self> {
        let inner = vfs.vault.inner.clone();
        let sealer = Sealer::new(inner.opts.chunk_size)?;
        let object_key = ObjectKey::generate()?;
        let sink = Sink::start(
            SinkTarget {
                primary: inner.b.primary.clone(),
                uploads: inner.b.meta.clone(),
                spool_path: inner.spool.path(&object_key.to_string()),
                object_key,
                tenant_id: vfs.tenant.id,
                node_name: inner.opts.node_name.clone(),
                inline_max: inner.opts.inline_max_bytes as usize,
            },
            &sealer.header(),
            sealer.chunk_size() as usize,
        )
        .await?;
        let base_len = base.as_ref().map(FileReader::size).unwrap_or(0);
        debug!(object = %sink.object_key(), "upload started");
        Ok(Self {
            reorder: ReorderBuffer::new(base_len, inner.opts.max_buffered_write_bytes),
            vfs,
            target,
            base,
            sealer,
            sink,
            mtime_ms: None,
        })
    }

    /// The file's length as written so far (what `fstat` on an open handle reports).
    pub fn len(&self) -> u64 {
        self.reorder.end()
    }

    /// `true` if the upload replaces a file that held the name when it began (`false`: it
    /// creates the name).
    pub fn replaces(&self) -> bool {
        self.target.expect.is_some()
    }

    /// `true` if nothing has been written and there is no base content.
    pub fn is_empty(&self) -> bool {
        self.reorder.end() == 0
    }

    /// How far the file's start holds only bytes received — the base version's, and what the
    /// client sent without a hole before it (zeros filled into a hole do not count): the
    /// length a client could resume this upload from.
    pub fn contiguous_len(&self) -> u64 {
        self.reorder.contiguous_len()
    }

    /// Sets the modification time recorded at commit (SFTP fsetstat, `put -p`).
    pub fn set_mtime(&mut self, mtime: SystemTime) {
        self.mtime_ms = Some(time_to_ms(mtime));
    }

    /// Writes `data` at `offset`. Offsets may arrive in any order within the reorder window;
    /// rewriting bytes that are already sealed is refused with `Unsupported`.
    pub async fn write_at(&mut self, offset: u64, data: &[u8]) -> VfsResult<()> {
        if data.is_empty() {
            return Ok(());
        }
        offset
            .checked_add(data.len() as u64)
            .ok_or_else(|| VfsError::new(ErrorKind::InvalidPath, "write offset overflows"))?;
        if offset < self.sealer.sealed_len() {
            return Err(VfsError::new(
                ErrorKind::Unsupported,
                "rewriting data far behind the write position is not supported; upload the file again",
            ));
        }
        if let Placement::InOrder { rewrite, append } = self.reorder.place(offset, data)? {
            self.sealer.rewrite(offset, rewrite)?;
            self.pass_on(append).await?;
            self.pass_on_ready().await?;
        }
        if self.reorder.has_held() {
            self.fill_holes(self.reorder.end().saturating_sub(GAP_SLACK))
                .await?;
        }
        Ok(())
    }

    /// Hands contiguous plaintext to the sealer, and each chunk it seals to the sink. A chunk
    /// is sealed once a byte beyond it exists, so the last one can be sealed as final.
    async fn pass_on(&mut self, mut rest: &[u8]) -> VfsResult<()> {
        while !rest.is_empty() {
            if self.sealer.is_full() {
                // Before the chunk leaves the sealer, so a refused upload stays consistent.
                (self.vfs.vault.inner.free_space).check(crate::spool::Admit::Growth)?;
                self.sink.push(self.sealer.seal(false)?).await?;
                continue;
            }
            let taken = self.sealer.fill(rest);
            rest = rest.get(taken..).unwrap_or_default();
        }
        Ok(())
    }

    /// Passes on held writes that now reach the frontier.
    async fn pass_on_ready(&mut self) -> VfsResult<()> {
        while let Some(segment) = self.reorder.next_ready() {
            self.pass_on(&segment).await?;
        }
        Ok(())
    }

    /// Fills holes below `upto` from the base version (or with zeros past its end).
    async fn fill_holes(&mut self, upto: u64) -> VfsResult<()> {
        loop {
            self.pass_on_ready().await?;
            let Some(hole) = self.reorder.hole_below(upto) else {
                return Ok(());
            };
            let n = (hole.end - hole.start).min(FILL_STEP);
            let base_len = self.reorder.base_len();
            match &self.base {
                Some(base) if hole.start < base_len => {
                    let n = n.min(base_len - hole.start) as usize;
                    let data = base.read_at(hole.start, n).await?;
                    if data.len() != n {
                        return Err(VfsError::new(
                            ErrorKind::Integrity,
                            "base version is shorter than its row says",
                        ));
                    }
                    self.reorder.filled(n as u64, false);
                    self.pass_on(&data).await?;
                }
                _ => {
                    let n = (n as usize).min(ZEROS.len());
                    let zeros = ZEROS.get(..n).unwrap_or(&ZEROS);
                    self.reorder.filled(n as u64, true);
                    self.pass_on(zeros).await?;
                }
            }
        }
    }

    /// Seals the tail, stores the object durably, and commits the row in one transaction.
    /// Only when this returns `Ok` may the client be told the upload succeeded.
    pub async fn commit(mut self) -> VfsResult<FileInfo> {
        let result = self.commit_inner().await;
        // Whatever happened, the next lookup of this name by any session reads it afresh.
        self.vfs.forget_lookups(&[&self.target.name_index]);
        match &result {
            Ok(_) => self.sink.committed(),
            Err(_) => self.sink.clean_up().await,
        }
        result
    }

    async fn commit_inner(&mut self) -> VfsResult<FileInfo> {
        let size = self.reorder.end();
        self.fill_holes(size).await?;
        if self.reorder.frontier() != size || self.reorder.has_held() || self.sealer.len() != size {
            return Err(VfsError::new(
                ErrorKind::Internal,
                "upload bookkeeping is inconsistent",
            ));
        }
        self.sink.push(self.sealer.seal_final(size)?).await?;
        let upload_id = self.sink.upload_id().await?;
        let inline_object = match self.sink.store().await? {
            Stored::Inline(bytes) => Some(bytes),
            Stored::InStore => None,
        };
        match self.commit_row(size, upload_id, inline_object).await {
            Ok(info) => {
                self.vfs.audit("upload", Some(info.id), "ok", Some(size));
                debug!(object = %self.sink.object_key(), node = info.id, size, "upload committed");
                Ok(info)
            }
            Err(e) => {
                self.sink.unstore().await;
                Err(e)
            }
        }
    }

    /// Commits the file's row; `inline_object` is the sealed object when the row holds it.
    async fn commit_row(
        &mut self,
        size: u64,
        upload_id: Option<i64>,
        inline_object: Option<Vec<u8>>,
    ) -> VfsResult<FileInfo> {
        let keys = self.vfs.keys().await?;
        let hash = self.sealer.content_hash();
        let content_id = self.sealer.content_id();
        let content = FileContent {
            size: size as i64,
            object_key: self.sink.object_key().to_string(),
            content_id: content_id.0.to_vec(),
            wrapped_dek: keys.wrap_dek(self.sealer.data_key(), &content_id)?,
            key_version: keys.key_version(),
            chunk_size: self.sealer.chunk_size() as u32,
            content_hash_enc: keys.seal_field("content-sha256", &content_id.0, hash.as_ref())?,
            inline: inline_object.is_some(),
        };
        let new_id = random_id()?;
        let now = now_ms();
        let outcome = self
            .vfs
            .vault
            .inner
            .b
            .meta
            .commit_file(&CommitFile {
                new_id,
                tenant_id: self.vfs.tenant.id,
                parent_id: self.target.parent_id,
                name_enc: keys.encrypt_name(new_id, &self.target.name)?,
                // A new name is indexed with the keys that encrypt it now: a tenant key
                // rotation may have begun since the upload opened (docs/KEYS.md).
                name_index: match self.target.expect {
                    Some(_) => self.target.name_index.clone(),
                    None => keys
                        .blind_index(self.target.parent_id, &self.target.name)
                        .to_vec(),
                },
                content,
                inline_object,
                mtime_ms: self.mtime_ms.unwrap_or(now),
                now_ms: now,
                expect_node: self.target.expect,
                expect_absent: self.target.expect.is_none(),
                upload_id,
                enforce_quota: true,
            })
            .await?;
        Ok(self.vfs.info(&outcome.node, self.target.name.clone()))
    }

    /// The client's connection ended before it said the upload was complete (a dropped SFTP
    /// session with the handle open, an FTPES data connection closed without TLS
    /// `close_notify`, an HTTP body cut short). Applies the deployment's [`PartialUploads`]
    /// policy: the bytes received are kept only for a name that held no file when the upload
    /// began, and only their contiguous start; otherwise nothing changes. An upload whose
    /// start already holds zeros filled into a hole is discarded too: a client resuming it at
    /// its size would continue over bytes it never sent. Logged and audited.
    pub async fn interrupted(mut self) -> Interrupted {
        let policy = self.vfs.vault.inner.opts.partial_uploads;
        let kept_len = self.reorder.frontier();
        let zeros = self.reorder.zeros_filled();
        let keep = policy == PartialUploads::KeepNewFiles
            && self.target.expect.is_none()
            && self.base.is_none()
            && !zeros
            && kept_len > 0;
        if !keep {
            let received = self.reorder.end();
            let replacing = self.target.expect.is_some();
            self.vfs.audit(
                "upload_interrupted",
                self.target.expect.map(|e| e.0),
                "discarded",
                Some(received),
            );
            info!(
                bytes = received,
                replacing,
                zeros_filled = zeros,
                "upload interrupted; discarded it (any earlier version is untouched)"
            );
            self.abort().await;
            return Interrupted::Discarded;
        }
        // Out-of-order bytes beyond the first hole cannot be part of a resumable start.
        self.reorder.truncate_to_frontier();
        let vfs = self.vfs.clone();
        match self.commit().await {
            Ok(info) => {
                info!(
                    bytes = kept_len,
                    "upload interrupted; kept the bytes received as a new file"
                );
                vfs.audit("upload_interrupted", Some(info.id), "kept", Some(kept_len));
                Interrupted::Kept(info)
            }
            Err(e) => {
                warn!(kind = e.kind().code(), error = %e, "upload interrupted; could not keep the bytes received");
                Interrupted::Discarded
            }
        }
    }

    /// Abandons the upload: nothing becomes visible, the spool file and upload row go.
    pub async fn abort(mut self) {
        self.sink.clean_up().await;
    }
}
