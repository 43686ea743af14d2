//! Tenant keys inside the Vault: the bounded cache of unwrapped keys, tenants' own
//! (customer-managed) master keys, master-key rotation, key status and crypto-shredding.
//!
//! An unwrapped tenant key is held in memory at most `VaultOptions::key_cache` after the
//! key service last gave it out: after that the next use asks the key service again, so a
//! customer who disables or deletes its KMS key cuts Coffer off within that bound.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use coffer_keys::{KeyError, KeyMetricsSnapshot, TenantKey, TenantKeys, TenantMasterKeys};
use coffer_meta::{Tenant, TenantMasterKey, WrappedTenantKey};
use tracing::{info, warn};

use crate::clock::now_ms;
use crate::error::{VfsError, VfsResult};
use crate::vault::Vault;

/// After a failed unwrap, later uses of that key version get the same answer for this long
/// without asking the key service again (no stampede on a KMS that is down, one log line).
const FAILURE_HOLD: Duration = Duration::from_secs(5);

/// How long a process goes on using the tenant key versions it read (current, and the one a
/// rotation moves from) before reading them again. A rotation started by another process
/// (the `coffer keys rotate-tenant` command, another node) is seen within this bound: new
/// writes use the new version from then on, and lookups try both. A rotation moves its first
/// row only after [`crate::rotation::FIRST_MOVE_AFTER`] and destroys the old version only
/// after [`crate::rotation::OLD_VERSION_GRACE`], both beyond it.
pub(crate) const VERSIONS_TTL: Duration = Duration::from_secs(1);

/// The tenant key versions in use: `current` for new writes; during a rotation, `previous`
/// is the version rows not yet rewritten are still under.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct KeyVersions {
    pub(crate) current: u32,
    pub(crate) previous: Option<u32>,
}

/// [`KeyVersions`] per tenant, each as read at an instant.
#[derive(Debug, Default)]
pub(crate) struct VersionCache {
    entries: Mutex<HashMap<i64, (KeyVersions, Instant)>>,
}

impl VersionCache {
    fn with<T>(&self, f: impl FnOnce(&mut HashMap<i64, (KeyVersions, Instant)>) -> T) -> T {
        let mut guard = match self.entries.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        f(&mut guard)
    }

    fn get(&self, tenant_id: i64) -> Option<KeyVersions> {
        self.with(|m| match m.get(&tenant_id) {
            Some((v, at)) if at.elapsed() < VERSIONS_TTL => Some(*v),
            _ => None,
        })
    }

    pub(crate) fn set(&self, tenant_id: i64, versions: KeyVersions) {
        self.with(|m| {
            if m.len() > 100_000 {
                m.retain(|_, (_, at)| at.elapsed() < VERSIONS_TTL);
            }
            m.insert(tenant_id, (versions, Instant::now()));
        });
    }

    pub(crate) fn forget(&self, tenant_id: i64) {
        self.with(|m| m.remove(&tenant_id));
    }
}

enum Entry {
    Ready {
        keys: Arc<TenantKeys>,
        until: Instant,
    },
    Failed {
        error: KeyError,
        until: Instant,
    },
}

/// Unwrapped tenant keys by (tenant id, key version), each until its deadline.
pub(crate) struct KeyCache {
    ttl: Duration,
    entries: Mutex<HashMap<(i64, u32), Entry>>,
}

impl std::fmt::Debug for KeyCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyCache")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

/// What a cache lookup found.
enum Cached {
    Keys(Arc<TenantKeys>),
    Failed(KeyError),
    Missing,
}

impl KeyCache {
    pub(crate) fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut HashMap<(i64, u32), Entry>) -> T) -> T {
        let mut guard = match self.entries.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        f(&mut guard)
    }

    fn get(&self, tenant_id: i64, version: u32) -> Cached {
        let now = Instant::now();
        self.with(|m| match m.get(&(tenant_id, version)) {
            Some(Entry::Ready { keys, until }) if *until > now => Cached::Keys(keys.clone()),
            Some(Entry::Failed { error, until }) if *until > now => Cached::Failed(error.clone()),
            Some(_) => {
                // Expired: forget the key now, not only when it is next replaced.
                m.remove(&(tenant_id, version));
                Cached::Missing
            }
            None => Cached::Missing,
        })
    }

    pub(crate) fn insert(&self, tenant_id: i64, version: u32, keys: Arc<TenantKeys>) {
        let until = Instant::now() + self.ttl;
        self.with(|m| m.insert((tenant_id, version), Entry::Ready { keys, until }));
    }

    fn fail(&self, tenant_id: i64, version: u32, error: KeyError) {
        let until = Instant::now() + FAILURE_HOLD.min(self.ttl);
        self.with(|m| m.insert((tenant_id, version), Entry::Failed { error, until }));
    }

    /// Forgets every key of a tenant (its keys changed or were destroyed).
    pub(crate) fn forget_tenant(&self, tenant_id: i64) {
        self.with(|m| m.retain(|(t, _), _| *t != tenant_id));
    }

    /// Forgets one version of a tenant's key (destroyed by a rotation).
    pub(crate) fn forget_version(&self, tenant_id: i64, version: u32) {
        self.with(|m| m.remove(&(tenant_id, version)));
    }
}

/// The copies of version `version` among a tenant's stored key rows, for the key ring.
fn copies_of(rows: &[WrappedTenantKey], version: u32) -> Vec<coffer_keys::WrappedTenantKey> {
    rows.iter()
        .filter(|row| row.version == version)
        .map(|row| coffer_keys::WrappedTenantKey {
            region: row.region.clone(),
            key_id: row.master_key_id.clone(),
            blob: row.wrapped.clone(),
        })
        .collect()
}

/// The key ring's form of a tenant's own master keys.
pub(crate) fn own_keys(rows: &[TenantMasterKey]) -> TenantMasterKeys {
    TenantMasterKeys {
        keys: rows
            .iter()
            .map(|k| (k.region.clone(), k.key_id.clone()))
            .collect(),
    }
}

/// Rows for copies of version `version` of tenant `tenant_id`'s key made at `created_ms`.
pub(crate) fn key_rows(
    copies: Vec<coffer_keys::WrappedTenantKey>,
    tenant_id: i64,
    version: u32,
    created_ms: i64,
) -> Vec<WrappedTenantKey> {
    copies
        .into_iter()
        .map(|copy| WrappedTenantKey {
            tenant_id,
            version,
            region: copy.region,
            master_key_id: copy.key_id,
            wrapped: copy.blob,
            created_ms,
        })
        .collect()
}

/// What `coffer keys rotate-master` did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MasterRotation {
    /// Copies rewrapped under the target key now.
    pub rewrapped: u64,
    /// Copies already under the target key (a resumed rotation finds these).
    pub already: u64,
    /// Copies under a tenant's own key in this region (the customer rotates those).
    pub tenant_owned: u64,
    /// Copies that could not be rewrapped, with the tenant and why.
    pub failed: Vec<(String, String)>,
    /// The key the region's copies are now under.
    pub target_key_id: String,
}

/// One region's master keys, for `coffer keys status`.
#[derive(Debug, Clone)]
pub struct RegionStatus {
    /// `primary` or `replica`.
    pub region: &'static str,
    /// Provider kind of the current key (`local`, `aws-kms`).
    pub kind: &'static str,
    /// The current master key's id.
    pub key_id: String,
    /// Previous master keys still accepted for unwrapping.
    pub previous: Vec<String>,
    /// Whether the region reaches a KMS (for tenants' own keys).
    pub kms: bool,
    /// Copies of this region not under the current key nor a tenant's own key: what a
    /// `rotate-master` still has to move.
    pub copies_under_older_keys: u64,
}

/// One tenant key version, for `coffer keys status`.
#[derive(Debug, Clone)]
pub struct VersionStatus {
    /// The version.
    pub version: u32,
    /// When it was made (ms since the epoch; the tenant's creation for versions from before
    /// ages were recorded).
    pub created_ms: i64,
    /// `(region, master key id)` of each wrapped copy.
    pub copies: Vec<(String, String)>,
}

/// One tenant's keys, for `coffer keys status`.
#[derive(Debug, Clone)]
pub struct TenantKeyStatus {
    /// The tenant's name.
    pub tenant: String,
    /// The version new data is written under.
    pub current_version: u32,
    /// Every stored version, oldest first.
    pub versions: Vec<VersionStatus>,
    /// The tenant's own master keys, `(region, KMS key)`.
    pub own_keys: Vec<(String, String)>,
    /// `None` if the current version unwraps now; else the key service's error.
    pub error: Option<String>,
    /// Whether the current version is older than the rotation policy allows.
    pub overdue: bool,
    /// The rotation of its key under way, if any.
    pub rotation: Option<crate::RotationProgress>,
}

/// Everything `coffer keys status` shows.
#[derive(Debug, Clone)]
pub struct KeyStatus {
    /// Per region.
    pub regions: Vec<RegionStatus>,
    /// Per tenant.
    pub tenants: Vec<TenantKeyStatus>,
    /// The counters of this process (key-service calls, cache, failed decryptions).
    pub metrics: KeyMetricsSnapshot,
    /// How long an unwrapped tenant key stays in memory, in seconds.
    pub cache_secs: u64,
}

impl Vault {
    /// The tenant's key versions in use, read again after [`VERSIONS_TTL`].
    pub(crate) async fn key_versions(&self, tenant_id: i64) -> VfsResult<KeyVersions> {
        if let Some(v) = self.inner.key_versions.get(tenant_id) {
            return Ok(v);
        }
        let meta = &self.inner.b.meta;
        let current = meta.tenant(tenant_id).await?.key_version;
        let previous = meta
            .key_rotation(tenant_id)
            .await?
            .map(|r| r.from_version)
            .filter(|v| *v != current);
        let versions = KeyVersions { current, previous };
        self.inner.key_versions.set(tenant_id, versions);
        Ok(versions)
    }

    /// The keys new writes of a tenant use, and during a rotation the keys of the version it
    /// moves from (to find names not yet rewritten).
    pub(crate) async fn lookup_keys(
        &self,
        tenant_id: i64,
    ) -> VfsResult<(Arc<TenantKeys>, Option<Arc<TenantKeys>>)> {
        let versions = self.key_versions(tenant_id).await?;
        let current = self.tenant_keys(tenant_id, versions.current).await?;
        let previous = match versions.previous {
            Some(v) => match self.tenant_keys(tenant_id, v).await {
                Ok(keys) => Some(keys),
                Err(e) => {
                    // The rotation may have finished since the versions were read: its old
                    // version is destroyed, and no row is under it any more.
                    self.inner.key_versions.forget(tenant_id);
                    if self.key_versions(tenant_id).await?.previous.is_some() {
                        return Err(e);
                    }
                    None
                }
            },
            None => None,
        };
        Ok((current, previous))
    }

    /// The derived keys of a tenant's key version: from the cache while it holds them (at
    /// most the configured bound), else unwrapped now with the master key each stored copy
    /// names, primary region first.
    pub(crate) async fn tenant_keys(
        &self,
        tenant_id: i64,
        version: u32,
    ) -> VfsResult<Arc<TenantKeys>> {
        let metrics = &self.inner.b.keys.metrics;
        match self.inner.key_cache.get(tenant_id, version) {
            Cached::Keys(keys) => {
                metrics.cache_lookup(true);
                return Ok(keys);
            }
            Cached::Failed(error) => return Err(key_unavailable(error)),
            Cached::Missing => metrics.cache_lookup(false),
        }
        let b = &self.inner.b;
        let rows = b.meta.tenant_keys(tenant_id).await?;
        let unwrapped = match b
            .keys
            .unwrap_any(&copies_of(&rows, version), tenant_id, version)
            .await
        {
            Ok(u) => u,
            Err(error) => {
                if error == KeyError::UnwrapFailed {
                    metrics.failed_decryption();
                }
                let tenant = self.tenant_name(tenant_id).await;
                warn!(
                    tenant,
                    tenant_id,
                    version,
                    error = %error,
                    "tenant key unavailable: this tenant's files and names cannot be read \
                     until its master key answers again"
                );
                self.inner.key_cache.fail(tenant_id, version, error.clone());
                return Err(key_unavailable(error));
            }
        };
        for (region, e) in &unwrapped.failed {
            warn!(
                tenant_id,
                version,
                region,
                error = %e,
                used = unwrapped.region,
                "tenant key could not be unwrapped with this region's master key"
            );
        }
        let keys = Arc::new(TenantKeys::derive(&unwrapped.key, tenant_id, version));
        self.inner
            .key_cache
            .insert(tenant_id, version, keys.clone());
        Ok(keys)
    }

    async fn tenant_name(&self, tenant_id: i64) -> String {
        match self.inner.b.meta.tenant(tenant_id).await {
            Ok(t) => t.name,
            Err(_) => format!("#{tenant_id}"),
        }
    }

    /// The tenant key of `version`, unwrapped now (never from the cache).
    async fn unwrap_version(&self, tenant_id: i64, version: u32) -> VfsResult<TenantKey> {
        let rows = self.inner.b.meta.tenant_keys(tenant_id).await?;
        let got = self
            .inner
            .b
            .keys
            .unwrap_any(&copies_of(&rows, version), tenant_id, version)
            .await
            .map_err(key_unavailable)?;
        Ok(got.key)
    }

    /// Wraps a new tenant key (version 1) under every region's master key, or the tenant's
    /// own key of that region.
    pub(crate) async fn wrap_new_tenant_key(
        &self,
        key: &TenantKey,
        tenant_id: i64,
        own: &[TenantMasterKey],
    ) -> VfsResult<Vec<WrappedTenantKey>> {
        let copies = self
            .inner
            .b
            .keys
            .wrap_for_each_region(key, tenant_id, 1, &own_keys(own))
            .await
            .map_err(key_unavailable)?;
        Ok(key_rows(copies, tenant_id, 1, now_ms()))
    }

    /// Gives a tenant its own master keys (`own` empty: back to the deployment's keys): every
    /// stored version of its key is unwrapped and wrapped again under the new keys, and the
    /// keys and copies are replaced in one transaction. Contents and names are not touched.
    pub(crate) async fn set_own_master_keys(
        &self,
        tenant: &Tenant,
        own: &[(String, String)],
    ) -> VfsResult<()> {
        let rows: Vec<TenantMasterKey> = own
            .iter()
            .map(|(region, key_id)| TenantMasterKey {
                tenant_id: tenant.id,
                region: region.clone(),
                key_id: key_id.clone(),
            })
            .collect();
        let stored = self.inner.b.meta.tenant_keys(tenant.id).await?;
        let mut versions: Vec<(u32, i64)> =
            stored.iter().map(|r| (r.version, r.created_ms)).collect();
        versions.dedup_by_key(|(v, _)| *v);
        let mut copies = Vec::new();
        for (version, created_ms) in versions {
            let key = self.unwrap_version(tenant.id, version).await?;
            let wrapped = self
                .inner
                .b
                .keys
                .wrap_for_each_region(&key, tenant.id, version, &own_keys(&rows))
                .await
                .map_err(key_unavailable)?;
            copies.extend(key_rows(wrapped, tenant.id, version, created_ms));
        }
        self.inner
            .b
            .meta
            .set_tenant_master_keys(tenant.id, &rows, &copies)
            .await?;
        self.inner.key_cache.forget_tenant(tenant.id);
        Ok(())
    }

    /// Rewraps every copy of `region` that is under neither `to` (default: the region's
    /// current master key) nor a tenant's own key. Idempotent, so an interrupted rotation is
    /// resumed by running it again; copies keep opening throughout (each names its key).
    pub(crate) async fn rotate_master(
        &self,
        region: &str,
        to: Option<&str>,
    ) -> VfsResult<MasterRotation> {
        let ring = &self.inner.b.keys;
        let (region, keys) = ring
            .region(region)
            .ok_or_else(|| key_unavailable(KeyError::NoSuchRegion(region.to_owned())))?;
        let target = match to {
            Some(name) => keys.provider_named(name).map_err(key_unavailable)?,
            None => keys.current.clone(),
        };
        let mut report = MasterRotation {
            target_key_id: target.key_id(),
            ..MasterRotation::default()
        };
        let meta = &self.inner.b.meta;
        for tenant in meta.list_tenants().await? {
            let own = meta.tenant_master_keys(tenant.id).await?;
            for row in meta.tenant_keys(tenant.id).await? {
                if row.region != region {
                    continue;
                }
                if own.iter().any(|k| k.region == region) {
                    report.tenant_owned += 1;
                    continue;
                }
                if row.master_key_id == report.target_key_id {
                    report.already += 1;
                    continue;
                }
                let copy = coffer_keys::WrappedTenantKey {
                    region: row.region.clone(),
                    key_id: row.master_key_id.clone(),
                    blob: row.wrapped.clone(),
                };
                match ring.rewrap(&copy, tenant.id, row.version, &target).await {
                    Ok(moved) => {
                        meta.put_tenant_key(&WrappedTenantKey {
                            master_key_id: moved.key_id,
                            wrapped: moved.blob,
                            ..row
                        })
                        .await?;
                        report.rewrapped += 1;
                        if report.rewrapped.is_multiple_of(100) {
                            info!(region, rewrapped = report.rewrapped, "master key rotation");
                        }
                    }
                    Err(e) => report.failed.push((tenant.name.clone(), e.to_string())),
                }
            }
        }
        Ok(report)
    }

    /// The state of every master key and tenant key. Each tenant's current version is
    /// unwrapped (through the cache) to show whether it opens now.
    pub(crate) async fn key_status(&self, max_age_days: u32) -> VfsResult<KeyStatus> {
        let ring = &self.inner.b.keys;
        let meta = &self.inner.b.meta;
        let mut regions: Vec<RegionStatus> = ring
            .regions()
            .map(|(region, keys)| RegionStatus {
                region,
                kind: keys.current.kind(),
                key_id: keys.current.key_id(),
                previous: keys.previous.iter().map(|p| p.key_id()).collect(),
                kms: keys.kms.is_some(),
                copies_under_older_keys: 0,
            })
            .collect();
        let max_age_ms = i64::from(max_age_days) * 86_400_000;
        let rotations = meta.key_rotations().await?;
        let mut tenants = Vec::new();
        for tenant in meta.list_tenants().await? {
            let own = meta.tenant_master_keys(tenant.id).await?;
            let rows = meta.tenant_keys(tenant.id).await?;
            let mut versions: Vec<VersionStatus> = Vec::new();
            for row in &rows {
                let owned = own.iter().any(|k| k.region == row.region);
                if let Some(r) = regions.iter_mut().find(|r| r.region == row.region)
                    && !owned
                    && row.master_key_id != r.key_id
                {
                    r.copies_under_older_keys += 1;
                }
                let created_ms = if row.created_ms > 0 {
                    row.created_ms
                } else {
                    tenant.created_ms
                };
                let copy = (row.region.clone(), row.master_key_id.clone());
                match versions.iter_mut().find(|v| v.version == row.version) {
                    Some(v) => v.copies.push(copy),
                    None => versions.push(VersionStatus {
                        version: row.version,
                        created_ms,
                        copies: vec![copy],
                    }),
                }
            }
            let error = self
                .tenant_keys(tenant.id, tenant.key_version)
                .await
                .err()
                .map(|e| e.to_string());
            let current_age = versions
                .iter()
                .find(|v| v.version == tenant.key_version)
                .map_or(0, |v| now_ms() - v.created_ms);
            tenants.push(TenantKeyStatus {
                tenant: tenant.name.clone(),
                current_version: tenant.key_version,
                versions,
                own_keys: own.into_iter().map(|k| (k.region, k.key_id)).collect(),
                error,
                overdue: max_age_ms > 0 && current_age > max_age_ms,
                rotation: rotations
                    .iter()
                    .find(|r| r.tenant_id == tenant.id)
                    .map(|r| crate::RotationProgress::new(&tenant.name, r)),
            });
        }
        Ok(KeyStatus {
            regions,
            tenants,
            metrics: ring.metrics.snapshot(),
            cache_secs: self.inner.key_cache.ttl.as_secs(),
        })
    }

    /// Tenants whose current key version is older than `max_age_days` (0: none) and whose
    /// key is not being rotated, oldest first. From the stored ages only: no key is unwrapped.
    pub(crate) async fn overdue_tenants(&self, max_age_days: u32) -> VfsResult<Vec<Tenant>> {
        if max_age_days == 0 {
            return Ok(Vec::new());
        }
        let meta = &self.inner.b.meta;
        let max_age_ms = i64::from(max_age_days) * 86_400_000;
        let rotating: Vec<i64> = meta
            .key_rotations()
            .await?
            .iter()
            .map(|r| r.tenant_id)
            .collect();
        let now = now_ms();
        let mut overdue = Vec::new();
        for tenant in meta.list_tenants().await? {
            if rotating.contains(&tenant.id) {
                continue;
            }
            let made = meta
                .tenant_keys(tenant.id)
                .await?
                .iter()
                .filter(|k| k.version == tenant.key_version)
                .map(|k| {
                    if k.created_ms > 0 {
                        k.created_ms
                    } else {
                        tenant.created_ms
                    }
                })
                .max()
                .unwrap_or(tenant.created_ms);
            if now - made > max_age_ms {
                overdue.push((made, tenant));
            }
        }
        overdue.sort_by_key(|(made, _)| *made);
        Ok(overdue.into_iter().map(|(_, t)| t).collect())
    }

    /// Tenants whose key rotation has made no progress for `stalled_ms` (its process
    /// stopped), oldest first.
    pub(crate) async fn stalled_rotations(&self, stalled_ms: i64) -> VfsResult<Vec<Tenant>> {
        let meta = &self.inner.b.meta;
        let now = now_ms();
        let mut out = Vec::new();
        for r in meta.key_rotations().await? {
            if now - r.updated_ms >= stalled_ms {
                out.push(meta.tenant(r.tenant_id).await?);
            }
        }
        Ok(out)
    }

    /// Crypto-shreds a tenant: every wrapped copy of its key is destroyed first (from then on
    /// nothing of it can be decrypted from either bucket or a later database backup), then
    /// its rows go and its objects are queued as garbage. Returns the objects queued.
    pub(crate) async fn shred_tenant(&self, tenant: &Tenant) -> VfsResult<u64> {
        let meta = &self.inner.b.meta;
        let destroyed = meta.destroy_tenant_keys(tenant.id).await?;
        self.inner.key_cache.forget_tenant(tenant.id);
        info!(
            tenant = tenant.name,
            copies = destroyed,
            "tenant keys destroyed (crypto-shredded)"
        );
        Ok(meta.delete_tenant(tenant.id, now_ms()).await?)
    }
}

/// A key error as the Vfs reports it: to clients only "encryption key unavailable; retry
/// later" (or an integrity failure); the key service's own words go to the operator's log.
fn key_unavailable(error: KeyError) -> VfsError {
    error.into()
}
