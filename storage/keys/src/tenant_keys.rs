//! `TenantKeys`: the subkeys HKDF derives from one version of a tenant key, and what they seal.

use std::fmt;

use aws_lc_rs::aead::LessSafeKey;
use aws_lc_rs::hmac;
use coffer_format::{ContentId, DataKey};
use zeroize::{Zeroize, Zeroizing};

use crate::{KeyError, TenantKey, kdf, sealed_blob};

/// HKDF info of the key that encrypts file and folder names.
const NAME_KEY_INFO: &[u8] = b"coffer/v1/tenant/name-encryption";
/// HKDF info of the HMAC key of the blind index.
const BLIND_INDEX_KEY_INFO: &[u8] = b"coffer/v1/tenant/blind-index";
/// HKDF info of the key that wraps data keys.
const DEK_WRAP_KEY_INFO: &[u8] = b"coffer/v1/tenant/data-key-wrap";
/// HKDF info of the key that seals small metadata fields.
const FIELD_KEY_INFO: &[u8] = b"coffer/v1/tenant/field";

/// AEAD label of an encrypted name (followed by tenant id and node id, big-endian).
const NAME_LABEL: &[u8] = b"coffer/v1/name";
/// AEAD label of a wrapped data key (followed by the content id).
const DEK_LABEL: &[u8] = b"coffer/v1/wrapped-data-key";
/// AEAD label of a sealed field (followed by purpose length, purpose and context).
const FIELD_LABEL: &[u8] = b"coffer/v1/field";

/// The per-tenant subkeys of one tenant key version. No `Clone`; `Debug` shows no secrets.
pub struct TenantKeys {
    tenant_id: i64,
    key_version: u32,
    name_key: LessSafeKey,
    blind_index_key: hmac::Key,
    dek_wrap_key: LessSafeKey,
    field_key: LessSafeKey,
}

impl TenantKeys {
    /// Derives the subkeys by HKDF-SHA256 from `tenant_key`, with the tenant id (big-endian)
    /// as salt and one info string per subkey.
    pub fn derive(tenant_key: &TenantKey, tenant_id: i64, key_version: u32) -> Self {
        let prk = kdf::extract(&tenant_id.to_be_bytes(), tenant_key.as_bytes());
        Self {
            tenant_id,
            key_version,
            name_key: kdf::aead_key(&prk, NAME_KEY_INFO),
            blind_index_key: kdf::hmac_key(&prk, BLIND_INDEX_KEY_INFO),
            dek_wrap_key: kdf::aead_key(&prk, DEK_WRAP_KEY_INFO),
            field_key: kdf::aead_key(&prk, FIELD_KEY_INFO),
        }
    }

    /// The tenant id these keys were derived for.
    pub fn tenant_id(&self) -> i64 {
        self.tenant_id
    }

    /// The tenant key version these keys were derived from; stored with every blob they make.
    pub fn key_version(&self) -> u32 {
        self.key_version
    }

    /// Encrypts an (already NFC-normalised) file or folder name, bound to (tenant id, node id).
    /// Blob = version byte || nonce(12) || ciphertext || tag(16), with a fresh random nonce.
    pub fn encrypt_name(&self, node_id: i64, name: &str) -> Result<Vec<u8>, KeyError> {
        let (tenant, node) = (self.tenant_id.to_be_bytes(), node_id.to_be_bytes());
        sealed_blob::seal(
            &self.name_key,
            NAME_LABEL,
            &[&tenant, &node],
            name.as_bytes(),
        )
    }

    /// Decrypts a name made by [`TenantKeys::encrypt_name`] for the same tenant and node.
    pub fn decrypt_name(&self, node_id: i64, blob: &[u8]) -> Result<String, KeyError> {
        let (tenant, node) = (self.tenant_id.to_be_bytes(), node_id.to_be_bytes());
        let mut plaintext = sealed_blob::open(
            &self.name_key,
            NAME_LABEL,
            &[&tenant, &node],
            blob,
            KeyError::DecryptFailed,
        )?;
        String::from_utf8(std::mem::take(&mut *plaintext)).map_err(|err| {
            err.into_bytes().zeroize();
            KeyError::NotUtf8
        })
    }

    /// HMAC-SHA256(blind-index key, parent_id BE || name): lets the database find a child by
    /// name without holding the name. The caller normalises the name first (NFC).
    pub fn blind_index(&self, parent_id: i64, name: &str) -> [u8; 32] {
        let mut context = hmac::Context::with_key(&self.blind_index_key);
        context.update(&parent_id.to_be_bytes());
        context.update(name.as_bytes());
        let tag = context.sign();
        let mut index = [0u8; 32];
        for (out, byte) in index.iter_mut().zip(tag.as_ref()) {
            *out = *byte;
        }
        index
    }

    /// Wraps a data key, bound to the content id it encrypts.
    pub fn wrap_dek(&self, dek: &DataKey, content_id: &ContentId) -> Result<Vec<u8>, KeyError> {
        sealed_blob::seal(
            &self.dek_wrap_key,
            DEK_LABEL,
            &[&content_id.0],
            dek.as_bytes(),
        )
    }

    /// Unwraps a data key wrapped for the same content id; [`KeyError::UnwrapFailed`] otherwise.
    pub fn unwrap_dek(&self, wrapped: &[u8], content_id: &ContentId) -> Result<DataKey, KeyError> {
        let raw = sealed_blob::open_key(&self.dek_wrap_key, DEK_LABEL, &[&content_id.0], wrapped)?;
        Ok(DataKey::from_bytes(*raw))
    }

    /// Encrypts a small metadata field (e.g. the SHA-256 of a file's content), bound to a
    /// purpose label and a context (e.g. the node id).
    pub fn seal_field(
        &self,
        purpose: &str,
        context: &[u8],
        plaintext: &[u8],
    ) -> Result<Vec<u8>, KeyError> {
        let purpose_len = purpose_length(purpose);
        let binding: [&[u8]; 3] = [&purpose_len, purpose.as_bytes(), context];
        sealed_blob::seal(&self.field_key, FIELD_LABEL, &binding, plaintext)
    }

    /// Decrypts a field sealed with the same purpose and context.
    pub fn open_field(
        &self,
        purpose: &str,
        context: &[u8],
        blob: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, KeyError> {
        let purpose_len = purpose_length(purpose);
        let binding: [&[u8]; 3] = [&purpose_len, purpose.as_bytes(), context];
        sealed_blob::open(
            &self.field_key,
            FIELD_LABEL,
            &binding,
            blob,
            KeyError::DecryptFailed,
        )
    }
}

/// The purpose is length-prefixed so that no (purpose, context) pair can pose as another.
fn purpose_length(purpose: &str) -> [u8; 8] {
    (purpose.len() as u64).to_be_bytes()
}

impl fmt::Debug for TenantKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TenantKeys")
            .field("tenant_id", &self.tenant_id)
            .field("key_version", &self.key_version)
            .finish_non_exhaustive()
    }
}
