//! The libunftp storage backend over the user's [`Vfs`]: every FTP file command becomes one Vfs
//! call, and transfers move 1 MiB at a time straight between the data connection and the
//! chunk sealer/opener (no small buffers, no blocking-pool round trips).

use std::fmt::Debug;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use async_trait::async_trait;
use coffer_storage::{
    EntryKind, ErrorKind, FileInfo, FileWriter, Interrupted, VfsError, WriteOptions,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tracing::{debug, info};
use unftp_core::storage::{self, FEATURE_RESTART, Fileinfo, Metadata, Permissions, StorageBackend};

use libunftp::options::ClientText;

use super::auth::FtpUser;
use crate::common::ftp_error_kind;

/// Bytes moved per read or write of a transfer: well above the 256 KiB the sealer needs to
/// amortise its per-call work, small enough to keep many sessions in memory.
pub(crate) const TRANSFER_CHUNK: usize = 1024 * 1024;

/// The storage backend; stateless, the session lives in [`FtpUser`].
#[derive(Debug, Default, Clone, Copy)]
pub struct VfsBackend;

/// What LIST, MLSD, MLST, SIZE and MDTM report about an entry.
#[derive(Debug, Clone)]
pub struct EntryMeta {
    size: u64,
    dir: bool,
    mtime: SystemTime,
}

impl From<&FileInfo> for EntryMeta {
    fn from(i: &FileInfo) -> Self {
        Self {
            size: i.size,
            dir: i.kind == EntryKind::Dir,
            mtime: i.mtime,
        }
    }
}

impl Metadata for EntryMeta {
    fn len(&self) -> u64 {
        self.size
    }
    fn is_dir(&self) -> bool {
        self.dir
    }
    fn is_file(&self) -> bool {
        !self.dir
    }
    fn is_symlink(&self) -> bool {
        false
    }
    fn modified(&self) -> storage::Result<SystemTime> {
        Ok(self.mtime)
    }
    fn gid(&self) -> u32 {
        0
    }
    fn uid(&self) -> u32 {
        0
    }
    fn permissions(&self) -> Permissions {
        Permissions(if self.dir { 0o755 } else { 0o644 })
    }
}

/// The storage error whose kind selects the FTP reply for `e` (see `common::status`), with the
/// error's message (never a name) as the reply text.
pub(crate) fn reply(e: VfsError) -> storage::Error {
    storage::Error::new(
        ftp_error_kind(e.kind()),
        ClientText(e.message().to_string()),
    )
}

/// The Vfs path of a libunftp path (already joined with the working directory).
fn vpath(p: &Path) -> storage::Result<&str> {
    p.to_str().ok_or_else(|| {
        storage::Error::new(
            storage::ErrorKind::FileNameNotAllowedError,
            "names must be UTF-8",
        )
    })
}

/// How an upload's data connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// A TLS `close_notify` came before the end of the connection: the client finished.
    Clean,
    /// The connection ended without `close_notify` (a TCP FIN or reset): a crashed client or a
    /// FIN injected on the path. The bytes received may be only a prefix of the file.
    Truncated,
}

/// Reads until `buf` is full or the input ends; returns the bytes read and, when the input
/// ended, how.
async fn fill<R: AsyncRead + Unpin + ?Sized>(
    input: &mut R,
    buf: &mut [u8],
) -> std::io::Result<(usize, Option<End>)> {
    let mut filled = 0;
    while let Some(rest) = buf.get_mut(filled..).filter(|r| !r.is_empty()) {
        let n = match input.read(rest).await {
            Ok(n) => n,
            // rustls reports a connection that ended without close_notify as UnexpectedEof.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return Ok((filled, Some(End::Truncated)));
            }
            Err(e) => return Err(e),
        };
        if n == 0 {
            return Ok((filled, Some(End::Clean)));
        }
        filled += n;
    }
    Ok((filled, None))
}

/// Why [`receive`] stopped before the upload could be committed.
enum Cut {
    /// The data connection ended without close_notify, or failed: the one interrupted-upload
    /// policy decides (`FileWriter::interrupted`).
    Interrupted(storage::Error),
    /// Storage refused the bytes: nothing is kept.
    Refused(storage::Error),
}

/// Copies the whole input into `writer` at `start`; the caller commits on `Ok`.
async fn receive<R: AsyncRead + Unpin>(
    writer: &mut FileWriter,
    input: &mut R,
    start: u64,
) -> Result<u64, Cut> {
    let mut buf = vec![0u8; TRANSFER_CHUNK];
    let mut offset = start;
    loop {
        let (n, end) = fill(input, &mut buf).await.map_err(|e| {
            Cut::Interrupted(storage::Error::new(storage::ErrorKind::ConnectionClosed, e))
        })?;
        if let Some(data) = buf.get(..n).filter(|d| !d.is_empty()) {
            writer
                .write_at(offset, data)
                .await
                .map_err(|e| Cut::Refused(reply(e)))?;
            offset += n as u64;
        }
        match end {
            None => {}
            Some(End::Clean) => return Ok(offset - start),
            Some(End::Truncated) => {
                return Err(Cut::Interrupted(storage::Error::new(
                    storage::ErrorKind::ConnectionClosed,
                    ClientText(TRUNCATED.to_string()),
                )));
            }
        }
    }
}

/// The reason given for an upload whose data connection ended without TLS close_notify.
const TRUNCATED: &str = "the data connection ended without TLS close_notify; the upload is \
                         incomplete and no existing version was replaced";

#[async_trait]
impl StorageBackend<FtpUser> for VfsBackend {
    type Metadata = EntryMeta;

    fn name(&self) -> &str {
        "coffer-vfs"
    }

    fn supported_features(&self) -> u32 {
        FEATURE_RESTART
    }

    async fn metadata<P: AsRef<Path> + Send + Debug>(
        &self,
        user: &FtpUser,
        path: P,
    ) -> storage::Result<EntryMeta> {
        let info = user.vfs.stat(vpath(path.as_ref())?).await.map_err(reply)?;
        Ok(EntryMeta::from(&info))
    }

    async fn list<P: AsRef<Path> + Send + Debug>(
        &self,
        user: &FtpUser,
        path: P,
    ) -> storage::Result<Vec<Fileinfo<PathBuf, EntryMeta>>> {
        let dir = path.as_ref();
        let entries = user.vfs.list(vpath(dir)?).await.map_err(reply)?;
        Ok(entries
            .iter()
            .map(|e| Fileinfo {
                path: dir.join(&e.name),
                metadata: EntryMeta::from(e),
            })
            .collect())
    }

    async fn get_into<'a, P, W: ?Sized>(
        &self,
        user: &FtpUser,
        path: P,
        start_pos: u64,
        output: &'a mut W,
    ) -> storage::Result<u64>
    where
        W: AsyncWrite + Unpin + Sync + Send,
        P: AsRef<Path> + Send + Debug,
    {
        let reader = user
            .vfs
            .open_read(vpath(path.as_ref())?)
            .await
            .map_err(reply)?;
        let size = reader.size();
        let start = start_pos.min(size);
        let chunk_at = |at: u64| (size - at).min(TRANSFER_CHUNK as u64) as usize;
        // The next chunk is read and verified while the current one is being sent.
        let mut data = if start < size {
            reader
                .read_at(start, chunk_at(start))
                .await
                .map_err(reply)?
        } else {
            bytes::Bytes::new()
        };
        let mut offset = start;
        while !data.is_empty() {
            let next_at = offset + data.len() as u64;
            let (sent, next) = if next_at < size {
                let (w, r) = tokio::join!(
                    output.write_all(&data),
                    reader.read_at(next_at, chunk_at(next_at))
                );
                (w, r.map_err(reply)?)
            } else {
                (output.write_all(&data).await, bytes::Bytes::new())
            };
            sent?;
            offset = next_at;
            data = next;
        }
        output.flush().await?;
        let sent = offset - start;
        debug!(bytes = sent, offset = start_pos, "ftp download sent");
        Ok(sent)
    }

    async fn get<P: AsRef<Path> + Send + Debug>(
        &self,
        user: &FtpUser,
        path: P,
        start_pos: u64,
    ) -> storage::Result<Box<dyn AsyncRead + Send + Sync + Unpin>> {
        // Only used by libunftp's optional fallbacks (transfers go through `get_into`).
        let reader = user
            .vfs
            .open_read(vpath(path.as_ref())?)
            .await
            .map_err(reply)?;
        let (mut tx, rx) = tokio::io::duplex(TRANSFER_CHUNK);
        tokio::spawn(async move {
            let size = reader.size();
            let mut offset = start_pos.min(size);
            while offset < size {
                let want = (size - offset).min(TRANSFER_CHUNK as u64) as usize;
                let Ok(data) = reader.read_at(offset, want).await else {
                    return;
                };
                if data.is_empty() || tx.write_all(&data).await.is_err() {
                    return;
                }
                offset += data.len() as u64;
            }
        });
        Ok(Box::new(rx))
    }

    async fn put<P: AsRef<Path> + Send + Debug, R: AsyncRead + Send + Sync + Unpin + 'static>(
        &self,
        user: &FtpUser,
        mut input: R,
        path: P,
        start_pos: u64,
    ) -> storage::Result<u64> {
        // STOR starts a new version; REST+STOR and APPE continue the current one, and the
        // commit fails if another upload replaced it meanwhile.
        let opts = WriteOptions {
            truncate: start_pos == 0,
            exclusive: false,
        };
        let mut writer = user
            .vfs
            .create(vpath(path.as_ref())?, opts)
            .await
            .map_err(reply)?;
        if start_pos > writer.len() {
            writer.abort().await;
            return Err(reply(VfsError::new(
                ErrorKind::InvalidPath,
                "the restart offset is beyond the end of the file",
            )));
        }
        match receive(&mut writer, &mut input, start_pos).await {
            Ok(n) => {
                writer.commit().await.map_err(reply)?;
                debug!(bytes = n, offset = start_pos, "ftp upload committed");
                Ok(n)
            }
            Err(Cut::Interrupted(e)) => {
                // Never a 226: a new name may keep the bytes received (resumable with
                // REST+STOR or APPE), an existing version is never replaced (docs/FTPES.md).
                let kept = writer.interrupted().await;
                let why = std::error::Error::source(&e).map(ToString::to_string);
                info!(
                    kept = matches!(kept, Interrupted::Kept(_)),
                    offset = start_pos,
                    reason = why.as_deref().unwrap_or("unknown"),
                    "ftp upload interrupted; not reported complete"
                );
                Err(e)
            }
            Err(Cut::Refused(e)) => {
                debug!(error = ?e, "ftp upload refused by storage; nothing committed");
                writer.abort().await;
                Err(e)
            }
        }
    }

    async fn del<P: AsRef<Path> + Send + Debug>(
        &self,
        user: &FtpUser,
        path: P,
    ) -> storage::Result<()> {
        user.vfs.remove(vpath(path.as_ref())?).await.map_err(reply)
    }

    async fn mkd<P: AsRef<Path> + Send + Debug>(
        &self,
        user: &FtpUser,
        path: P,
    ) -> storage::Result<()> {
        user.vfs
            .mkdir(vpath(path.as_ref())?)
            .await
            .map(|_| ())
            .map_err(reply)
    }

    async fn rename<P: AsRef<Path> + Send + Debug>(
        &self,
        user: &FtpUser,
        from: P,
        to: P,
    ) -> storage::Result<()> {
        // RNTO onto an existing file replaces it, as rename(2) does on other FTP servers.
        user.vfs
            .rename(vpath(from.as_ref())?, vpath(to.as_ref())?, true)
            .await
            .map_err(reply)
    }

    async fn rmd<P: AsRef<Path> + Send + Debug>(
        &self,
        user: &FtpUser,
        path: P,
    ) -> storage::Result<()> {
        user.vfs.rmdir(vpath(path.as_ref())?).await.map_err(reply)
    }

    async fn cwd<P: AsRef<Path> + Send + Debug>(
        &self,
        user: &FtpUser,
        path: P,
    ) -> storage::Result<()> {
        let info = user.vfs.stat(vpath(path.as_ref())?).await.map_err(reply)?;
        if info.kind == EntryKind::Dir {
            Ok(())
        } else {
            Err(reply(VfsError::new(
                ErrorKind::NotADirectory,
                "not a directory",
            )))
        }
    }
}
