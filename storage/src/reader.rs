//! Reading a committed file: ranged reads of just the chunks needed, each verified before use.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError};

use bytes::Bytes;
use coffer_format::{ChunkCipher, ContentId, HEADER_LEN, Layout};
use coffer_meta::Node;
use coffer_object::{ObjectError, ObjectKey, ObjectStore};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;
use tracing::warn;

use crate::clock::now_ms;
use crate::error::{ErrorKind, VfsError, VfsResult};
use crate::inline::InlineObject;
use crate::vfs::{FileInfo, Vfs};

/// Chunks fetched per ranged GET at first (1 MiB at 64 KiB chunks).
const READ_WINDOW_CHUNKS: u64 = 16;
/// A sequential reader's window doubles up to this (4 MiB at 64 KiB chunks), so a long
/// download pays one request round trip per 4 MiB; random access stays at the small window.
const MAX_READ_WINDOW_CHUNKS: u64 = 64;

/// The last window of plaintext fetched, so pipelined small reads reuse one GET.
#[derive(Default)]
struct Window {
    start: u64,
    data: Bytes,
}

/// What a window fetch needs; shared with the read-ahead task.
struct ReaderCore {
    primary: Arc<dyn ObjectStore>,
    replica: Option<Arc<dyn ObjectStore>>,
    key: ObjectKey,
    cipher: ChunkCipher,
    size: u64,
    /// Reads go to the replica first until this time (ms since the epoch).
    skip_primary_until: AtomicI64,
    /// This reader's place in the vault's [`OpenReaders`]: the garbage collector keeps the
    /// object while it is held (by the reader or a read-ahead still running).
    _hold: ReaderHold,
}

/// A window being fetched in the background, starting at plaintext offset `start`.
struct ReadAhead {
    start: u64,
    task: JoinHandle<VfsResult<Window>>,
}

/// An open file: reads at any offset, returning only verified plaintext. Sequential reads
/// fetch the next window in the background while the current one is served.
pub struct FileReader {
    core: Arc<ReaderCore>,
    info: FileInfo,
    window: Mutex<Window>,
    ahead: std::sync::Mutex<Option<ReadAhead>>,
    /// Window size, in chunks, for the next sequential fetch.
    sequential_chunks: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for FileReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileReader")
            .field("object", &self.core.key)
            .field("size", &self.core.size)
            .finish()
    }
}

impl Drop for FileReader {
    fn drop(&mut self) {
        if let Ok(mut a) = self.ahead.lock()
            && let Some(a) = a.take()
        {
            a.task.abort();
        }
    }
}

impl FileReader {
    /// Unwraps the file's data key, reads and verifies the header.
    pub(crate) async fn open(vfs: &Vfs, node: &Node, info: FileInfo) -> VfsResult<Self> {
        Self::open_with(vfs, node, info, None).await
    }

    /// As [`FileReader::open`], with the row's inline object if the lookup brought it.
    pub(crate) async fn open_with(
        vfs: &Vfs,
        node: &Node,
        info: FileInfo,
        inline: Option<Vec<u8>>,
    ) -> VfsResult<Self> {
        let content = node
            .content
            .as_ref()
            .ok_or_else(|| VfsError::new(ErrorKind::IsADirectory, "is a directory"))?;
        let key = ObjectKey::parse(&content.object_key)?;
        // Held before the first byte is read, so a collection that starts now keeps it.
        let hold = vfs.vault.inner.open_readers.hold(&content.object_key);
        let cid: [u8; 16] =
            content.content_id.as_slice().try_into().map_err(|_| {
                VfsError::new(ErrorKind::Integrity, "stored content id is malformed")
            })?;
        let cid = ContentId(cid);
        let keys = vfs
            .vault
            .tenant_keys(vfs.tenant.id, content.key_version)
            .await?;
        let dek = keys.unwrap_dek(&content.wrapped_dek, &cid)?;
        let b = &vfs.vault.inner.b;
        // A small object lives in its row: read from there, verified (and repaired from the
        // replica) exactly like an object of the primary store.
        let primary: Arc<dyn ObjectStore> = if let (true, Some(bytes)) = (content.inline, inline) {
            Arc::new(InlineObject::new(key.clone(), Bytes::from(bytes)))
        } else if content.inline {
            InlineObject::fetch(b.meta.as_ref(), &key)
                .await?
                .ok_or_else(|| {
                    VfsError::new(
                        ErrorKind::NotFound,
                        "the file was replaced or removed while it was being opened",
                    )
                })?
        } else {
            b.primary.clone()
        };
        let size = content.size.max(0) as u64;
        // A file no larger than the first window is read whole with its header: one request.
        let row_layout = Layout::new(content.chunk_size)
            .map_err(|_| VfsError::new(ErrorKind::Integrity, "stored chunk size is invalid"))?;
        let chunks = row_layout.chunk_count(size);
        let whole = chunks <= READ_WINDOW_CHUNKS;
        let first_read = if whole {
            row_layout.object_len(size)
        } else {
            HEADER_LEN as u64
        };
        let skip_primary_until = AtomicI64::new(0);
        let opened = match get_with_failover(
            &primary,
            b.replica.as_ref(),
            &skip_primary_until,
            &key,
            0,
            first_read,
        )
        .await
        {
            Ok(head) => open_head(&dek, cid, head, content.chunk_size),
            Err(e) => Err(e),
        };
        let (cipher, head) = match opened {
            Err(e) if matches!(e.kind(), ErrorKind::Integrity | ErrorKind::NotFound) => {
                // Read repair: the replica's copy, if its header verifies.
                let Some(replica) = &b.replica else {
                    return Err(e);
                };
                let Some(opened) = replica
                    .get_range(&key, 0, first_read)
                    .await
                    .ok()
                    .and_then(|head| open_head(&dek, cid, head, content.chunk_size).ok())
                else {
                    return Err(e);
                };
                let n = REPAIRED_READS.fetch_add(1, Ordering::Relaxed) + 1;
                warn!(
                    object = %key,
                    repaired_reads = n,
                    "integrity: the primary copy is missing or damaged; opened the verified \
                     replica copy (run `coffer fsck --deep --repair` to restore the primary)"
                );
                opened
            }
            other => other?,
        };
        let core = ReaderCore {
            primary,
            replica: b.replica.clone(),
            key,
            cipher,
            size,
            skip_primary_until,
            _hold: hold,
        };
        let window = if whole {
            match core.open_window(0, chunks, head) {
                Ok(w) => w,
                Err(e) if e.kind() == ErrorKind::Integrity => {
                    let r = core.layout().sealed_range(0..chunks, size);
                    core.read_repair(0, chunks, r.start, r.end - r.start)
                        .await
                        .ok_or(e)?
                }
                Err(e) => return Err(e),
            }
        } else {
            Window::default()
        };
        Ok(Self {
            core: Arc::new(core),
            info,
            window: Mutex::new(window),
            ahead: std::sync::Mutex::new(None),
            sequential_chunks: std::sync::atomic::AtomicU64::new(READ_WINDOW_CHUNKS),
        })
    }

    /// Plaintext size (trusted: it comes from the committed row).
    pub fn size(&self) -> u64 {
        self.core.size
    }

    /// What `stat` said when the file was opened.
    pub fn info(&self) -> &FileInfo {
        &self.info
    }

    /// Reads up to `len` bytes at `offset`; fewer only at the end of the file, none past it.
    pub async fn read_at(&self, offset: u64, len: usize) -> VfsResult<Bytes> {
        let size = self.core.size;
        if offset >= size || len == 0 {
            return Ok(Bytes::new());
        }
        let end = size.min(offset.saturating_add(len as u64));
        let mut w = self.window.lock().await;
        if !w.covers(offset, end) {
            let previous_end = w.start + w.data.len() as u64;
            let fetched = match self.take_read_ahead(offset).await {
                Some(ahead) if ahead.covers(offset, end) => ahead,
                _ => self.core.fetch(offset, end, READ_WINDOW_CHUNKS).await?,
            };
            // Sequential access (the first window, or the one right after the last): read on,
            // in growing windows.
            if fetched.start == 0 || fetched.start == previous_end {
                let chunks = self.sequential_chunks.load(Ordering::Relaxed);
                self.sequential_chunks
                    .store((chunks * 2).min(MAX_READ_WINDOW_CHUNKS), Ordering::Relaxed);
                self.start_read_ahead(fetched.start + fetched.data.len() as u64, chunks);
            } else {
                self.sequential_chunks
                    .store(READ_WINDOW_CHUNKS, Ordering::Relaxed);
            }
            *w = fetched;
        }
        let from = (offset - w.start) as usize;
        let to = (end - w.start) as usize;
        Ok(w.data.slice(from..to))
    }

    /// The background window if it starts at or before `offset`; a failed or stale
    /// read-ahead is dropped (the caller fetches again and sees any error itself).
    async fn take_read_ahead(&self, offset: u64) -> Option<Window> {
        let ahead = self.ahead.lock().ok()?.take()?;
        if ahead.start > offset {
            ahead.task.abort();
            return None;
        }
        ahead.task.await.ok()?.ok()
    }

    fn start_read_ahead(&self, start: u64, chunks: u64) {
        if start >= self.core.size {
            return;
        }
        let core = self.core.clone();
        let task = tokio::spawn(async move {
            let end = core.size.min(start + 1);
            core.fetch(start, end, chunks).await
        });
        if let Ok(mut slot) = self.ahead.lock()
            && let Some(old) = slot.replace(ReadAhead { start, task })
        {
            old.task.abort();
        }
    }
}

/// Opens an object's header from the first bytes read and checks it against the row; returns
/// the cipher and the bytes after the header.
fn open_head(
    dek: &coffer_format::DataKey,
    cid: ContentId,
    mut head: Bytes,
    chunk_size: u32,
) -> VfsResult<(ChunkCipher, Bytes)> {
    let header = head.split_to(HEADER_LEN.min(head.len()));
    let cipher = ChunkCipher::open_header(dek, cid, &header)?;
    if cipher.layout().chunk_size() != chunk_size {
        return Err(VfsError::new(
            ErrorKind::Integrity,
            "object header disagrees with its row",
        ));
    }
    drop(header); // so the chunks after it can be opened in place
    Ok((cipher, head))
}

impl Window {
    fn covers(&self, offset: u64, end: u64) -> bool {
        offset >= self.start && end <= self.start + self.data.len() as u64
    }
}

impl ReaderCore {
    fn layout(&self) -> Layout {
        self.cipher.layout()
    }

    /// Fetches and opens the chunks covering `[offset, end)`, at least `min_chunks` of them.
    async fn fetch(&self, offset: u64, end: u64, min_chunks: u64) -> VfsResult<Window> {
        let layout = self.layout();
        let cs = u64::from(layout.chunk_size());
        let count = layout.chunk_count(self.size);
        let first = offset / cs;
        let needed_last = (end - 1) / cs;
        let last = needed_last
            .max(first + min_chunks.max(1) - 1)
            .min(count - 1);
        let range = layout.sealed_range(first..last + 1, self.size);
        let (start, len, count) = (range.start, range.end - range.start, last + 1 - first);
        let primary = match self.get(start, len).await {
            Ok(sealed) => self.open_window(first, count, sealed),
            Err(e) => Err(e),
        };
        match primary {
            Err(e) if matches!(e.kind(), ErrorKind::Integrity | ErrorKind::NotFound) => {
                self.read_repair(first, count, start, len).await.ok_or(e)
            }
            other => other,
        }
    }

    /// The chunks from the replica's copy when the primary's are missing or fail to verify,
    /// if the replica's verify: the reader is served, the event is logged and counted, and
    /// `coffer fsck --repair` puts the good copy back. `None` if there is no good copy.
    async fn read_repair(&self, first: u64, count: u64, start: u64, len: u64) -> Option<Window> {
        let replica = self.replica.as_ref()?;
        let sealed = replica.get_range(&self.key, start, len).await.ok()?;
        let window = self.open_window(first, count, sealed).ok()?;
        let n = REPAIRED_READS.fetch_add(1, Ordering::Relaxed) + 1;
        warn!(
            object = %self.key,
            repaired_reads = n,
            "integrity: the primary copy is missing or damaged; served the verified replica \
             copy (run `coffer fsck --deep --repair` to restore the primary)"
        );
        Some(window)
    }

    /// Opens `count` sealed chunks starting at chunk `first` into a window of plaintext.
    fn open_window(&self, first: u64, count: u64, sealed: Bytes) -> VfsResult<Window> {
        let cs = u64::from(self.layout().chunk_size());
        let mut sealed = match sealed.try_into_mut() {
            Ok(m) => m,
            Err(b) => bytes::BytesMut::from(&b[..]),
        };
        let mut out = Vec::with_capacity((count * cs).min(self.size) as usize);
        // Strict: a short or long read is refused, so a cut at a chunk boundary cannot pass.
        self.cipher
            .open_chunk_range(first..first + count, &mut sealed, self.size, &mut out)?;
        Ok(Window {
            start: first * cs,
            data: Bytes::from(out),
        })
    }

    async fn get(&self, start: u64, len: u64) -> VfsResult<Bytes> {
        get_with_failover(
            &self.primary,
            self.replica.as_ref(),
            &self.skip_primary_until,
            &self.key,
            start,
            len,
        )
        .await
    }
}

/// The objects this process's readers hold open: object key → how many readers and since
/// when the oldest of them. The garbage collector of this process never deletes a held object
/// (short of the hard bound); `Vault::publish_open_readers` tells the other nodes about the
/// ones held for more than a few seconds. In memory only: opening a file writes nothing.
#[derive(Debug, Default)]
pub(crate) struct OpenReaders {
    held: Arc<std::sync::Mutex<HashMap<String, Holders>>>,
    /// Whether the last publication named any object, so an idle node stops writing once it
    /// has cleared its rows.
    published_any: AtomicBool,
}

#[derive(Debug)]
struct Holders {
    count: u32,
    /// When the first reader of the current run opened it (ms since the epoch).
    since_ms: i64,
}

/// One reader's hold on its object; released when the reader (and its read-ahead) is gone.
#[derive(Debug)]
pub(crate) struct ReaderHold {
    held: Arc<std::sync::Mutex<HashMap<String, Holders>>>,
    key: String,
}

impl OpenReaders {
    /// Registers a reader of `object_key`.
    pub(crate) fn hold(&self, object_key: &str) -> ReaderHold {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        held.entry(object_key.to_owned())
            .and_modify(|h| h.count += 1)
            .or_insert(Holders {
                count: 1,
                since_ms: now_ms(),
            });
        ReaderHold {
            held: self.held.clone(),
            key: object_key.to_owned(),
        }
    }

    /// Whether a reader of this process holds `object_key`.
    pub(crate) fn holds(&self, object_key: &str) -> bool {
        let held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        held.contains_key(object_key)
    }

    /// The objects held since `since_ms` or earlier.
    pub(crate) fn held_since(&self, since_ms: i64) -> Vec<String> {
        let held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        held.iter()
            .filter(|(_, h)| h.since_ms <= since_ms)
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Records whether a publication named any object; returns the previous value.
    pub(crate) fn swap_published_any(&self, any: bool) -> bool {
        self.published_any.swap(any, Ordering::Relaxed)
    }
}

impl Drop for ReaderHold {
    fn drop(&mut self) {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(h) = held.get_mut(&self.key) {
            h.count = h.count.saturating_sub(1);
            if h.count == 0 {
                held.remove(&self.key);
            }
        }
    }
}

/// Reads served from the replica's verified copy because the primary's was missing or
/// damaged, since the process started.
static REPAIRED_READS: AtomicU64 = AtomicU64::new(0);

/// How many reads this process has served from the replica because the primary's copy was
/// missing or failed verification (integrity events, for metrics).
pub fn repaired_reads() -> u64 {
    REPAIRED_READS.load(Ordering::Relaxed)
}

/// Reads served by the replica because the primary failed, since the process started.
static FAILOVER_READS: AtomicU64 = AtomicU64::new(0);

/// How many reads this process has served from the replica because the primary failed
/// (for metrics and the admin listener).
pub fn failover_reads() -> u64 {
    FAILOVER_READS.load(Ordering::Relaxed)
}

/// After the primary fails a read, reads go straight to the replica for this long, so a
/// download does not pay the primary's connect timeout and retries for every window.
const PRIMARY_BACKOFF_MS: i64 = 10_000;

/// A ranged read from the primary store, failing over to the replica when the primary
/// is unavailable (never on integrity errors: a damaged primary object is an error).
///
/// `skip_primary_until` (ms since the epoch) belongs to one open file: after a failure its
/// reads go to the replica first for [`PRIMARY_BACKOFF_MS`], back to the primary if the
/// replica cannot serve them.
async fn get_with_failover(
    primary: &Arc<dyn ObjectStore>,
    replica: Option<&Arc<dyn ObjectStore>>,
    skip_primary_until: &AtomicI64,
    key: &ObjectKey,
    start: u64,
    len: u64,
) -> VfsResult<Bytes> {
    if let Some(replica) = replica
        && now_ms() < skip_primary_until.load(Ordering::Relaxed)
        && let Ok(bytes) = replica.get_range(key, start, len).await
    {
        FAILOVER_READS.fetch_add(1, Ordering::Relaxed);
        return Ok(bytes);
    }
    match primary.get_range(key, start, len).await {
        Ok(b) => Ok(b),
        Err(e @ (ObjectError::Unavailable(_) | ObjectError::Io(_))) => {
            let Some(replica) = replica else {
                return Err(e.into());
            };
            skip_primary_until.store(now_ms() + PRIMARY_BACKOFF_MS, Ordering::Relaxed);
            let count = FAILOVER_READS.fetch_add(1, Ordering::Relaxed) + 1;
            warn!(
                object = %key, error = %e, failover_reads = count,
                "primary store failed; reading from the replica for the next {} s",
                PRIMARY_BACKOFF_MS / 1000
            );
            Ok(replica.get_range(key, start, len).await?)
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::atomic::AtomicUsize;

    use async_trait::async_trait;
    use coffer_object::{LocalDirStore, ObjectMeta};

    use super::*;

    /// A primary store that is down: every call is `Unavailable`, and reads are counted.
    #[derive(Debug, Default)]
    struct DownStore {
        reads: AtomicUsize,
    }

    fn down() -> ObjectError {
        ObjectError::Unavailable("connection refused".to_owned())
    }

    #[async_trait]
    impl ObjectStore for DownStore {
        fn describe(&self) -> String {
            "down".to_owned()
        }
        async fn put(&self, _: &ObjectKey, _: Bytes) -> Result<(), ObjectError> {
            Err(down())
        }
        async fn put_file(&self, _: &ObjectKey, _: &Path) -> Result<(), ObjectError> {
            Err(down())
        }
        async fn get_range(&self, _: &ObjectKey, _: u64, _: u64) -> Result<Bytes, ObjectError> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            Err(down())
        }
        async fn head(&self, _: &ObjectKey) -> Result<ObjectMeta, ObjectError> {
            Err(down())
        }
        async fn copy(&self, _: &ObjectKey, _: &ObjectKey) -> Result<(), ObjectError> {
            Err(down())
        }
        async fn delete(&self, _: &ObjectKey) -> Result<(), ObjectError> {
            Err(down())
        }
    }

    #[tokio::test]
    async fn reads_fail_over_and_then_skip_a_primary_that_is_down() {
        let dir = tempfile::tempdir().unwrap();
        let replica_store = LocalDirStore::open(dir.path()).unwrap();
        let key = ObjectKey::generate().unwrap();
        replica_store
            .put(&key, Bytes::from_static(b"sealed bytes"))
            .await
            .unwrap();
        let primary_store = Arc::new(DownStore::default());
        let primary: Arc<dyn ObjectStore> = primary_store.clone();
        let replica: Arc<dyn ObjectStore> = Arc::new(replica_store);
        let skip = AtomicI64::new(0);
        let before = failover_reads();

        for _ in 0..3 {
            let got = get_with_failover(&primary, Some(&replica), &skip, &key, 0, 6)
                .await
                .unwrap();
            assert_eq!(&got[..], b"sealed");
        }

        assert_eq!(
            primary_store.reads.load(Ordering::SeqCst),
            1,
            "only the first read waits for the failed primary"
        );
        assert!(failover_reads() >= before + 3);
    }

    #[tokio::test]
    async fn missing_object_on_the_primary_is_an_error_not_a_failover() {
        let dir = tempfile::tempdir().unwrap();
        let primary: Arc<dyn ObjectStore> =
            Arc::new(LocalDirStore::open(&dir.path().join("p")).unwrap());
        let replica_store = LocalDirStore::open(&dir.path().join("r")).unwrap();
        let key = ObjectKey::generate().unwrap();
        replica_store
            .put(&key, Bytes::from_static(b"only here"))
            .await
            .unwrap();
        let replica: Arc<dyn ObjectStore> = Arc::new(replica_store);

        let result =
            get_with_failover(&primary, Some(&replica), &AtomicI64::new(0), &key, 0, 4).await;

        assert_eq!(result.unwrap_err().kind(), ErrorKind::Integrity);
    }
}
