//! Small objects stored in their file's metadata row instead of the primary object store.
//!
//! A sealed object no larger than `uploads.inline_max_bytes` is committed in the file's row
//! (`nodes.inline_object`): the same bytes the format writes to a store (docs/FORMAT.md), only
//! kept elsewhere. [`InlineObject`] shows those bytes as a one-object, read-only
//! [`ObjectStore`], so the reader, the replicator and fsck handle them with the code, the
//! verification and the read repair they use for any object: where the primary store's copy
//! would be read, the row's is.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use coffer_meta::NamespaceStore;
use coffer_object::{ObjectError, ObjectKey, ObjectMeta, ObjectStore};

use crate::error::VfsResult;

/// The largest `uploads.inline_max_bytes` (sealed bytes): an object up to one in-memory batch
/// of the writer (it never reaches the spool), well inside a MEDIUMBLOB and the default
/// `max_allowed_packet` of MariaDB and MySQL.
pub const MAX_INLINE_BYTES: u32 = 1024 * 1024;

/// Default of `uploads.inline_max_bytes`: see docs/PERFORMANCE.md, "Small files inline".
pub const DEFAULT_INLINE_MAX_BYTES: u32 = 16 * 1024;

/// One sealed object held in memory, read from its row, seen as a store that holds only it.
#[derive(Debug)]
pub(crate) struct InlineObject {
    key: ObjectKey,
    bytes: Bytes,
}

impl InlineObject {
    pub(crate) fn new(key: ObjectKey, bytes: Bytes) -> Self {
        Self { key, bytes }
    }

    /// The object `key` from its row, if the row holds it; `None` if no committed row holds
    /// that key inline (the object is in the primary store, or its row is gone).
    pub(crate) async fn fetch(
        meta: &dyn NamespaceStore,
        key: &ObjectKey,
    ) -> VfsResult<Option<Arc<dyn ObjectStore>>> {
        Ok(meta.inline_object(key.as_str()).await?.map(|bytes| {
            Arc::new(InlineObject::new(key.clone(), Bytes::from(bytes))) as Arc<dyn ObjectStore>
        }))
    }

    fn check_key(&self, key: &ObjectKey) -> Result<(), ObjectError> {
        if *key == self.key {
            Ok(())
        } else {
            Err(ObjectError::NotFound)
        }
    }
}

fn read_only() -> ObjectError {
    ObjectError::Unavailable("an object stored in its metadata row is read-only here".to_owned())
}

#[async_trait]
impl ObjectStore for InlineObject {
    fn describe(&self) -> String {
        "metadata row (inline object)".to_owned()
    }

    async fn put(&self, _: &ObjectKey, _: Bytes) -> Result<(), ObjectError> {
        Err(read_only())
    }

    async fn put_file(&self, _: &ObjectKey, _: &Path) -> Result<(), ObjectError> {
        Err(read_only())
    }

    /// Same contract as every store: the range must lie wholly inside the object.
    async fn get_range(&self, key: &ObjectKey, start: u64, len: u64) -> Result<Bytes, ObjectError> {
        self.check_key(key)?;
        let size = self.bytes.len() as u64;
        match start.checked_add(len) {
            Some(end) if end <= size => Ok(self.bytes.slice(start as usize..end as usize)),
            _ => Err(ObjectError::RangeOutOfBounds {
                start,
                end: start.saturating_add(len),
                size,
            }),
        }
    }

    async fn head(&self, key: &ObjectKey) -> Result<ObjectMeta, ObjectError> {
        self.check_key(key)?;
        Ok(ObjectMeta {
            size: self.bytes.len() as u64,
        })
    }

    async fn copy(&self, _: &ObjectKey, _: &ObjectKey) -> Result<(), ObjectError> {
        Err(read_only())
    }

    /// The bytes go with their row; nothing to delete here.
    async fn delete(&self, _: &ObjectKey) -> Result<(), ObjectError> {
        Ok(())
    }
}

/// A store that holds nothing (a row that no longer holds its object).
#[derive(Debug)]
pub(crate) struct EmptyStore;

#[async_trait]
impl ObjectStore for EmptyStore {
    fn describe(&self) -> String {
        "nothing".to_owned()
    }
    async fn put(&self, _: &ObjectKey, _: Bytes) -> Result<(), ObjectError> {
        Err(read_only())
    }
    async fn put_file(&self, _: &ObjectKey, _: &Path) -> Result<(), ObjectError> {
        Err(read_only())
    }
    async fn get_range(&self, _: &ObjectKey, _: u64, _: u64) -> Result<Bytes, ObjectError> {
        Err(ObjectError::NotFound)
    }
    async fn head(&self, _: &ObjectKey) -> Result<ObjectMeta, ObjectError> {
        Err(ObjectError::NotFound)
    }
    async fn copy(&self, _: &ObjectKey, _: &ObjectKey) -> Result<(), ObjectError> {
        Err(ObjectError::NotFound)
    }
    async fn delete(&self, _: &ObjectKey) -> Result<(), ObjectError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn serves_exact_ranges_of_its_one_object() {
        let key = ObjectKey::generate().unwrap();
        let store = InlineObject::new(key.clone(), Bytes::from_static(b"sealed bytes"));
        assert_eq!(store.head(&key).await.unwrap().size, 12);
        assert_eq!(&store.get_range(&key, 7, 5).await.unwrap()[..], b"bytes");
        assert!(matches!(
            store.get_range(&key, 7, 6).await,
            Err(ObjectError::RangeOutOfBounds { .. })
        ));
        let other = ObjectKey::generate().unwrap();
        assert!(matches!(
            store.head(&other).await,
            Err(ObjectError::NotFound)
        ));
        assert!(store.put(&key, Bytes::new()).await.is_err());
    }
}
