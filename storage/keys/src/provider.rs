//! The `KeyProvider` seam (a master key that wraps tenant keys) and the per-region key ring.

use std::sync::Arc;

use crate::{KeyError, KeyMetrics, TenantKey};

/// Holds one master key and wraps and unwraps tenant keys with it; the master key itself
/// never leaves the provider (a local file, or a KMS key).
#[async_trait::async_trait]
pub trait KeyProvider: Send + Sync + std::fmt::Debug {
    /// Stable id of the master key, stored next to each wrapped blob to say which key
    /// unwraps it: `"local:"` + the first 16 hex digits of the SHA-256 of a local key, or
    /// [`KMS_KEY_ID_PREFIX`] + the KMS key id, ARN or alias as configured.
    fn key_id(&self) -> String;

    /// What kind of provider this is (`"local"`, `"aws-kms"`), for status output.
    fn kind(&self) -> &'static str;

    /// Wraps a tenant key, bound to `context` (AEAD associated data for a local key, the
    /// encryption context for KMS).
    async fn wrap(&self, key: &TenantKey, context: &WrapContext) -> Result<Vec<u8>, KeyError>;

    /// Unwraps a blob made by [`KeyProvider::wrap`] with the same master key and context;
    /// [`KeyError::UnwrapFailed`] if it does not authenticate, [`KeyError::Unavailable`] if
    /// the key service cannot answer or refuses (disabled, revoked or deleted key).
    async fn unwrap(&self, wrapped: &[u8], context: &WrapContext) -> Result<TenantKey, KeyError>;
}

/// Reaches any key of one KMS (one region's endpoint and credentials): the keys customers
/// bring for their tenants, and the keys a master-key rotation moves to.
pub trait KmsConnector: Send + Sync + std::fmt::Debug {
    /// A provider for the KMS key `key_id` (key id, ARN or alias; without the
    /// [`KMS_KEY_ID_PREFIX`]). Does not call the KMS: an unknown key fails at first use.
    fn key(&self, key_id: &str) -> Arc<dyn KeyProvider>;
}

/// Prefix of the stored id of a KMS master key: `aws-kms:` + key id, ARN or alias.
pub const KMS_KEY_ID_PREFIX: &str = "aws-kms:";

/// The region that serves traffic; its master key is tried first.
pub const PRIMARY_REGION: &str = "primary";
/// The replica region (a second bucket, possibly another account and KMS key).
pub const REPLICA_REGION: &str = "replica";

/// The context bound (as AEAD associated data) to every wrapped copy of version `version` of
/// tenant `tenant_id`'s key by a local master key. Existing data depends on these bytes:
/// `storage/keys/tests/key_ring.rs` pins them with a committed test vector.
#[must_use]
pub fn tenant_key_context(tenant_id: i64, version: u32) -> Vec<u8> {
    format!("coffer/tenant-key/{tenant_id}/v{version}").into_bytes()
}

/// What one wrapped copy of a tenant key is bound to: the tenant, the key version and the
/// region whose master key made it. A copy cannot be replayed for another tenant or version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WrapContext {
    /// The tenant.
    pub tenant_id: i64,
    /// The tenant key version.
    pub version: u32,
    /// The region ([`PRIMARY_REGION`] or [`REPLICA_REGION`]).
    pub region: &'static str,
}

impl WrapContext {
    /// The associated data a local master key binds: [`tenant_key_context`] (a local key
    /// belongs to one region, so the region is implied by the key).
    #[must_use]
    pub fn aad(&self) -> Vec<u8> {
        tenant_key_context(self.tenant_id, self.version)
    }

    /// The KMS encryption context: tenant id, key version and region, as KMS key/value pairs.
    /// KMS refuses to decrypt under any other context, and logs it in CloudTrail.
    #[must_use]
    pub fn kms_encryption_context(&self) -> [(&'static str, String); 3] {
        [
            ("coffer:tenant", self.tenant_id.to_string()),
            ("coffer:key-version", self.version.to_string()),
            ("coffer:region", self.region.to_owned()),
        ]
    }
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

/// The master keys of one region: the current one (wraps new copies), older ones still
/// accepted for unwrapping while a rotation moves copies off them, and the KMS this region
/// reaches for keys named only in the database (customer keys, rotation targets).
#[derive(Debug, Clone)]
pub struct RegionKeys {
    /// Wraps every new copy of this region (unless the tenant brings its own key).
    pub current: Arc<dyn KeyProvider>,
    /// Earlier master keys, used only to unwrap copies a rotation has not moved yet.
    pub previous: Vec<Arc<dyn KeyProvider>>,
    /// This region's KMS, if one is configured.
    pub kms: Option<Arc<dyn KmsConnector>>,
}

impl RegionKeys {
    /// A region with one master key and no KMS connection.
    pub fn single(current: Arc<dyn KeyProvider>) -> Self {
        Self {
            current,
            previous: Vec::new(),
            kms: None,
        }
    }

    /// The provider that unwraps copies made by master key `key_id`: the current or a previous
    /// key with that id, a KMS key through this region's KMS, or (if none applies) the current
    /// key, which then fails to unwrap.
    pub fn provider_for(&self, key_id: &str) -> Arc<dyn KeyProvider> {
        if let Some(p) = std::iter::once(&self.current)
            .chain(&self.previous)
            .find(|p| p.key_id() == key_id)
        {
            return p.clone();
        }
        match (key_id.strip_prefix(KMS_KEY_ID_PREFIX), &self.kms) {
            (Some(kms_key), Some(kms)) => kms.key(kms_key),
            _ => self.current.clone(),
        }
    }

    /// The provider for a master key named by the operator or a tenant: a KMS key id with or
    /// without [`KMS_KEY_ID_PREFIX`], or the id of the current or a previous key.
    pub fn provider_named(&self, key: &str) -> Result<Arc<dyn KeyProvider>, KeyError> {
        if let Some(p) = std::iter::once(&self.current)
            .chain(&self.previous)
            .find(|p| p.key_id() == key)
        {
            return Ok(p.clone());
        }
        if key.starts_with("local:") {
            return Err(KeyError::UnknownMasterKey(key.to_owned()));
        }
        let kms = self.kms.as_ref().ok_or(KeyError::NoKms)?;
        Ok(kms.key(key.strip_prefix(KMS_KEY_ID_PREFIX).unwrap_or(key)))
    }
}

/// Both regions' master keys. The tenant key is wrapped once per region, so the replica
/// region can read replicated ciphertext with its own master key alone. The Vault wraps and
/// unwraps every tenant key through this ring and nothing else.
#[derive(Debug, Clone)]
pub struct KeyRing {
    /// The keys of the region that serves traffic.
    pub primary: RegionKeys,
    /// The keys of the replica region, if one is configured.
    pub replica: Option<RegionKeys>,
    /// Counters of key-service calls, shared with the KMS connectors.
    pub metrics: Arc<KeyMetrics>,
}

/// Master keys a tenant brings itself, per region (customer-managed KMS keys). A region
/// without one uses the deployment's master key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TenantMasterKeys {
    /// `(region, KMS key id)` pairs.
    pub keys: Vec<(String, String)>,
}

impl TenantMasterKeys {
    /// The tenant's own key of `region`, if it has one.
    pub fn for_region(&self, region: &str) -> Option<&str> {
        self.keys
            .iter()
            .find(|(r, _)| r == region)
            .map(|(_, k)| k.as_str())
    }
}

impl KeyRing {
    /// A ring of a primary and an optional replica provider, each a single local-style key.
    pub fn new(primary: Arc<dyn KeyProvider>, replica: Option<Arc<dyn KeyProvider>>) -> Self {
        Self::of_regions(RegionKeys::single(primary), replica.map(RegionKeys::single))
    }

    /// A ring of full region key sets.
    pub fn of_regions(primary: RegionKeys, replica: Option<RegionKeys>) -> Self {
        Self {
            primary,
            replica,
            metrics: Arc::new(KeyMetrics::default()),
        }
    }

    /// The regions with their names, primary first.
    pub fn regions(&self) -> impl Iterator<Item = (&'static str, &RegionKeys)> {
        std::iter::once((PRIMARY_REGION, &self.primary))
            .chain(self.replica.iter().map(|r| (REPLICA_REGION, r)))
    }

    /// The keys of region `name`.
    pub fn region(&self, name: &str) -> Option<(&'static str, &RegionKeys)> {
        self.regions().find(|(n, _)| *n == name)
    }

    /// The provider that wraps new copies of a tenant's key in `region`: the tenant's own
    /// KMS key there if it has one, else the region's current master key.
    pub fn wrapping_provider(
        &self,
        region: &RegionKeys,
        region_name: &str,
        own: &TenantMasterKeys,
    ) -> Result<Arc<dyn KeyProvider>, KeyError> {
        match own.for_region(region_name) {
            Some(key) => region.provider_named(key),
            None => Ok(region.current.clone()),
        }
    }

    /// Wraps version `version` of tenant `tenant_id`'s key once per region, primary first,
    /// each copy labelled with its region and key id; under the tenant's own keys where it
    /// has them. A tenant key named for a region this ring does not have is refused.
    pub async fn wrap_for_each_region(
        &self,
        key: &TenantKey,
        tenant_id: i64,
        version: u32,
        own: &TenantMasterKeys,
    ) -> Result<Vec<WrappedTenantKey>, KeyError> {
        if let Some((region, _)) = own.keys.iter().find(|(r, _)| self.region(r).is_none()) {
            return Err(KeyError::NoSuchRegion(region.clone()));
        }
        let mut copies = Vec::with_capacity(2);
        for (region, keys) in self.regions() {
            let provider = self.wrapping_provider(keys, region, own)?;
            let context = WrapContext {
                tenant_id,
                version,
                region,
            };
            copies.push(WrappedTenantKey {
                region: region.to_owned(),
                key_id: provider.key_id(),
                blob: provider.wrap(key, &context).await?,
            });
        }
        Ok(copies)
    }

    /// Unwraps version `version` of tenant `tenant_id`'s key from the first region's copy
    /// that opens, primary first; each copy is opened by the master key whose id it carries.
    ///
    /// [`KeyError::NoMatchingMasterKey`] if no copy belongs to a region of this ring; otherwise
    /// the last unwrap error if every region's copy failed.
    pub async fn unwrap_any(
        &self,
        copies: &[WrappedTenantKey],
        tenant_id: i64,
        version: u32,
    ) -> Result<Unwrapped, KeyError> {
        let mut failed = Vec::new();
        for (region, keys) in self.regions() {
            let context = WrapContext {
                tenant_id,
                version,
                region,
            };
            for copy in copies.iter().filter(|copy| copy.region == region) {
                let provider = keys.provider_for(&copy.key_id);
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

    /// Rewraps one copy under `to` (a master-key rotation): opens it with the key it names,
    /// wraps it again under `to`. The result has the same region and `to`'s key id.
    pub async fn rewrap(
        &self,
        copy: &WrappedTenantKey,
        tenant_id: i64,
        version: u32,
        to: &Arc<dyn KeyProvider>,
    ) -> Result<WrappedTenantKey, KeyError> {
        let (region, keys) = self
            .region(&copy.region)
            .ok_or_else(|| KeyError::NoSuchRegion(copy.region.clone()))?;
        let context = WrapContext {
            tenant_id,
            version,
            region,
        };
        let key = keys
            .provider_for(&copy.key_id)
            .unwrap(&copy.blob, &context)
            .await?;
        Ok(WrappedTenantKey {
            region: region.to_owned(),
            key_id: to.key_id(),
            blob: to.wrap(&key, &context).await?,
        })
    }
}
