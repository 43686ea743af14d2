//! The `KeyProvider` seam (a master key that wraps tenant keys) and the per-region key ring.

use std::sync::Arc;

use crate::{KeyError, TenantKey};

/// Holds one master key and wraps and unwraps tenant keys with it; the master key itself
/// never leaves the provider (a local file, later a KMS key).
#[async_trait::async_trait]
pub trait KeyProvider: Send + Sync + std::fmt::Debug {
    /// Stable id of the master key (e.g. `"local:"` + the first 16 hex digits of the
    /// SHA-256 of the key), stored next to each wrapped blob to say which key unwraps it.
    fn key_id(&self) -> String;

    /// Wraps a tenant key; `context` (see [`tenant_context`]) is bound as AEAD associated data.
    async fn wrap(&self, key: &TenantKey, context: &[u8]) -> Result<Vec<u8>, KeyError>;

    /// Unwraps a blob made by [`KeyProvider::wrap`] with the same master key and context;
    /// [`KeyError::UnwrapFailed`] otherwise.
    async fn unwrap(&self, wrapped: &[u8], context: &[u8]) -> Result<TenantKey, KeyError>;
}

/// The context every caller binds when wrapping a tenant key: the tenant id, big-endian.
pub fn tenant_context(tenant_id: i64) -> [u8; 8] {
    tenant_id.to_be_bytes()
}

/// One wrapped copy of a tenant key, as stored in the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrappedTenantKey {
    /// [`KeyProvider::key_id`] of the master key that made `blob`.
    pub key_id: String,
    /// The wrapped key.
    pub blob: Vec<u8>,
}

/// Both regions' master key providers. The tenant key is wrapped once by each, so the
/// replica region can read replicated ciphertext with its own master key alone.
#[derive(Debug, Clone)]
pub struct KeyRing {
    /// The provider of the region that serves traffic.
    pub primary: Arc<dyn KeyProvider>,
    /// The provider of the replica region, if one is configured.
    pub replica: Option<Arc<dyn KeyProvider>>,
}

impl KeyRing {
    /// A ring of a primary provider and an optional replica provider.
    pub fn new(primary: Arc<dyn KeyProvider>, replica: Option<Arc<dyn KeyProvider>>) -> Self {
        Self { primary, replica }
    }

    /// The providers, primary first.
    pub fn providers(&self) -> impl Iterator<Item = &Arc<dyn KeyProvider>> {
        std::iter::once(&self.primary).chain(self.replica.iter())
    }

    /// Wraps `key` once per region, primary first, each copy labelled with its key id.
    pub async fn wrap_for_each_region(
        &self,
        key: &TenantKey,
        context: &[u8],
    ) -> Result<Vec<WrappedTenantKey>, KeyError> {
        let mut copies = Vec::with_capacity(2);
        for provider in self.providers() {
            copies.push(WrappedTenantKey {
                key_id: provider.key_id(),
                blob: provider.wrap(key, context).await?,
            });
        }
        Ok(copies)
    }

    /// Unwraps the first copy made by a master key in this ring (primary preferred).
    ///
    /// [`KeyError::NoMatchingMasterKey`] if no copy's key id belongs to this ring; otherwise
    /// the last unwrap error if every matching copy failed.
    pub async fn unwrap_any(
        &self,
        copies: &[WrappedTenantKey],
        context: &[u8],
    ) -> Result<TenantKey, KeyError> {
        let mut last_error = KeyError::NoMatchingMasterKey;
        for provider in self.providers() {
            let key_id = provider.key_id();
            for copy in copies.iter().filter(|copy| copy.key_id == key_id) {
                match provider.unwrap(&copy.blob, context).await {
                    Ok(key) => return Ok(key),
                    Err(err) => last_error = err,
                }
            }
        }
        Err(last_error)
    }
}
