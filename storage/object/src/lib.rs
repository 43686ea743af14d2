//! Object stores: opaque ciphertext blobs under random keys (a local directory, or S3).
//!
//! An object store never sees a file name, a folder name or a byte of plaintext: keys are
//! random ids made by [`ObjectKey::generate`] and bodies are sealed by `coffer-format`.

#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::panic
    )
)]

use std::fmt::Debug;
use std::path::Path;

use async_trait::async_trait;
use bytes::Bytes;

pub mod conformance;
mod local;
mod s3;

pub use local::LocalDirStore;
pub use s3::{DEFAULT_PART_SIZE, MAX_PART_SIZE, MIN_PART_SIZE, S3Credentials, S3Settings, S3Store};

/// The storage key of one object: 128 random bits, written as 32 lowercase hex digits.
///
/// Keys carry no name, no folder and no tenant: a bucket listing reveals nothing.
#[derive(Clone, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub struct ObjectKey(String);

impl ObjectKey {
    /// A fresh key from the OS CSPRNG.
    pub fn generate() -> Result<Self, ObjectError> {
        let mut raw = [0u8; 16];
        aws_lc_rs::rand::fill(&mut raw).map_err(|_| ObjectError::Random)?;
        Ok(Self(hex::encode(raw)))
    }

    /// Parses a key read back from the metadata store; refuses anything but 32 hex digits,
    /// so a tampered row cannot point a store outside its root.
    pub fn parse(s: &str) -> Result<Self, ObjectError> {
        if s.len() == 32
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            Ok(Self(s.to_owned()))
        } else {
            Err(ObjectError::InvalidKey)
        }
    }

    /// The key as stored in the metadata database.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What `head` reports about a stored object.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct ObjectMeta {
    /// Length of the stored (sealed) object in bytes.
    pub size: u64,
}

/// Errors from an object store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ObjectError {
    /// The object does not exist.
    #[error("object not found")]
    NotFound,
    /// A ranged read asked for bytes past the end of the object.
    #[error("range {start}..{end} is outside the object of {size} bytes")]
    RangeOutOfBounds {
        /// First byte asked for.
        start: u64,
        /// One past the last byte asked for.
        end: u64,
        /// Actual object size.
        size: u64,
    },
    /// A key that is not 32 lowercase hex digits.
    #[error("invalid object key")]
    InvalidKey,
    /// The OS random generator failed.
    #[error("the OS random number generator failed")]
    Random,
    /// The store did not answer in time or refused the connection; worth retrying.
    #[error("object store unavailable: {0}")]
    Unavailable(String),
    /// The store refused the request (bad credentials, a missing permission, an invalid
    /// request); retrying the same request will not help.
    #[error("object store refused the request: {0}")]
    Rejected(String),
    /// Local I/O failed.
    #[error("object store I/O error: {0}")]
    Io(#[from] std::io::Error),
}

/// A store of immutable objects. Objects are written once and never modified in place.
///
/// Implementations are cheap to share (`Arc<dyn ObjectStore>`).
#[async_trait]
pub trait ObjectStore: Send + Sync + Debug {
    /// A short name for logs and metrics, e.g. `local:/var/lib/coffer/store/primary`.
    fn describe(&self) -> String;

    /// Stores `body` under `key`, durably, atomically: a reader sees all of it or nothing.
    async fn put(&self, key: &ObjectKey, body: Bytes) -> Result<(), ObjectError>;

    /// Stores several objects, each as [`put`](Self::put) would: one result per item, in
    /// order. The default stores them one after another; a store that can make a batch durable
    /// at once does (a local directory flushes its filesystem twice for the whole batch instead
    /// of twice per object).
    async fn put_many(&self, items: Vec<(ObjectKey, Bytes)>) -> Vec<Result<(), ObjectError>> {
        let mut stored = Vec::with_capacity(items.len());
        for (key, body) in items {
            stored.push(self.put(&key, body).await);
        }
        stored
    }

    /// Stores the whole content of the local file `file` under `key`, durably and atomically.
    /// The store may move the file instead of copying it; the caller must not use it afterwards.
    async fn put_file(&self, key: &ObjectKey, file: &Path) -> Result<(), ObjectError>;

    /// Reads `len` bytes starting at `start`. Fails with `RangeOutOfBounds` if the range
    /// does not lie wholly inside the object.
    async fn get_range(&self, key: &ObjectKey, start: u64, len: u64) -> Result<Bytes, ObjectError>;

    /// Size of the object, or `NotFound`.
    async fn head(&self, key: &ObjectKey) -> Result<ObjectMeta, ObjectError>;

    /// Copies an object to a new key inside the same store.
    async fn copy(&self, from: &ObjectKey, to: &ObjectKey) -> Result<(), ObjectError>;

    /// Deletes an object; deleting a missing object succeeds.
    async fn delete(&self, key: &ObjectKey) -> Result<(), ObjectError>;

    /// Starts storing `key` from the local file `file` while that file is still being
    /// appended to, so little is left to send when it is complete. `None` (the default) means
    /// the store gains nothing from it: call [`put_file`](Self::put_file) at the end instead.
    async fn begin_streaming_upload(
        &self,
        _key: &ObjectKey,
        _file: &Path,
    ) -> Result<Option<Box<dyn StreamingUpload>>, ObjectError> {
        Ok(None)
    }
}

/// An upload fed from a local file that only ever grows at its end (the spool file), begun
/// by [`ObjectStore::begin_streaming_upload`]. Nothing is visible under the key until
/// [`finish`](Self::finish) succeeds; dropping it unfinished abandons the upload.
#[async_trait]
pub trait StreamingUpload: Send + Debug {
    /// The file now holds `len` bytes that will not change; the store may send them.
    async fn file_grew(&mut self, len: u64) -> Result<(), ObjectError>;

    /// The file is complete at `len` bytes: sends the rest and makes the object visible,
    /// durably and atomically. The caller still owns (and removes) the file.
    async fn finish(self: Box<Self>, len: u64) -> Result<(), ObjectError>;

    /// Abandons the upload, leaving nothing under the key.
    async fn abort(self: Box<Self>);
}
