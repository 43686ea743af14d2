//! One upload's spool file: sealed chunks appended on a blocking thread, created (0600) with
//! the first batch, and — when it will itself become the object in a local store — flushed to
//! disk in the background as it grows.

use std::io::Write;
use std::path::{Path, PathBuf};

use tokio::task::JoinHandle;

use super::batch::Batch;

use crate::error::{ErrorKind, VfsError, VfsResult, internal};

/// A spool file bound for a local store is flushed to disk in the background every this many
/// bytes.
const WRITE_BACK_STEP: u64 = 32 * 1024 * 1024;

/// The spool file of one upload.
#[derive(Debug)]
pub(super) struct SpoolFile {
    path: PathBuf,
    /// Open while batches are appended; `None` before the first and after [`SpoolFile::close`]
    /// — or after a failed write, which leaves the file unusable.
    file: Option<std::fs::File>,
    /// Set by the first append: from then on the object is assembled here.
    started: bool,
    /// Bytes written so far.
    len: u64,
    /// The background flush started last, and how far it reaches.
    write_back: Option<JoinHandle<std::io::Result<()>>>,
    written_back: u64,
}

impl SpoolFile {
    /// A spool file at `path`, not created yet.
    pub(super) fn new(path: PathBuf) -> Self {
        Self {
            path,
            file: None,
            started: false,
            len: 0,
            write_back: None,
            written_back: 0,
        }
    }

    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// `true` once a batch was appended: the object no longer fits in memory.
    pub(super) fn started(&self) -> bool {
        self.started
    }

    /// Bytes written so far.
    pub(super) fn len(&self) -> u64 {
        self.len
    }

    /// Appends `batch` (creating the file on the first call) on a blocking thread; returns
    /// the batch emptied, for reuse.
    pub(super) async fn append(&mut self, mut batch: Batch) -> VfsResult<Batch> {
        let file = self.file.take();
        if file.is_none() && self.started {
            return Err(VfsError::new(ErrorKind::Internal, "spool file closed"));
        }
        self.started = true;
        let path = self.path.clone();
        let written = batch.len() as u64;
        let (file, batch) = tokio::task::spawn_blocking(move || -> VfsResult<_> {
            let mut file = match file {
                Some(file) => file,
                None => open_spool_file(&path)?,
            };
            file.write_all(batch.as_slice())
                .map_err(|e| internal("writing to the spool failed", e))?;
            batch.clear();
            Ok((file, batch))
        })
        .await
        .map_err(|e| internal("spool task", e))??;
        self.len += written;
        self.file = Some(file);
        Ok(batch)
    }

    /// For a spool file that will become the object itself (a local store renames it into
    /// place and fsyncs it), starts flushing it to disk every [`WRITE_BACK_STEP`] in the
    /// background: the kernel would otherwise hold gigabytes of dirty pages and write them
    /// all in the fsync at commit, while the client waits. Never waits for the disk: while the
    /// previous flush runs, the next one is simply started later.
    pub(super) async fn write_back(&mut self) -> VfsResult<()> {
        if self.len < self.written_back + WRITE_BACK_STEP {
            return Ok(());
        }
        let Some(file) = self.file.as_ref() else {
            return Ok(());
        };
        if let Some(previous) = self.write_back.take() {
            if !previous.is_finished() {
                self.write_back = Some(previous);
                return Ok(());
            }
            synced(previous).await?;
        }
        let file = file
            .try_clone()
            .map_err(|e| internal("syncing the spool failed", e))?;
        self.write_back = Some(tokio::task::spawn_blocking(move || file.sync_data()));
        self.written_back = self.len;
        Ok(())
    }

    /// Closes the file and waits for the background flush. An error here must fail the
    /// upload: the store's own fsync of the file opens a new descriptor, which Linux does not
    /// tell about a write-back error it already reported.
    pub(super) async fn close(&mut self) -> VfsResult<()> {
        self.file = None;
        match self.write_back.take() {
            Some(pending) => synced(pending).await,
            None => Ok(()),
        }
    }

    /// Closes and deletes the file, if there is one.
    pub(super) async fn remove(&mut self) {
        self.file = None;
        let _ = tokio::fs::remove_file(&self.path).await;
    }

    /// The path, leaving this value without one (for clean-up in the background).
    pub(super) fn take_path(&mut self) -> PathBuf {
        self.file = None;
        std::mem::take(&mut self.path)
    }
}

async fn synced(flush: JoinHandle<std::io::Result<()>>) -> VfsResult<()> {
    flush
        .await
        .map_err(|e| internal("spool task", e))?
        .map_err(|e| internal("syncing the spool failed", e))
}

fn open_spool_file(path: &Path) -> VfsResult<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| internal("cannot create a spool file", e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A batch holding `bytes`.
    fn sealed(bytes: &[u8]) -> Batch {
        let mut batch = Batch::new(bytes.len());
        batch.extend_from_slice(bytes).unwrap();
        batch
    }

    #[tokio::test]
    async fn nothing_is_created_until_the_first_batch() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = SpoolFile::new(dir.path().join("up"));
        assert!(!spool.started());
        spool.close().await.unwrap();
        assert!(!dir.path().join("up").exists());
    }

    #[tokio::test]
    async fn batches_are_appended_in_order_to_a_0600_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = SpoolFile::new(dir.path().join("up"));
        let batch = spool.append(sealed(&[1; 10])).await.unwrap();
        assert_eq!(batch.len(), 0, "handed back empty");
        spool.append(Batch::new(8)).await.unwrap();
        spool.append(sealed(&[2; 5])).await.unwrap();
        spool.write_back().await.unwrap();
        spool.close().await.unwrap();
        assert_eq!(spool.len(), 15);
        let mut want = vec![1u8; 10];
        want.extend([2; 5]);
        assert_eq!(std::fs::read(spool.path()).unwrap(), want);
        let mode = std::fs::metadata(spool.path())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        spool.remove().await;
        assert!(!dir.path().join("up").exists());
    }

    #[tokio::test]
    async fn a_large_file_is_flushed_in_the_background_as_it_grows() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = SpoolFile::new(dir.path().join("up"));
        spool
            .append(sealed(&vec![7; WRITE_BACK_STEP as usize]))
            .await
            .unwrap();
        spool.write_back().await.unwrap();
        assert_eq!(spool.written_back, WRITE_BACK_STEP);
        spool.close().await.unwrap();
    }

    #[tokio::test]
    async fn an_existing_file_is_never_appended_to() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("up"), b"someone else's").unwrap();
        let mut spool = SpoolFile::new(dir.path().join("up"));
        let err = spool.append(sealed(&[1])).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Internal);
        let err = spool.append(sealed(&[1])).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Internal, "the upload stays failed");
    }
}
