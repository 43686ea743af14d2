//! `LocalDirStore`: objects as files in a sharded local directory, written atomically and durably.
//!
//! Layout under the root:
//!
//! ```text
//! root/                 0700
//!   .tmp/               0700  objects being written; leftovers after a crash (see `clean_temp`)
//!   00/ … ff/           0700  the 256 shard directories, all created when the store is opened
//!     abcd…(32 hex)     0600  one file per object in the shard of its first two hex digits,
//!                             named by its random key only
//! ```
//!
//! Earlier builds kept objects one level deeper (`ab/cd/abcd…`); such objects are still read,
//! copied and removed where they are. Creating every shard up front keeps `mkdir` and its
//! directory fsyncs off the upload path: with a shard per key prefix created on demand, most
//! of the first tens of thousands of objects paid for one.
//!
//! Every write goes to a fresh file in `.tmp`, is fsynced, renamed into place and the
//! destination directory is fsynced, so a reader (or a restart after a crash) sees a whole
//! object or none. Objects are immutable: `put` on an existing key atomically replaces it
//! (readers see the old bytes or the new bytes, never a mix); the Vfs never reuses keys.

use std::fs::{self, DirBuilder, File, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use crate::{ObjectError, ObjectKey, ObjectMeta, ObjectStore};

/// Directory inside the root where objects are written before being renamed into place.
/// Cannot collide with a shard directory, which is always two hex digits.
const TEMP_DIR_NAME: &str = ".tmp";
/// Mode of every directory the store creates: only the service user may list or enter it.
const DIR_MODE: u32 = 0o700;
/// Mode of every object file: only the service user may read it.
const FILE_MODE: u32 = 0o600;

/// An [`ObjectStore`] over a local directory (the embedded default, standing in for a bucket).
///
/// Blocking filesystem work runs on tokio's blocking pool, never on the async threads.
/// Cloning is cheap and clones share the same root.
#[derive(Debug, Clone)]
pub struct LocalDirStore {
    layout: Arc<Layout>,
}

impl LocalDirStore {
    /// Opens a store rooted at `root`, creating it (mode 0700) and its temp dir if missing.
    pub fn open(root: &Path) -> Result<Self, ObjectError> {
        let temp_dir = root.join(TEMP_DIR_NAME);
        DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(root)?;
        DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(&temp_dir)?;
        let layout = Layout {
            root: root.to_path_buf(),
            temp_dir,
        };
        layout.create_shards()?;
        Ok(Self {
            layout: Arc::new(layout),
        })
    }

    /// The directory this store keeps its objects under.
    pub fn root(&self) -> &Path {
        &self.layout.root
    }

    /// Path of an object (for tests and fsck): root/ab/<key>, sharded by its first two hex
    /// digits.
    pub fn object_path(&self, key: &ObjectKey) -> PathBuf {
        self.layout.object_path(key)
    }

    /// Removes everything left in the temp dir by writes a crash interrupted; returns how many
    /// entries were removed.
    ///
    /// Blocks the calling thread, and deletes the temp file of any write still in progress:
    /// call it at start-up, before the store serves requests.
    pub fn clean_temp(&self) -> Result<usize, ObjectError> {
        let removed = self.layout.clean_temp()?;
        if removed > 0 {
            let store = self.describe();
            tracing::info!(removed, %store, "removed interrupted writes from the temp dir");
        }
        Ok(removed)
    }

    /// Runs `work` against the layout on the blocking pool.
    async fn run_blocking<T, F>(&self, work: F) -> Result<T, ObjectError>
    where
        T: Send + 'static,
        F: FnOnce(&Layout) -> Result<T, ObjectError> + Send + 'static,
    {
        let layout = Arc::clone(&self.layout);
        tokio::task::spawn_blocking(move || work(&layout))
            .await
            .map_err(|join_error| ObjectError::Io(io::Error::other(join_error)))?
    }
}

#[async_trait]
impl ObjectStore for LocalDirStore {
    fn describe(&self) -> String {
        format!("local:{}", self.layout.root.display())
    }

    /// Writes `body` to a temp file, fsyncs it and renames it over `key` (replacing any
    /// existing object atomically).
    async fn put(&self, key: &ObjectKey, body: Bytes) -> Result<(), ObjectError> {
        let key = key.clone();
        self.run_blocking(move |layout| layout.write_bytes(&key, &body))
            .await
    }

    /// Two or more objects: every body to its temp file, one `syncfs` for all of them, every
    /// rename, one `syncfs` for the renames; see [`Layout::write_many`]. One object: [`put`].
    ///
    /// [`put`]: Self::put
    async fn put_many(&self, items: Vec<(ObjectKey, Bytes)>) -> Vec<Result<(), ObjectError>> {
        if items.len() < 2 {
            let mut stored = Vec::with_capacity(items.len());
            for (key, body) in items {
                stored.push(self.put(&key, body).await);
            }
            return stored;
        }
        let count = items.len();
        match self
            .run_blocking(move |layout| Ok(layout.write_many(&items)))
            .await
        {
            Ok(stored) => stored,
            // The blocking task itself failed (a panic): nothing is known to be stored.
            Err(error) => (0..count).map(|_| Err(copy_error(&error))).collect(),
        }
    }

    /// Moves `file` into place when it lives on the same filesystem, else copies it and
    /// removes it; either way `file` is gone on success.
    async fn put_file(&self, key: &ObjectKey, file: &Path) -> Result<(), ObjectError> {
        let key = key.clone();
        let source = file.to_path_buf();
        self.run_blocking(move |layout| layout.move_file(&source, &key))
            .await
    }

    async fn get_range(&self, key: &ObjectKey, start: u64, len: u64) -> Result<Bytes, ObjectError> {
        let key = key.clone();
        self.run_blocking(move |layout| layout.read_range(&key, start, len))
            .await
    }

    async fn head(&self, key: &ObjectKey) -> Result<ObjectMeta, ObjectError> {
        let key = key.clone();
        self.run_blocking(move |layout| layout.size(&key))
            .await
            .map(|size| ObjectMeta { size })
    }

    async fn copy(&self, from: &ObjectKey, to: &ObjectKey) -> Result<(), ObjectError> {
        let (from, to) = (from.clone(), to.clone());
        self.run_blocking(move |layout| layout.copy_object(&from, &to))
            .await
    }

    /// Removes the object's file; empty shard directories are left for the next object.
    async fn delete(&self, key: &ObjectKey) -> Result<(), ObjectError> {
        let key = key.clone();
        self.run_blocking(move |layout| layout.remove(&key)).await
    }
}

/// Where things live under the root, and the blocking operations on them.
#[derive(Debug)]
struct Layout {
    root: PathBuf,
    temp_dir: PathBuf,
}

impl Layout {
    fn object_path(&self, key: &ObjectKey) -> PathBuf {
        self.root.join(shard_name(key)).join(key.as_str())
    }

    /// Where earlier builds kept the object: root/ab/cd/<key>.
    fn legacy_path(&self, key: &ObjectKey) -> PathBuf {
        let inner = key.as_str().get(2..4).unwrap_or_default();
        self.root
            .join(shard_name(key))
            .join(inner)
            .join(key.as_str())
    }

    /// Opens an object for reading wherever it lives.
    fn open_object(&self, key: &ObjectKey) -> Result<File, ObjectError> {
        match File::open(self.object_path(key)) {
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                File::open(self.legacy_path(key)).map_err(not_found_or_io)
            }
            result => Ok(result?),
        }
    }

    /// Creates the 256 shard directories that are missing, durably. "ff" is created last, so
    /// finding it means the set is complete and opening an existing store costs one `stat`.
    fn create_shards(&self) -> io::Result<()> {
        if self.root.join("ff").is_dir() {
            return Ok(());
        }
        for shard in 0..=0xffu8 {
            if shard == 0xff {
                sync_dir(&self.root)?;
            }
            create_dir_if_missing(&self.root.join(format!("{shard:02x}")))?;
        }
        sync_dir(&self.root)
    }

    fn write_bytes(&self, key: &ObjectKey, body: &[u8]) -> Result<(), ObjectError> {
        let mut temp = self.create_temp()?;
        temp.file.write_all(body)?;
        self.publish(temp, key)
    }

    /// `put_many`: writes every body to a temp file, flushes the filesystem once (`syncfs`),
    /// renames each into place, and flushes it once more for the renames. Where `put` takes two
    /// fsyncs per object, each a flush of the device's cache, a batch takes two in all; the
    /// replicator copies small objects this way (docs/PERFORMANCE.md, "One flush per batch on a
    /// local replica"). A `syncfs` also writes whatever else of the filesystem is dirty, which
    /// is why single objects keep the fsyncs. One result per item, in order: an item whose
    /// write or rename failed fails alone; a failed flush fails every item it was to cover.
    fn write_many(&self, items: &[(ObjectKey, Bytes)]) -> Vec<Result<(), ObjectError>> {
        let written: Vec<Result<TempFile, ObjectError>> = items
            .iter()
            .map(|(_, body)| {
                let mut temp = self.create_temp()?;
                temp.file.write_all(body)?;
                Ok(temp)
            })
            .collect();
        if let Err(error) = sync_filesystem(&self.temp_dir) {
            // Dropping the temp files removes them.
            return items.iter().map(|_| Err(copy_io_error(&error))).collect();
        }
        let mut stored: Vec<Result<(), ObjectError>> = items
            .iter()
            .zip(written)
            .map(|((key, _), temp)| {
                let mut temp = temp?;
                self.rename_creating_shards(&temp.path, &self.object_path(key), key)?;
                temp.renamed = true;
                Ok(())
            })
            .collect();
        if let Err(error) = sync_filesystem(&self.root) {
            for result in stored.iter_mut().filter(|r| r.is_ok()) {
                *result = Err(copy_io_error(&error));
            }
        }
        stored
    }

    fn copy_object(&self, from: &ObjectKey, to: &ObjectKey) -> Result<(), ObjectError> {
        let source = self.open_object(from)?;
        self.copy_file_into_place(&source, to)
    }

    /// `put_file`: fsync and rename when possible, copy across filesystems.
    fn move_file(&self, source_path: &Path, key: &ObjectKey) -> Result<(), ObjectError> {
        let source = File::open(source_path)?;
        if source.metadata()?.dev() == fs::metadata(&self.temp_dir)?.dev() {
            match self.rename_file_into_place(&source, source_path, key) {
                Err(error) if error.kind() == io::ErrorKind::CrossesDevices => {
                    // Same st_dev but different mount points (a bind mount): copy instead.
                }
                result => return result.map_err(ObjectError::from),
            }
        }
        tracing::debug!(%key, "put_file source is on another filesystem; copying it");
        self.copy_file_into_place(&source, key)?;
        // A source that cannot be removed fails the call although the object is stored: a
        // spool file leaking silently is worse than an upload retried into a fresh key.
        remove_if_present(source_path)?;
        Ok(())
    }

    /// Makes the caller's file private and durable, then renames it over the object's path.
    fn rename_file_into_place(
        &self,
        source: &File,
        source_path: &Path,
        key: &ObjectKey,
    ) -> io::Result<()> {
        source.set_permissions(Permissions::from_mode(FILE_MODE))?;
        source.sync_all()?;
        let destination = self.object_path(key);
        self.rename_creating_shards(source_path, &destination, key)?;
        sync_parent_dir(&destination)
    }

    fn copy_file_into_place(&self, mut source: &File, key: &ObjectKey) -> Result<(), ObjectError> {
        let mut temp = self.create_temp()?;
        io::copy(&mut source, &mut temp.file)?;
        self.publish(temp, key)
    }

    /// Open, stat and one `pread` in a single blocking task: `tokio::fs` would take a pool
    /// round trip per call and split a 4 MiB read into 2 MiB pieces.
    fn read_range(&self, key: &ObjectKey, start: u64, len: u64) -> Result<Bytes, ObjectError> {
        let file = self.open_object(key)?;
        let size = file.metadata()?.len();
        let out_of_bounds = || ObjectError::RangeOutOfBounds {
            start,
            end: start.saturating_add(len),
            size,
        };
        match start.checked_add(len) {
            Some(end) if end <= size => {}
            _ => return Err(out_of_bounds()),
        }
        let mut buffer = vec![0u8; usize::try_from(len).map_err(|_| out_of_bounds())?];
        file.read_exact_at(&mut buffer, start)?;
        Ok(Bytes::from(buffer))
    }

    fn size(&self, key: &ObjectKey) -> Result<u64, ObjectError> {
        Ok(self.open_object(key)?.metadata()?.len())
    }

    fn remove(&self, key: &ObjectKey) -> Result<(), ObjectError> {
        remove_if_present(&self.object_path(key))?;
        remove_if_present(&self.legacy_path(key))?;
        Ok(())
    }

    fn clean_temp(&self) -> Result<usize, ObjectError> {
        let mut removed = 0;
        for entry in fs::read_dir(&self.temp_dir)? {
            let entry = entry?;
            let outcome = if entry.file_type()?.is_dir() {
                fs::remove_dir_all(entry.path())
            } else {
                fs::remove_file(entry.path())
            };
            match outcome {
                Ok(()) => removed += 1,
                Err(error) if error.kind() == io::ErrorKind::NotFound => {}
                Err(error) => return Err(error.into()),
            }
        }
        Ok(removed)
    }

    /// A new, empty, private file in the temp dir under a random name.
    fn create_temp(&self) -> Result<TempFile, ObjectError> {
        let path = self.temp_dir.join(ObjectKey::generate()?.as_str());
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(FILE_MODE)
            .open(&path)?;
        Ok(TempFile {
            path,
            file,
            renamed: false,
        })
    }

    /// Makes a fully written temp file durable and renames it over the object's path.
    fn publish(&self, mut temp: TempFile, key: &ObjectKey) -> Result<(), ObjectError> {
        temp.file.sync_all()?;
        let destination = self.object_path(key);
        self.rename_creating_shards(&temp.path, &destination, key)?;
        temp.renamed = true;
        sync_parent_dir(&destination)?;
        Ok(())
    }

    /// Renames `from` to `to`; when the shard directory has gone (someone removed it), creates
    /// it durably and tries once more.
    fn rename_creating_shards(&self, from: &Path, to: &Path, key: &ObjectKey) -> io::Result<()> {
        match fs::rename(from, to) {
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                create_dir_if_missing(&self.root.join(shard_name(key)))?;
                sync_dir(&self.root)?;
                fs::rename(from, to)
            }
            result => result,
        }
    }
}

/// A file in the temp dir that is removed again unless it was renamed into place.
struct TempFile {
    path: PathBuf,
    file: File,
    renamed: bool,
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.renamed
            && let Err(error) = fs::remove_file(&self.path)
        {
            let path = self.path.display();
            tracing::warn!(%path, %error, "could not remove a failed write's temp file");
        }
    }
}

/// The shard directory of a key: its first two hex digits.
fn shard_name(key: &ObjectKey) -> &str {
    // An ObjectKey is always 32 ASCII hex digits, so the slice exists.
    key.as_str().get(0..2).unwrap_or_default()
}

fn create_dir_if_missing(dir: &Path) -> io::Result<()> {
    match DirBuilder::new().mode(DIR_MODE).create(dir) {
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        result => result,
    }
}

/// Fsyncs a directory so a rename or create inside it survives a crash.
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Flushes everything written to the filesystem holding `dir` (`syncfs`), and waits for it.
fn sync_filesystem(dir: &Path) -> io::Result<()> {
    rustix::fs::syncfs(File::open(dir)?).map_err(io::Error::from)
}

/// The same failure again, for each item of a batch it failed.
fn copy_io_error(error: &io::Error) -> ObjectError {
    ObjectError::Io(io::Error::new(error.kind(), error.to_string()))
}

fn copy_error(error: &ObjectError) -> ObjectError {
    ObjectError::Io(io::Error::other(error.to_string()))
}

fn sync_parent_dir(path: &Path) -> io::Result<()> {
    sync_dir(path.parent().unwrap_or(Path::new("/")))
}

fn remove_if_present(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
        result => result,
    }
}

/// Maps "no such file" to [`ObjectError::NotFound`] where the missing file is the object itself.
fn not_found_or_io(error: io::Error) -> ObjectError {
    if error.kind() == io::ErrorKind::NotFound {
        ObjectError::NotFound
    } else {
        ObjectError::Io(error)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    /// The cross-filesystem fallback of `put_file` must copy every byte and leave no source
    /// behind, even on a machine where the test's temp dirs share one filesystem.
    #[test]
    fn copy_fallback_copies_everything_and_publishes_privately() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalDirStore::open(&dir.path().join("store")).unwrap();
        let source_path = dir.path().join("upload");
        let body: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        fs::write(&source_path, &body).unwrap();
        let key = ObjectKey::generate().unwrap();

        let source = File::open(&source_path).unwrap();
        store.layout.copy_file_into_place(&source, &key).unwrap();

        let stored = store.object_path(&key);
        assert_eq!(fs::read(&stored).unwrap(), body);
        assert_eq!(
            fs::metadata(&stored).unwrap().permissions().mode() & 0o777,
            FILE_MODE
        );
        assert_eq!(
            fs::read_dir(dir.path().join("store").join(TEMP_DIR_NAME))
                .unwrap()
                .count(),
            0
        );
    }

    /// Keys in `n` different shards.
    fn keys_in_distinct_shards(n: usize) -> Vec<ObjectKey> {
        let mut keys: Vec<ObjectKey> = Vec::new();
        while keys.len() < n {
            let key = ObjectKey::generate().unwrap();
            if keys.iter().all(|k| shard_name(k) != shard_name(&key)) {
                keys.push(key);
            }
        }
        keys
    }

    #[tokio::test]
    async fn a_batch_stores_every_object_and_fails_only_the_one_it_cannot_place() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalDirStore::open(dir.path()).unwrap();
        let keys = keys_in_distinct_shards(3);
        // A plain file where the second object's shard directory belongs.
        let blocked = dir.path().join(shard_name(&keys[1]));
        fs::remove_dir(&blocked).unwrap();
        fs::write(&blocked, b"not a directory").unwrap();
        let bodies: Vec<Bytes> = (0..3u8)
            .map(|i| Bytes::from(vec![i; 5_000 + usize::from(i)]))
            .collect();
        let items = keys.iter().cloned().zip(bodies.iter().cloned()).collect();

        let stored = store.put_many(items).await;

        assert_eq!(stored.len(), 3);
        assert!(stored[0].is_ok() && stored[2].is_ok(), "{stored:?}");
        assert!(
            stored[1].is_err(),
            "the blocked object must fail: {stored:?}"
        );
        for i in [0, 2] {
            let size = bodies[i].len() as u64;
            assert_eq!(store.get_range(&keys[i], 0, size).await.unwrap(), bodies[i]);
            assert_eq!(
                fs::metadata(store.object_path(&keys[i]))
                    .unwrap()
                    .permissions()
                    .mode()
                    & 0o777,
                FILE_MODE
            );
        }
        assert!(
            store.head(&keys[1]).await.is_err(),
            "nothing is stored under the blocked key"
        );
        assert_eq!(
            fs::read_dir(dir.path().join(TEMP_DIR_NAME))
                .unwrap()
                .count(),
            0,
            "the failed object's temp file must be removed"
        );
    }

    #[tokio::test]
    async fn a_batch_of_one_or_none_is_stored_as_put_stores_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalDirStore::open(dir.path()).unwrap();
        let key = ObjectKey::generate().unwrap();

        assert!(store.put_many(Vec::new()).await.is_empty());
        let stored = store
            .put_many(vec![(key.clone(), Bytes::from_static(b"one"))])
            .await;

        assert!(matches!(stored.as_slice(), [Ok(())]));
        assert_eq!(store.get_range(&key, 0, 3).await.unwrap(), &b"one"[..]);
    }

    #[test]
    fn failed_write_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalDirStore::open(dir.path()).unwrap();
        let key = ObjectKey::generate().unwrap();
        // A plain file where the object's shard directory belongs makes the rename fail.
        let shard = dir.path().join(shard_name(&key));
        fs::remove_dir(&shard).unwrap();
        fs::write(&shard, b"not a directory").unwrap();

        assert!(store.layout.write_bytes(&key, b"body").is_err());
        assert_eq!(
            fs::read_dir(dir.path().join(TEMP_DIR_NAME))
                .unwrap()
                .count(),
            0
        );
    }
}
