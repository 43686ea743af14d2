//! Writing a file version: bytes are cut into chunks and sealed in memory, appended to the spool
//! (and streamed to the primary store as they arrive, when it supports that), stored as one
//! object on commit, and made visible by one metadata transaction.
//!
//! Writes may arrive out of order (SFTP pipelines them) and may overlay an existing version
//! (resume, append): the writer keeps a small reorder buffer and fills holes from the base
//! version or with zeros. Every seal uses a fresh random nonce, so re-sealing a tail chunk on
//! resume never reuses one; a resumed upload commits only if the base version is unchanged.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::SystemTime;

use aws_lc_rs::digest;
use bytes::Bytes;
use coffer_format::{ChunkCipher, ContentId, DataKey, NONCE_LEN};
use coffer_meta::{CommitFile, FileContent, NewUpload};
use coffer_object::{ObjectKey, StreamingUpload};
use tracing::{debug, info, warn};

use crate::error::{ErrorKind, VfsError, VfsResult, internal};
use crate::reader::FileReader;
use crate::vault::{now_ms, random_id};
use crate::vfs::{FileInfo, Vfs, time_to_ms};

/// A hole in the written data is filled (from the base version, else with zeros) once the
/// client has written this far beyond it: clients pipeline writes, but never this deep.
const GAP_SLACK: u64 = 8 * 1024 * 1024;
/// Sealed chunks are written to the spool in batches of about this size.
const SPOOL_BATCH: usize = 1024 * 1024;
/// A spool file bound for a local store is flushed to disk in the background every this many
/// bytes.
const WRITE_BACK_STEP: u64 = 32 * 1024 * 1024;
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
    base: Option<FileReader>,
    base_len: u64,
    dek: DataKey,
    content_id: ContentId,
    cipher: ChunkCipher,
    chunk_size: u64,
    /// NONCE_LEN placeholder bytes, then the plaintext of chunk `sealed` (not yet sealed).
    chunk: Vec<u8>,
    /// Chunks sealed so far.
    sealed: u64,
    /// Out-of-order data beyond the contiguous end, non-overlapping, keyed by offset.
    pending: BTreeMap<u64, Bytes>,
    pending_bytes: u64,
    /// The logical end of the file (largest offset written, or the base length).
    end: u64,
    hasher: digest::Context,
    /// Created with the first batch that leaves memory; a small file never needs one.
    spool_file: Option<std::fs::File>,
    /// Set by the first spool write: from then on the object is assembled in the spool, and a
    /// missing `spool_file` means a spool write failed (the writer is unusable).
    in_spool: bool,
    /// The background flush of the spool file started last, and how far it reaches.
    write_back: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    written_back: u64,
    spool_path: PathBuf,
    /// Bytes written to the spool file so far.
    spooled: u64,
    /// The primary store's upload of the spool file as it grows, if the store takes one.
    streaming: Option<Box<dyn StreamingUpload>>,
    batch: Vec<u8>,
    upload_row: UploadRow,
    object_key: ObjectKey,
    mtime_ms: Option<i64>,
    max_buffered: u64,
    finished: bool,
}

/// The upload's row in `uploads` (what recovery and clean-up look for). It is written while
/// the client sends its first bytes, so opening a file does not wait for it, and awaited
/// before anything of the upload leaves memory (the spool file, the object): whatever an
/// upload leaves behind always has its row.
enum UploadRow {
    Pending(tokio::task::JoinHandle<coffer_meta::MetaResult<i64>>),
    Written(i64),
    /// Writing it failed; the error was reported once.
    Failed,
}

impl UploadRow {
    /// The row's id, waiting for it to be written if need be.
    async fn settle(&mut self) -> VfsResult<i64> {
        if let UploadRow::Pending(handle) = self {
            let written = handle.await;
            *self = UploadRow::Failed;
            let id = written.map_err(|e| internal("upload row task", e))??;
            *self = UploadRow::Written(id);
        }
        match self {
            UploadRow::Written(id) => Ok(*id),
            _ => Err(VfsError::new(
                ErrorKind::Internal,
                "the upload could not be registered",
            )),
        }
    }
}

impl std::fmt::Debug for FileWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileWriter")
            .field("object", &self.object_key)
            .field("end", &self.end)
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
        let dek = DataKey::generate()?;
        let content_id = ContentId::generate()?;
        let cipher = ChunkCipher::new(&dek, content_id, inner.opts.chunk_size)?;
        let object_key = ObjectKey::generate()?;
        let spool_name = object_key.to_string();
        let spool_path = inner.spool.path(&spool_name);
        let row = NewUpload {
            tenant_id: vfs.tenant.id,
            spool_name,
            object_key: object_key.to_string(),
            node_name: inner.opts.node_name.clone(),
            now_ms: now_ms(),
        };
        let meta = inner.b.meta.clone();
        let upload_row =
            UploadRow::Pending(tokio::spawn(async move { meta.begin_upload(&row).await }));
        let streaming = inner
            .b
            .primary
            .begin_streaming_upload(&object_key, &spool_path)
            .await?;
        let chunk_size = u64::from(cipher.layout().chunk_size());
        let base_len = base.as_ref().map(FileReader::size).unwrap_or(0);
        let mut batch = Vec::with_capacity(SPOOL_BATCH + chunk_size as usize * 2);
        batch.extend_from_slice(&cipher.header());
        let mut chunk = Vec::with_capacity(NONCE_LEN + chunk_size as usize + 16);
        chunk.resize(NONCE_LEN, 0);
        debug!(object = %object_key, "upload started");
        Ok(Self {
            max_buffered: inner.opts.max_buffered_write_bytes,
            vfs,
            target,
            base,
            base_len,
            dek,
            content_id,
            cipher,
            chunk_size,
            chunk,
            sealed: 0,
            pending: BTreeMap::new(),
            pending_bytes: 0,
            end: base_len,
            hasher: digest::Context::new(&digest::SHA256),
            spool_file: None,
            in_spool: false,
            write_back: None,
            written_back: 0,
            spool_path,
            spooled: 0,
            streaming,
            batch,
            upload_row,
            object_key,
            mtime_ms: None,
            finished: false,
        })
    }

    /// The file's length as written so far (what `fstat` on an open handle reports).
    pub fn len(&self) -> u64 {
        self.end
    }

    /// `true` if nothing has been written and there is no base content.
    pub fn is_empty(&self) -> bool {
        self.end == 0
    }

    /// Sets the modification time recorded at commit (SFTP fsetstat, `put -p`).
    pub fn set_mtime(&mut self, mtime: SystemTime) {
        self.mtime_ms = Some(time_to_ms(mtime));
    }

    /// The contiguous end: everything below it is sealed or in the chunk buffer.
    fn frontier(&self) -> u64 {
        self.sealed * self.chunk_size + (self.chunk.len() - NONCE_LEN) as u64
    }

    /// Writes `data` at `offset`. Offsets may arrive in any order within the reorder window;
    /// rewriting bytes that are already sealed is refused with `Unsupported`.
    pub async fn write_at(&mut self, offset: u64, data: &[u8]) -> VfsResult<()> {
        if data.is_empty() {
            return Ok(());
        }
        let end = offset
            .checked_add(data.len() as u64)
            .ok_or_else(|| VfsError::new(ErrorKind::InvalidPath, "write offset overflows"))?;
        let sealed_end = self.sealed * self.chunk_size;
        if offset < sealed_end {
            return Err(VfsError::new(
                ErrorKind::Unsupported,
                "rewriting data far behind the write position is not supported; upload the file again",
            ));
        }
        self.end = self.end.max(end);
        let front = self.frontier();
        if offset <= front {
            let overlap = ((front - offset) as usize).min(data.len());
            let at = NONCE_LEN + (offset - sealed_end) as usize;
            if let (Some(dst), Some(src)) =
                (self.chunk.get_mut(at..at + overlap), data.get(..overlap))
            {
                dst.copy_from_slice(src);
            }
            if let Some(rest) = data.get(overlap..).filter(|r| !r.is_empty()) {
                self.append(rest).await?;
            }
            self.drain_pending().await?;
        } else {
            self.insert_pending(offset, Bytes::copy_from_slice(data))?;
        }
        if !self.pending.is_empty() {
            self.fill_gap(self.end.saturating_sub(GAP_SLACK)).await?;
        }
        Ok(())
    }

    /// Appends contiguous data at the frontier, sealing each chunk once a byte beyond it exists
    /// (so the last chunk can still be sealed as final on commit).
    async fn append(&mut self, mut rest: &[u8]) -> VfsResult<()> {
        let cs = self.chunk_size as usize;
        while !rest.is_empty() {
            let filled = self.chunk.len() - NONCE_LEN;
            if filled == cs {
                self.seal_current(false).await?;
                continue;
            }
            let take = (cs - filled).min(rest.len());
            let (now, later) = rest.split_at(take);
            self.chunk.extend_from_slice(now);
            rest = later;
        }
        Ok(())
    }

    async fn seal_current(&mut self, is_final: bool) -> VfsResult<()> {
        if let Some(plain) = self.chunk.get(NONCE_LEN..) {
            self.hasher.update(plain);
        }
        self.cipher
            .seal_chunk_in_place(self.sealed, is_final, &mut self.chunk)?;
        self.batch.extend_from_slice(&self.chunk);
        self.sealed += 1;
        self.chunk.truncate(NONCE_LEN);
        if self.batch.len() >= SPOOL_BATCH {
            self.flush_batch().await?;
        }
        Ok(())
    }

    /// Writes the batch of sealed chunks to the spool file (created on the first call) on a
    /// blocking thread.
    async fn flush_batch(&mut self) -> VfsResult<()> {
        if !self.in_spool {
            self.upload_row.settle().await?;
        }
        let file = self.spool_file.take();
        if file.is_none() && self.in_spool {
            return Err(VfsError::new(ErrorKind::Internal, "spool file closed"));
        }
        self.in_spool = true;
        let path = self.spool_path.clone();
        let mut batch = std::mem::take(&mut self.batch);
        let written = batch.len() as u64;
        let (file, batch) = tokio::task::spawn_blocking(move || -> VfsResult<_> {
            let mut file = match file {
                Some(file) => file,
                None => open_spool_file(&path)?,
            };
            file.write_all(&batch)
                .map_err(|e| internal("writing to the spool failed", e))?;
            batch.clear();
            Ok((file, batch))
        })
        .await
        .map_err(|e| internal("spool task", e))??;
        self.spooled += written;
        match self.streaming.as_mut() {
            Some(upload) => upload.file_grew(self.spooled).await?,
            None => self.write_back(&file).await?,
        }
        self.spool_file = Some(file);
        self.batch = batch;
        Ok(())
    }

    /// For a spool file that will become the object itself (a local store renames it into
    /// place and fsyncs it), starts flushing it to disk every [`WRITE_BACK_STEP`] in the
    /// background: the kernel would otherwise hold gigabytes of dirty pages and write them
    /// all in the fsync at commit, while the client waits. Never waits for the disk: while the
    /// previous flush runs, the next one is simply started later.
    async fn write_back(&mut self, file: &std::fs::File) -> VfsResult<()> {
        if self.spooled < self.written_back + WRITE_BACK_STEP {
            return Ok(());
        }
        if let Some(previous) = self.write_back.take() {
            if !previous.is_finished() {
                self.write_back = Some(previous);
                return Ok(());
            }
            previous
                .await
                .map_err(|e| internal("spool task", e))?
                .map_err(|e| internal("syncing the spool failed", e))?;
        }
        let file = file
            .try_clone()
            .map_err(|e| internal("syncing the spool failed", e))?;
        self.write_back = Some(tokio::task::spawn_blocking(move || file.sync_data()));
        self.written_back = self.spooled;
        Ok(())
    }

    /// Stores the complete object under its key, durably. An object that never outgrew one
    /// in-memory batch is handed to the store's `put` as it is: no spool file, no copy. A
    /// larger one is in the spool: its streaming upload is finished when the store took one,
    /// else the spool file goes to `put_file`.
    async fn store_object(&mut self) -> VfsResult<()> {
        let primary = self.vfs.vault.inner.b.primary.clone();
        if !self.in_spool {
            if let Some(upload) = self.streaming.take() {
                upload.abort().await;
            }
            let body = Bytes::from(std::mem::take(&mut self.batch));
            return Ok(primary.put(&self.object_key, body).await?);
        }
        // No fsync here: a local store fsyncs the file it renames into place, and S3 reads the
        // rest of the file from the page cache; the spool itself never needs to survive a crash.
        self.flush_batch().await?;
        self.spool_file = None;
        if let Some(pending) = self.write_back.take() {
            // An error here must fail the upload: the store's own fsync of the file opens a new
            // descriptor, which Linux does not tell about a write-back error it already reported.
            pending
                .await
                .map_err(|e| internal("spool task", e))?
                .map_err(|e| internal("syncing the spool failed", e))?;
        }
        match self.streaming.take() {
            Some(upload) => {
                upload.finish(self.spooled).await?;
                let _ = tokio::fs::remove_file(&self.spool_path).await;
            }
            None => primary.put_file(&self.object_key, &self.spool_path).await?,
        }
        Ok(())
    }

    /// Moves pending segments that now touch the frontier into the chunk stream.
    async fn drain_pending(&mut self) -> VfsResult<()> {
        while let Some(off) = self.pending.keys().next().copied() {
            let front = self.frontier();
            if off > front {
                break;
            }
            let Some(seg) = self.pending.remove(&off) else {
                break;
            };
            self.pending_bytes -= seg.len() as u64;
            // Bytes below the frontier were written later than this segment: they win.
            let skip = (front - off) as usize;
            if let Some(rest) = seg.get(skip..).filter(|r| !r.is_empty()) {
                self.append(rest).await?;
            }
        }
        Ok(())
    }

    /// Stores out-of-order data; a newer write replaces the overlapped parts of older ones.
    fn insert_pending(&mut self, off: u64, data: Bytes) -> VfsResult<()> {
        let end = off + data.len() as u64;
        let overlapped: Vec<u64> = self
            .pending
            .range(..end)
            .rev()
            .take_while(|(k, v)| **k + v.len() as u64 > off)
            .map(|(k, _)| *k)
            .collect();
        for k in overlapped {
            let Some(old) = self.pending.remove(&k) else {
                continue;
            };
            self.pending_bytes -= old.len() as u64;
            let old_end = k + old.len() as u64;
            if k < off {
                let left = old.slice(..(off - k) as usize);
                self.pending_bytes += left.len() as u64;
                self.pending.insert(k, left);
            }
            if old_end > end {
                let right = old.slice((end - k) as usize..);
                self.pending_bytes += right.len() as u64;
                self.pending.insert(end, right);
            }
        }
        self.pending_bytes += data.len() as u64;
        self.pending.insert(off, data);
        if self.pending_bytes > self.max_buffered {
            return Err(VfsError::new(
                ErrorKind::Unsupported,
                "too much data written out of order; write the file sequentially",
            ));
        }
        Ok(())
    }

    /// Fills holes below `upto` from the base version (or with zeros past its end).
    async fn fill_gap(&mut self, upto: u64) -> VfsResult<()> {
        loop {
            self.drain_pending().await?;
            let front = self.frontier();
            let next_pending = self.pending.keys().next().copied().unwrap_or(u64::MAX);
            let stop = upto.min(next_pending);
            if front >= stop {
                return Ok(());
            }
            let n = (stop - front).min(FILL_STEP);
            match &self.base {
                Some(base) if front < self.base_len => {
                    let n = n.min(self.base_len - front) as usize;
                    let data = base.read_at(front, n).await?;
                    if data.len() != n {
                        return Err(VfsError::new(
                            ErrorKind::Integrity,
                            "base version is shorter than its row says",
                        ));
                    }
                    self.append(&data).await?;
                }
                _ => {
                    let n = (n as usize).min(ZEROS.len());
                    self.append(ZEROS.get(..n).unwrap_or(&ZEROS)).await?;
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
        if result.is_err() {
            self.cleanup().await;
        }
        self.finished = true;
        result
    }

    async fn commit_inner(&mut self) -> VfsResult<FileInfo> {
        let size = self.end;
        self.fill_gap(size).await?;
        if self.frontier() != size || !self.pending.is_empty() {
            return Err(VfsError::new(
                ErrorKind::Internal,
                "upload bookkeeping is inconsistent",
            ));
        }
        let count = self.cipher.layout().chunk_count(size);
        match count.checked_sub(self.sealed) {
            Some(1) => self.seal_current(true).await?,
            Some(2) => {
                self.seal_current(false).await?;
                self.seal_current(true).await?;
            }
            _ => {
                return Err(VfsError::new(
                    ErrorKind::Internal,
                    "upload chunk count is inconsistent",
                ));
            }
        }
        let inner = self.vfs.vault.inner.clone();
        let upload_id = self.upload_row.settle().await?;
        self.store_object().await?;
        let row = self.commit_row(size, upload_id).await;
        match row {
            Ok(info) => {
                self.vfs.audit("upload", Some(info.id), "ok", Some(size));
                debug!(object = %self.object_key, node = info.id, size, "upload committed");
                Ok(info)
            }
            Err(e) => {
                if let Err(del) = inner.b.primary.delete(&self.object_key).await {
                    warn!(object = %self.object_key, error = %del, "could not delete the object of a failed commit");
                }
                Err(e)
            }
        }
    }

    async fn commit_row(&mut self, size: u64, upload_id: i64) -> VfsResult<FileInfo> {
        let keys = self.vfs.keys().await?;
        let hash =
            std::mem::replace(&mut self.hasher, digest::Context::new(&digest::SHA256)).finish();
        let content = FileContent {
            size: size as i64,
            object_key: self.object_key.to_string(),
            content_id: self.content_id.0.to_vec(),
            wrapped_dek: keys.wrap_dek(&self.dek, &self.content_id)?,
            key_version: keys.key_version(),
            chunk_size: self.chunk_size as u32,
            content_hash_enc: keys.seal_field(
                "content-sha256",
                &self.content_id.0,
                hash.as_ref(),
            )?,
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
                mtime_ms: self.mtime_ms.unwrap_or(now),
                now_ms: now,
                expect_node: self.target.expect,
                expect_absent: self.target.expect.is_none(),
                upload_id: Some(upload_id),
                enforce_quota: true,
            })
            .await?;
        Ok(self.vfs.info(&outcome.node, self.target.name.clone()))
    }

    /// The client's connection ended before it said the upload was complete (a dropped SFTP
    /// session with the handle open, an FTPES data connection closed without TLS
    /// `close_notify`, an HTTP body cut short). Applies the deployment's [`PartialUploads`]
    /// policy: the bytes received are kept only for a name that held no file when the upload
    /// began, and only their contiguous start; otherwise nothing changes. Logged and audited.
    pub async fn interrupted(mut self) -> Interrupted {
        let policy = self.vfs.vault.inner.opts.partial_uploads;
        let kept_len = self.frontier();
        let keep = policy == PartialUploads::KeepNewFiles
            && self.target.expect.is_none()
            && self.base.is_none()
            && kept_len > 0;
        if !keep {
            let received = self.end;
            let replacing = self.target.expect.is_some();
            self.vfs.audit(
                "upload_interrupted",
                self.target.expect.map(|e| e.0),
                "discarded",
                Some(received),
            );
            info!(
                bytes = received,
                replacing, "upload interrupted; discarded it (any earlier version is untouched)"
            );
            self.abort().await;
            return Interrupted::Discarded;
        }
        // Out-of-order bytes beyond the first hole cannot be part of a resumable start.
        self.pending.clear();
        self.pending_bytes = 0;
        self.end = kept_len;
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
        self.cleanup().await;
        self.finished = true;
    }

    async fn cleanup(&mut self) {
        self.spool_file = None;
        if let Some(upload) = self.streaming.take() {
            upload.abort().await;
        }
        let _ = tokio::fs::remove_file(&self.spool_path).await;
        if let Ok(id) = self.upload_row.settle().await {
            let _ = self.vfs.vault.inner.b.meta.end_upload(id).await;
        }
    }
}

impl Drop for FileWriter {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        // Dropped without commit or abort (a connection died): clean up in the background.
        let path = std::mem::take(&mut self.spool_path);
        let meta = self.vfs.vault.inner.b.meta.clone();
        let mut row = std::mem::replace(&mut self.upload_row, UploadRow::Failed);
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = tokio::fs::remove_file(&path).await;
                if let Ok(id) = row.settle().await {
                    let _ = meta.end_upload(id).await;
                }
            });
        }
    }
}

fn open_spool_file(path: &std::path::Path) -> VfsResult<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| internal("cannot create a spool file", e))
}
