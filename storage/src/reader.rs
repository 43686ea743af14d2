//! Reading a committed file: ranged reads of just the chunks needed, each verified before use.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use coffer_format::{ChunkCipher, ContentId, HEADER_LEN, Layout};
use coffer_meta::Node;
use coffer_object::{ObjectError, ObjectKey, ObjectStore};
use tokio::sync::Mutex;
use tracing::warn;

use crate::error::{ErrorKind, VfsError, VfsResult};
use crate::vfs::{FileInfo, Vfs};

/// Chunks fetched per ranged GET for sequential reads (1 MiB at 64 KiB chunks).
const READ_WINDOW_CHUNKS: u64 = 16;

/// The last window of plaintext fetched, so pipelined small reads reuse one GET.
#[derive(Default)]
struct Window {
    start: u64,
    data: Bytes,
}

/// An open file: reads at any offset, returning only verified plaintext.
pub struct FileReader {
    primary: Arc<dyn ObjectStore>,
    replica: Option<Arc<dyn ObjectStore>>,
    key: ObjectKey,
    cipher: ChunkCipher,
    size: u64,
    info: FileInfo,
    window: Mutex<Window>,
}

impl std::fmt::Debug for FileReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileReader")
            .field("object", &self.key)
            .field("size", &self.size)
            .finish()
    }
}

impl FileReader {
    /// Unwraps the file's data key, reads and verifies the header.
    pub(crate) async fn open(vfs: &Vfs, node: &Node, info: FileInfo) -> VfsResult<Self> {
        let content = node
            .content
            .as_ref()
            .ok_or_else(|| VfsError::new(ErrorKind::IsADirectory, "is a directory"))?;
        let key = ObjectKey::parse(&content.object_key)?;
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
        let header =
            get_with_failover(&b.primary, b.replica.as_ref(), &key, 0, HEADER_LEN as u64).await?;
        let cipher = ChunkCipher::open_header(&dek, cid, &header)?;
        if cipher.layout().chunk_size() != content.chunk_size {
            return Err(VfsError::new(
                ErrorKind::Integrity,
                "object header disagrees with its row",
            ));
        }
        let reader = Self {
            primary: b.primary.clone(),
            replica: b.replica.clone(),
            key,
            cipher,
            size: content.size.max(0) as u64,
            info,
            window: Mutex::new(Window::default()),
        };
        Ok(reader)
    }

    /// Plaintext size (trusted: it comes from the committed row).
    pub fn size(&self) -> u64 {
        self.size
    }

    /// What `stat` said when the file was opened.
    pub fn info(&self) -> &FileInfo {
        &self.info
    }

    fn layout(&self) -> Layout {
        self.cipher.layout()
    }

    /// Reads up to `len` bytes at `offset`; fewer only at the end of the file, none past it.
    pub async fn read_at(&self, offset: u64, len: usize) -> VfsResult<Bytes> {
        if offset >= self.size || len == 0 {
            return Ok(Bytes::new());
        }
        let end = self.size.min(offset.saturating_add(len as u64));
        let mut w = self.window.lock().await;
        if !(offset >= w.start && end <= w.start + w.data.len() as u64) {
            *w = self.fetch(offset, end).await?;
        }
        let from = (offset - w.start) as usize;
        let to = (end - w.start) as usize;
        Ok(w.data.slice(from..to))
    }

    /// Fetches and opens the chunks covering `[offset, end)`, at least a read window's worth.
    async fn fetch(&self, offset: u64, end: u64) -> VfsResult<Window> {
        let layout = self.layout();
        let cs = u64::from(layout.chunk_size());
        let count = layout.chunk_count(self.size);
        let first = offset / cs;
        let needed_last = (end - 1) / cs;
        let last = needed_last
            .max(first + READ_WINDOW_CHUNKS - 1)
            .min(count - 1);
        let range = layout.sealed_range(first..last + 1, self.size);
        let sealed = self.get(range.start, range.end - range.start).await?;
        let mut sealed = match sealed.try_into_mut() {
            Ok(m) => m,
            Err(b) => bytes::BytesMut::from(&b[..]),
        };
        let mut out = Vec::with_capacity(((last - first + 1) * cs) as usize);
        // Strict: a short or long read is refused, so a cut at a chunk boundary cannot pass.
        self.cipher
            .open_chunk_range(first..last + 1, &mut sealed, self.size, &mut out)?;
        Ok(Window {
            start: first * cs,
            data: Bytes::from(out),
        })
    }

    async fn get(&self, start: u64, len: u64) -> VfsResult<Bytes> {
        get_with_failover(&self.primary, self.replica.as_ref(), &self.key, start, len).await
    }
}

/// Reads served by the replica because the primary failed, since the process started.
static FAILOVER_READS: AtomicU64 = AtomicU64::new(0);

/// How many reads this process has served from the replica because the primary failed
/// (for metrics and the admin listener).
pub fn failover_reads() -> u64 {
    FAILOVER_READS.load(Ordering::Relaxed)
}

/// A ranged read from the primary store, failing over to the replica when the primary
/// is unavailable (never on integrity errors: a damaged primary object is an error).
async fn get_with_failover(
    primary: &Arc<dyn ObjectStore>,
    replica: Option<&Arc<dyn ObjectStore>>,
    key: &ObjectKey,
    start: u64,
    len: u64,
) -> VfsResult<Bytes> {
    match primary.get_range(key, start, len).await {
        Ok(b) => Ok(b),
        Err(e @ (ObjectError::Unavailable(_) | ObjectError::Io(_))) => {
            let Some(replica) = replica else {
                return Err(e.into());
            };
            let count = FAILOVER_READS.fetch_add(1, Ordering::Relaxed) + 1;
            warn!(object = %key, error = %e, failover_reads = count, "primary store failed; reading from the replica");
            Ok(replica.get_range(key, start, len).await?)
        }
        Err(e) => Err(e.into()),
    }
}
