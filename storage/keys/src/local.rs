//! `LocalKeyProvider`: the embedded default, a master key kept in a private local file.

use std::fmt;
use std::path::{Path, PathBuf};

use aws_lc_rs::aead::LessSafeKey;
use aws_lc_rs::digest;

use crate::key_file::{self, MasterKeyBytes};
use crate::{KeyError, KeyProvider, TenantKey, WrapContext, kdf, sealed_blob};

/// HKDF salt under which the local master key is extracted.
const MASTER_SALT: &[u8] = b"coffer/v1/local-master-key";
/// HKDF info of the key that wraps tenant keys.
const TENANT_WRAP_INFO: &[u8] = b"coffer/v1/master/tenant-key-wrap";
/// AEAD label of a wrapped tenant key.
const TENANT_WRAP_LABEL: &[u8] = b"coffer/v1/wrapped-tenant-key";
/// Prefix of the key ids of local master keys.
const KEY_ID_PREFIX: &str = "local:";
/// Bytes of the key's SHA-256 shown in its id (16 hex digits).
const KEY_ID_DIGEST_BYTES: usize = 8;

/// A master key read from a 32-byte local file that only its owner may read (mode 0600).
///
/// The raw master key is not kept: only the wrapping key derived from it and its id.
pub struct LocalKeyProvider {
    path: Option<PathBuf>,
    key_id: String,
    wrapping_key: LessSafeKey,
}

impl LocalKeyProvider {
    /// Loads the 32-byte master key file; creates it (0600, new parent directories 0700,
    /// written atomically: temp file + fsync + no-clobber rename) if it is missing.
    ///
    /// Refuses a file readable or writable by group or others
    /// ([`KeyError::InsecurePermissions`]) and one whose length is not 32
    /// ([`KeyError::BadKeyFile`]).
    pub fn load_or_create(path: &Path) -> Result<Self, KeyError> {
        let key = key_file::read_or_create(path)?;
        Ok(Self::from_master_key(&key, Some(path.to_path_buf())))
    }

    /// Loads an existing master key file with the same checks; never creates one.
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let key = key_file::read(path)?;
        Ok(Self::from_master_key(&key, Some(path.to_path_buf())))
    }

    /// A provider with a random master key that exists only in memory and dies with the
    /// process: for tests and tools of other crates, never for data that must survive.
    pub fn ephemeral() -> Result<Self, KeyError> {
        let mut key = MasterKeyBytes::default();
        aws_lc_rs::rand::fill(key.as_mut_slice()).map_err(|_| KeyError::Random)?;
        Ok(Self::from_master_key(&key, None))
    }

    /// The key file this provider was loaded from (`None` for an ephemeral provider).
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    fn from_master_key(key: &MasterKeyBytes, path: Option<PathBuf>) -> Self {
        let prk = kdf::extract(MASTER_SALT, key.as_slice());
        Self {
            path,
            key_id: local_key_id(key),
            wrapping_key: kdf::aead_key(&prk, TENANT_WRAP_INFO),
        }
    }
}

/// `"local:"` + the first 16 hex digits of the SHA-256 of the key.
fn local_key_id(key: &MasterKeyBytes) -> String {
    let hash = digest::digest(&digest::SHA256, key.as_slice());
    let hex: String = hash
        .as_ref()
        .iter()
        .take(KEY_ID_DIGEST_BYTES)
        .map(|byte| format!("{byte:02x}"))
        .collect();
    format!("{KEY_ID_PREFIX}{hex}")
}

impl fmt::Debug for LocalKeyProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalKeyProvider")
            .field("path", &self.path)
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl KeyProvider for LocalKeyProvider {
    fn key_id(&self) -> String {
        self.key_id.clone()
    }

    fn kind(&self) -> &'static str {
        "local"
    }

    async fn wrap(&self, key: &TenantKey, context: &WrapContext) -> Result<Vec<u8>, KeyError> {
        sealed_blob::seal(
            &self.wrapping_key,
            TENANT_WRAP_LABEL,
            &[&context.aad()],
            key.as_bytes(),
        )
    }

    async fn unwrap(&self, wrapped: &[u8], context: &WrapContext) -> Result<TenantKey, KeyError> {
        let aad = context.aad();
        let raw = sealed_blob::open_key(&self.wrapping_key, TENANT_WRAP_LABEL, &[&aad], wrapped)?;
        Ok(TenantKey::from_bytes(*raw))
    }
}
