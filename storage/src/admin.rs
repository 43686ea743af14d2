//! The operator's API: tenant, user and SSH key changes made by `coffer` commands, each checked,
//! audited (`protocol = "cli"`, flushed before the call returns, since a command's process ends
//! right after) and logged. The CLI and the front ends reach the stores only through this,
//! [`Vault`] and [`crate::Vfs`]; the stores themselves are not public outside this crate.
//!
//! Each change is one statement, so it is whole or absent; a user created with keys is removed
//! again when a key cannot be added, so `user add` leaves all or nothing.

use coffer_meta::{AuditRecord, MetaError, NewSshKey, Tenant, Usage, User};
use coffer_object::ObjectKey;
use tracing::info;

use crate::auth::Password;
use crate::clock::now_ms;
use crate::error::{ErrorKind, VfsError, VfsResult};
use crate::path::VPath;
use crate::perms::Permissions;
use crate::vault::Vault;

/// Operator changes (recorded in the audit log as `protocol = "cli"`).
#[derive(Debug, Clone, Copy)]
pub struct Admin<'a> {
    vault: &'a Vault,
}

/// One line of `coffer user list`.
#[derive(Debug, Clone)]
pub struct UserSummary {
    /// The user.
    pub user: User,
    /// Their tenant's name.
    pub tenant: String,
    /// How many SSH keys they have.
    pub ssh_keys: usize,
}

/// What `coffer user add` asks for.
pub struct NewUserRequest<'r> {
    /// The tenant (created when missing).
    pub tenant: &'r str,
    /// The user name.
    pub name: &'r str,
    /// The password, if any.
    pub password: Option<&'r Password>,
    /// The home folder, created with its parents when missing.
    pub home: &'r VPath,
    /// What the user may do.
    pub perms: Permissions,
    /// SSH public keys.
    pub ssh_keys: &'r [NewSshKey],
}

/// Whether the server's stores answer (`/readyz`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Readiness {
    /// The metadata store answered a query.
    pub metadata: bool,
    /// The primary object store answered a HEAD.
    pub primary_store: bool,
}

impl Vault {
    /// The operator's API.
    #[must_use]
    pub fn admin(&self) -> Admin<'_> {
        Admin { vault: self }
    }

    /// `true` if `key_base64` is one of `user`'s SSH keys. For the SSH "would you accept this
    /// key" probe, which clients send for every key they hold: not a login, not counted.
    pub async fn is_registered_key(&self, user: &str, key_base64: &str) -> bool {
        let meta = &self.inner.b.meta;
        let Ok(u) = meta.user_by_name(user).await else {
            return false;
        };
        meta.ssh_keys(u.id)
            .await
            .is_ok_and(|keys| keys.iter().any(|k| k.key_base64 == key_base64))
    }

    /// `true` if a replica store is configured.
    #[must_use]
    pub fn has_replica(&self) -> bool {
        self.inner.b.replica.is_some()
    }

    /// Asks the metadata store and the primary object store whether they answer.
    pub async fn readiness(&self) -> Readiness {
        let b = &self.inner.b;
        let metadata = b.meta.list_tenants().await.is_ok();
        let primary_store = match ObjectKey::generate() {
            Ok(k) => matches!(
                b.primary.head(&k).await,
                Ok(_) | Err(coffer_object::ObjectError::NotFound)
            ),
            Err(_) => false,
        };
        Readiness {
            metadata,
            primary_store,
        }
    }
}

impl Admin<'_> {
    /// Every tenant.
    pub async fn tenants(&self) -> VfsResult<Vec<Tenant>> {
        Ok(self.vault.inner.b.meta.list_tenants().await?)
    }

    /// The bytes and files of a tenant's committed files (the count its quota is checked
    /// against).
    pub async fn usage(&self, tenant_id: i64) -> VfsResult<Usage> {
        Ok(self.vault.inner.b.meta.usage(tenant_id).await?)
    }

    /// The tenant called `name`.
    pub async fn tenant(&self, name: &str) -> VfsResult<Tenant> {
        self.vault
            .inner
            .b
            .meta
            .tenant_by_name(name)
            .await
            .map_err(|e| named(e, "tenant", name))
    }

    /// Creates a tenant (with its keys), audited.
    pub async fn create_tenant(&self, name: &str, quota_bytes: Option<i64>) -> VfsResult<Tenant> {
        self.create_tenant_with_keys(name, quota_bytes, &[]).await
    }

    /// Creates a tenant whose key is wrapped under its own KMS key in each region of `own`
    /// (`(region, key)`: customer-managed), audited.
    pub async fn create_tenant_with_keys(
        &self,
        name: &str,
        quota_bytes: Option<i64>,
        own: &[(String, String)],
    ) -> VfsResult<Tenant> {
        let t = self
            .vault
            .create_tenant_with_keys(name, quota_bytes, own)
            .await
            .map_err(|e| match e.kind() {
                ErrorKind::AlreadyExists => VfsError::new(
                    ErrorKind::AlreadyExists,
                    format!("tenant {name:?} already exists"),
                ),
                _ => e,
            })?;
        self.audit(Some(t.id), None, name, "tenant_created").await;
        Ok(t)
    }

    /// Gives a tenant its own KMS keys (or, with `own` empty, returns it to the deployment's
    /// master keys): its key is rewrapped under them; audited.
    pub async fn set_tenant_master_keys(
        &self,
        name: &str,
        own: &[(String, String)],
    ) -> VfsResult<()> {
        let t = self.tenant(name).await?;
        self.vault.set_own_master_keys(&t, own).await?;
        self.audit(Some(t.id), None, name, "tenant_master_keys_set")
            .await;
        Ok(())
    }

    /// Crypto-shreds and deletes a tenant: its wrapped keys are destroyed first, then its
    /// rows; its objects are queued as garbage. Returns the objects queued. Audited.
    pub async fn shred_tenant(&self, name: &str) -> VfsResult<u64> {
        let t = self.tenant(name).await?;
        let queued = self.vault.shred_tenant(&t).await?;
        self.audit(Some(t.id), None, name, "tenant_shredded").await;
        Ok(queued)
    }

    /// Rewraps every copy of `region` under `to` (default: the region's current master key);
    /// resumable. Audited.
    pub async fn rotate_master_key(
        &self,
        region: &str,
        to: Option<&str>,
    ) -> VfsResult<crate::MasterRotation> {
        let report = self.vault.rotate_master(region, to).await?;
        self.audit(None, None, region, "master_key_rotated").await;
        Ok(report)
    }

    /// Rotates the tenant's key (or resumes its rotation under way): a new version for new
    /// writes at once, then every row rewritten under it in batches, then the old version's
    /// copies destroyed. `progress` is called after every batch. Audited when it begins and
    /// when it ends.
    pub async fn rotate_tenant_key(
        &self,
        name: &str,
        opts: crate::RotateOptions,
        progress: &mut (dyn FnMut(&crate::RotationProgress) + Send),
    ) -> VfsResult<crate::TenantRotation> {
        let t = self.tenant(name).await?;
        let report = self.vault.rotate_tenant(&t, opts, progress).await?;
        if report.started {
            self.audit(Some(t.id), None, name, "tenant_key_rotation_started")
                .await;
        }
        if report.finished {
            self.audit(Some(t.id), None, name, "tenant_key_rotated")
                .await;
        }
        Ok(report)
    }

    /// Names of tenants whose current key version is older than `max_age_days` and not
    /// being rotated, oldest first (no key is unwrapped).
    pub async fn overdue_tenants(&self, max_age_days: u32) -> VfsResult<Vec<String>> {
        let tenants = self.vault.overdue_tenants(max_age_days).await?;
        Ok(tenants.into_iter().map(|t| t.name).collect())
    }

    /// Names of tenants whose key rotation has made no progress for `stalled_for`: a process
    /// running it stopped, so `serve` resumes it.
    pub async fn stalled_rotations(
        &self,
        stalled_for: std::time::Duration,
    ) -> VfsResult<Vec<String>> {
        let ms = i64::try_from(stalled_for.as_millis()).unwrap_or(i64::MAX);
        let tenants = self.vault.stalled_rotations(ms).await?;
        Ok(tenants.into_iter().map(|t| t.name).collect())
    }

    /// Master keys per region and every tenant's key versions, checked now.
    pub async fn key_status(&self, max_age_days: u32) -> VfsResult<crate::KeyStatus> {
        self.vault.key_status(max_age_days).await
    }

    /// The tenant called `name`, created when missing.
    pub async fn tenant_or_create(&self, name: &str) -> VfsResult<Tenant> {
        match self.vault.inner.b.meta.tenant_by_name(name).await {
            Ok(t) => Ok(t),
            Err(MetaError::NotFound) => self.create_tenant(name, None).await,
            Err(e) => Err(e.into()),
        }
    }

    /// The user called `name`.
    pub async fn user(&self, name: &str) -> VfsResult<User> {
        self.vault
            .inner
            .b
            .meta
            .user_by_name(name)
            .await
            .map_err(|e| named(e, "user", name))
    }

    /// Every user, or those of one tenant.
    pub async fn users(&self, tenant: Option<&str>) -> VfsResult<Vec<UserSummary>> {
        let meta = &self.vault.inner.b.meta;
        let tid = match tenant {
            Some(t) => Some(self.tenant(t).await?.id),
            None => None,
        };
        let tenants = meta.list_tenants().await?;
        let mut out = Vec::new();
        for user in meta.list_users(tid).await? {
            let tenant = tenants
                .iter()
                .find(|t| t.id == user.tenant_id)
                .map(|t| t.name.clone())
                .unwrap_or_else(|| "?".into());
            let ssh_keys = meta.ssh_keys(user.id).await?.len();
            out.push(UserSummary {
                user,
                tenant,
                ssh_keys,
            });
        }
        Ok(out)
    }

    /// Creates a user with their keys (all or nothing), creating the tenant and home folder
    /// when missing; audited.
    pub async fn add_user(&self, req: &NewUserRequest<'_>) -> VfsResult<(Tenant, User)> {
        crate::vault::check_user_name(req.name)?;
        let tenant = self.tenant_or_create(req.tenant).await?;
        let user = self
            .vault
            .create_user(&tenant, req.name, req.password, req.home, req.perms)
            .await
            .map_err(|e| match e.kind() {
                ErrorKind::AlreadyExists => VfsError::new(
                    ErrorKind::AlreadyExists,
                    format!("user {:?} already exists", req.name),
                ),
                _ => e,
            })?;
        let meta = &self.vault.inner.b.meta;
        for k in req.ssh_keys {
            if let Err(e) = meta.add_ssh_key(user.id, k).await {
                // Leave no half-made user behind.
                let _ = meta.delete_user(user.id).await;
                return Err(e.into());
            }
        }
        self.audit(Some(tenant.id), Some(user.id), req.name, "user_created")
            .await;
        Ok((tenant, user))
    }

    /// Replaces a user's password (and forgets their failed logins); audited.
    pub async fn set_password(&self, name: &str, password: &Password) -> VfsResult<()> {
        let u = self.user(name).await?;
        self.vault.set_password(&u, Some(password)).await?;
        self.vault.inner.b.meta.clear_login_failures(u.id).await?;
        self.audit(Some(u.tenant_id), Some(u.id), name, "password_changed")
            .await;
        Ok(())
    }

    /// Disables or enables a user; enabling also forgets their failed logins. Audited.
    pub async fn set_disabled(&self, name: &str, disabled: bool) -> VfsResult<()> {
        let u = self.user(name).await?;
        let meta = &self.vault.inner.b.meta;
        meta.set_disabled(u.id, disabled).await?;
        if !disabled {
            meta.clear_login_failures(u.id).await?;
        }
        let action = if disabled {
            "user_disabled"
        } else {
            "user_enabled"
        };
        self.audit(Some(u.tenant_id), Some(u.id), name, action)
            .await;
        Ok(())
    }

    /// Removes a user, their SSH keys and tokens (their files stay with the tenant); audited.
    pub async fn remove_user(&self, name: &str) -> VfsResult<()> {
        let u = self.user(name).await?;
        self.vault.inner.b.meta.delete_user(u.id).await?;
        self.audit(Some(u.tenant_id), Some(u.id), name, "user_removed")
            .await;
        Ok(())
    }

    /// Adds SSH keys to a user; audited.
    pub async fn add_ssh_keys(&self, name: &str, keys: &[NewSshKey]) -> VfsResult<()> {
        let u = self.user(name).await?;
        for k in keys {
            self.vault.inner.b.meta.add_ssh_key(u.id, k).await?;
        }
        self.audit(Some(u.tenant_id), Some(u.id), name, "ssh_key_added")
            .await;
        Ok(())
    }

    /// Records an operator change and waits until it is written.
    async fn audit(&self, tenant_id: Option<i64>, user_id: Option<i64>, name: &str, action: &str) {
        info!(action, name, "operator change");
        self.vault.inner.audit.record(AuditRecord {
            at_ms: now_ms(),
            tenant_id,
            user_id,
            user_name: Some(name.chars().take(64).collect()),
            protocol: "cli".to_owned(),
            remote_addr: None,
            action: action.to_owned(),
            node_id: None,
            outcome: "ok".to_owned(),
            bytes: None,
        });
        self.vault.flush_audit().await;
    }
}

/// A lookup failure that names what was looked up.
fn named(e: MetaError, what: &str, name: &str) -> VfsError {
    match e {
        MetaError::NotFound => {
            VfsError::new(ErrorKind::NotFound, format!("no such {what}: {name}"))
        }
        e => e.into(),
    }
}
