//! Uploads in flight to names that hold no file yet, on this node: so an exclusive create
//! (`CREAT|EXCL`, FTP `STOU`-like clients, "fail if it exists") fails at open when another
//! upload of that name is already running, not only at its close.
//!
//! Per process: two nodes of a fleet can each admit one exclusive create of a name; the second
//! to commit then fails with `AlreadyExists` (the commit checks the name in the database).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use crate::error::{ErrorKind, VfsError, VfsResult};

type Key = (i64, Vec<u8>);

/// The names with uploads in flight: (tenant, blind index) → how many.
#[derive(Debug, Default)]
pub(crate) struct NewNames {
    names: Arc<Mutex<HashMap<Key, u32>>>,
}

/// One upload's claim on a new name; released when the writer is dropped (committed,
/// aborted or interrupted).
#[derive(Debug)]
pub(crate) struct NewNameClaim {
    names: Arc<Mutex<HashMap<Key, u32>>>,
    key: Key,
}

impl NewNames {
    /// Claims `index` in `tenant_id` for an upload; an `exclusive` claim fails when another
    /// upload of the name is in flight.
    pub(crate) fn claim(
        &self,
        tenant_id: i64,
        index: &[u8],
        exclusive: bool,
    ) -> VfsResult<NewNameClaim> {
        let key = (tenant_id, index.to_vec());
        let mut names = self.names.lock().unwrap_or_else(PoisonError::into_inner);
        let n = names.entry(key.clone()).or_insert(0);
        if exclusive && *n > 0 {
            return Err(VfsError::new(
                ErrorKind::AlreadyExists,
                "the file already exists (another upload of that name is in progress)",
            ));
        }
        *n += 1;
        Ok(NewNameClaim {
            names: self.names.clone(),
            key,
        })
    }
}

impl Drop for NewNameClaim {
    fn drop(&mut self) {
        let mut names = self.names.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = names.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                names.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_exclusive_create_fails_until_the_first_ends() {
        let names = NewNames::default();
        let first = names.claim(1, b"idx", true).unwrap();
        let e = names.claim(1, b"idx", true).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::AlreadyExists);
        // Another tenant's same index, and a plain create, are not blocked.
        let _other = names.claim(2, b"idx", true).unwrap();
        let plain = names.claim(1, b"idx", false).unwrap();
        drop(first);
        assert!(
            names.claim(1, b"idx", true).is_err(),
            "the plain upload still runs"
        );
        drop(plain);
        assert!(names.claim(1, b"idx", true).is_ok());
    }
}
