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

    /// Wraps a tenant key; `context` (see [`tenant_key_context`]) is bound as AEAD associated data.
    async fn wrap(&self, key: &TenantKey, context: &[u8]) -> Result<Vec<u8>, KeyError>;

    /// Unwraps a blob made by [`KeyProvider::wrap`] with the same master key and context;
    /// [`KeyError::UnwrapFailed`] otherwise.
    async fn unwrap(&self, wrapped: &[u8], context: &[u8]) -> Result<TenantKey, KeyError>;
}

/// The region that serves traffic; its master key is tried first.
pub const PRIMARY_REGION: &str = "primary";
/// The replica region (a second bucket, possibly another account and KMS key).
pub const REPLICA_REGION: &str = "replica";

/// The context bound (as AEAD associated data, or KMS encryption context) to every wrapped
/// copy of version `version` of tenant `tenant_id`'s key. Existing data depends on these bytes:
/// `storage/keys/tests/key_ring.rs` pins them with a committed test vector.
#[must_use]
pub fn tenant_key_context(tenant_id: i64, version: u32) -> Vec<u8> {
    format!("coffer/tenant-key/{tenant_id}/v{version}").into_bytes()
}

/// One wrapped copy of a tenant key, as stored in the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrappedTenantKey {
    /// The region whose master key made `blob` ([`PRIMARY_REGION`] or [`REPLICA_REGION`]).
    pub region: String,
    /// [`KeyProvider::key_id`] of the master key that made `blob`.
    pub key_id: String,
    /// The wrapped key.
    pub blob: Vec<u8>,
}

/// A tenant key unwrapped by [`KeyRing::unwrap_any`], and the regions whose copy failed first.
pub struct Unwrapped {
    /// The tenant key.
    pub key: TenantKey,
    /// The region whose copy opened.
    pub region: &'static str,
    /// Regions tried before it whose copy did not open, with why.
    pub failed: Vec<(&'static str, KeyError)>,
}

impl std::fmt::Debug for Unwrapped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Unwrapped")
            .field("region", &self.region)
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

/// Both regions' master key providers. The tenant key is wrapped once by each, so the
/// replica region can read replicated ciphertext with its own master key alone. The Vault
/// wraps and unwraps every tenant key through this ring and nothing else.
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

    /// The providers with their region names, primary first.
    pub fn regions(&self) -> impl Iterator<Item = (&'static str, &Arc<dyn KeyProvider>)> {
        std::iter::once((PRIMARY_REGION, &self.primary))
            .chain(self.replica.iter().map(|r| (REPLICA_REGION, r)))
    }

    /// Wraps version `version` of tenant `tenant_id`'s key once per region, primary first,
    /// each copy labelled with its region and key id.
    pub async fn wrap_for_each_region(
        &self,
        key: &TenantKey,
        tenant_id: i64,
        version: u32,
    ) -> Result<Vec<WrappedTenantKey>, KeyError> {
        let context = tenant_key_context(tenant_id, version);
        let mut copies = Vec::with_capacity(2);
        for (region, provider) in self.regions() {
            copies.push(WrappedTenantKey {
                region: region.to_owned(),
                key_id: provider.key_id(),
                blob: provider.wrap(key, &context).await?,
            });
        }
        Ok(copies)
    }

    /// Unwraps version `version` of tenant `tenant_id`'s key from the first region's copy
    /// that opens, primary first.
    ///
    /// [`KeyError::NoMatchingMasterKey`] if no copy belongs to a region of this ring; otherwise
    /// the last unwrap error if every region's copy failed.
    pub async fn unwrap_any(
        &self,
        copies: &[WrappedTenantKey],
        tenant_id: i64,
        version: u32,
    ) -> Result<Unwrapped, KeyError> {
        let context = tenant_key_context(tenant_id, version);
        let mut failed = Vec::new();
        for (region, provider) in self.regions() {
            for copy in copies.iter().filter(|copy| copy.region == region) {
                match provider.unwrap(&copy.blob, &context).await {
                    Ok(key) => {
                        return Ok(Unwrapped {
                            key,
                            region,
                            failed,
                        });
                    }
                    Err(err) => failed.push((region, err)),
                }
            }
        }
        Err(failed
            .pop()
            .map_or(KeyError::NoMatchingMasterKey, |(_, err)| err))
    }
}
