//! The vault: one per process, holding the stores, the key ring and the caches every session shares.

use std::path::PathBuf;
use std::sync::Arc;

use coffer_keys::{KeyRing, TenantKey, TenantKeys};
use coffer_meta::{MetadataStore, NewTenant, NewUser, Tenant, TenantMasterKey, User};
use coffer_object::ObjectStore;
use tracing::info;

use crate::audit::AuditSink;
use crate::auth::{HashLimits, Hasher, LockoutPolicy, Password};
use crate::clock::now_ms;
use crate::error::{ErrorKind, VfsError, VfsResult};
use crate::ids::random_id;
use crate::login::LoginLimiter;
use crate::path::VPath;
use crate::perms::Permissions;
use crate::spool::{FreeSpace, FreeSpaceFloor, Spool};
use crate::vfs::Vfs;
use crate::writer::PartialUploads;

/// Settings of the vault that come from configuration.
#[derive(Clone, Debug)]
pub struct VaultOptions {
    /// Plaintext bytes per chunk for new files.
    pub chunk_size: u32,
    /// Where sealed chunks of uploads in flight are kept.
    pub spool_dir: PathBuf,
    /// This node's name (owner of its spool in a cluster).
    pub node_name: String,
    /// Out-of-order bytes an open upload may hold in memory before writes are refused.
    pub max_buffered_write_bytes: u64,
    /// Login lockout policy.
    pub lockout: LockoutPolicy,
    /// What an upload cut off before its client finished it leaves behind.
    pub partial_uploads: PartialUploads,
    /// How long an unwrapped tenant key stays in memory before the key service is asked
    /// again (`keys.cache_secs`): the bound on how long a revoked customer key still works.
    pub key_cache: std::time::Duration,
    /// Free space the spool's disk and the local object store's keep (`uploads.min_free_*`):
    /// uploads are refused below it.
    pub free_space_floor: FreeSpaceFloor,
    /// The local primary store's directory, watched with the spool; `None` for S3.
    pub local_store_dir: Option<PathBuf>,
    /// A new file whose sealed object is at most this many bytes is stored in its metadata
    /// row instead of the primary store (`uploads.inline_max_bytes`; 0: never). At most
    /// [`crate::MAX_INLINE_BYTES`].
    pub inline_max_bytes: u32,
}

/// Default of [`VaultOptions::key_cache`] (`keys.cache_secs`): five minutes.
pub const DEFAULT_KEY_CACHE: std::time::Duration = std::time::Duration::from_secs(300);

/// The stores the vault works on.
#[derive(Clone, Debug)]
pub struct Backends {
    /// Metadata.
    pub meta: Arc<dyn MetadataStore>,
    /// Primary object store.
    pub primary: Arc<dyn ObjectStore>,
    /// Replica object store, if replication is on.
    pub replica: Option<Arc<dyn ObjectStore>>,
    /// Master keys of both regions.
    pub keys: KeyRing,
}

/// Who logged in, and how.
#[derive(Clone, Debug)]
pub struct Principal {
    /// The user row.
    pub user: User,
    /// "sftp", "ftp", "https" or "cli".
    pub protocol: &'static str,
    /// Client address, if any.
    pub remote_addr: Option<String>,
}

/// Shared state of the vault.
#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) b: Backends,
    pub(crate) opts: VaultOptions,
    pub(crate) spool: Spool,
    pub(crate) audit: AuditSink,
    pub(crate) key_cache: crate::tenant_keys::KeyCache,
    /// Each tenant's key versions in use, as read a moment ago.
    pub(crate) key_versions: crate::tenant_keys::VersionCache,
    /// A hash of no password: unknown users are checked against it (same cost).
    pub(crate) dummy_hash: String,
    /// The bounded Argon2 pool.
    pub(crate) hasher: Hasher,
    /// Failure counts per (name, address) and per address.
    pub(crate) limiter: Arc<dyn LoginLimiter>,
    /// Writes done after a login was answered (failure counts).
    pub(crate) background: tokio_util::task::TaskTracker,
    /// Recent name lookups of every session (see `lookups`).
    pub(crate) lookups: crate::lookups::Lookups,
    /// Uploads in flight to new names (exclusive creates fail at open).
    pub(crate) new_names: crate::inflight::NewNames,
    /// Objects this process's downloads hold open (the garbage collector keeps them).
    pub(crate) open_readers: crate::reader::OpenReaders,
    /// The free-space floor uploads are checked against.
    pub(crate) free_space: FreeSpace,
}

/// The vault handle: cheap to clone, shared by every front end.
#[derive(Clone, Debug)]
pub struct Vault {
    pub(crate) inner: Arc<Inner>,
}

/// Spool subdirectories of operator commands are named this plus the process id.
const OPERATOR_SPOOL_PREFIX: &str = "cli-";

/// Spool directory and node name for an operator command (`coffer files ...`) running beside
/// a server: its own subdirectory, so the server's recovery never removes its uploads while
/// it runs — and does remove them once its process is gone.
pub fn operator_spool(spool_dir: &std::path::Path, node_name: &str) -> (PathBuf, String) {
    let pid = std::process::id();
    (
        spool_dir.join(format!("{OPERATOR_SPOOL_PREFIX}{pid}")),
        format!("{node_name}/{OPERATOR_SPOOL_PREFIX}{pid}"),
    )
}

/// The pid of the operator command that owns uploads of `owner`, if `owner` is one of ours.
fn operator_pid(me: &str, owner: &str) -> Option<u32> {
    owner
        .strip_prefix(me)?
        .strip_prefix('/')?
        .strip_prefix(OPERATOR_SPOOL_PREFIX)?
        .parse()
        .ok()
}

fn process_alive(pid: u32) -> bool {
    std::path::Path::new("/proc").join(pid.to_string()).exists()
}

impl Vault {
    /// Opens the vault over migrated backends. Call [`Vault::recover_uploads`] when serving.
    pub async fn open(b: Backends, opts: VaultOptions) -> VfsResult<Self> {
        let limiter = crate::login::default_limiter(opts.lockout);
        Self::open_with_limiter(b, opts, limiter, HashLimits::for_this_machine()).await
    }

    /// As [`Vault::open`], with another login limiter (a cluster-wide one) and hashing limits.
    pub async fn open_with_limiter(
        b: Backends,
        opts: VaultOptions,
        limiter: Arc<dyn LoginLimiter>,
        hash_limits: HashLimits,
    ) -> VfsResult<Self> {
        let spool = Spool::open(&opts.spool_dir)?;
        let audit = AuditSink::start(b.meta.clone());
        let hasher = Hasher::start(hash_limits)?;
        let dummy_hash = hasher.measure().await?;
        let key_cache = crate::tenant_keys::KeyCache::new(opts.key_cache);
        let mut watched = vec![("spool", opts.spool_dir.clone())];
        if let Some(dir) = &opts.local_store_dir {
            watched.push(("object store", dir.clone()));
        }
        let free_space = FreeSpace::new(opts.free_space_floor, watched);
        let vault = Self {
            inner: Arc::new(Inner {
                b,
                opts,
                spool,
                audit,
                key_cache,
                key_versions: Default::default(),
                dummy_hash,
                hasher,
                limiter,
                background: tokio_util::task::TaskTracker::new(),
                lookups: Default::default(),
                new_names: Default::default(),
                open_readers: Default::default(),
                free_space,
            }),
        };
        Ok(vault)
    }

    /// The backends. Not public: callers outside the crate go through the Vault, the Vfs and
    /// [`crate::Admin`], which check and audit.
    pub(crate) fn backends(&self) -> &Backends {
        &self.inner.b
    }

    /// Removes spool files and upload rows this node left behind when it stopped mid-upload.
    /// The uploads were never committed, so no client was told they succeeded. Only `serve`
    /// calls this at start: operator commands running beside a server use their own spool
    /// directory and node name, so they never touch the server's uploads.
    pub async fn recover_uploads(&self) -> VfsResult<()> {
        let me = &self.inner.opts.node_name;
        let mut cleaned = 0usize;
        for up in self.inner.b.meta.uploads().await? {
            let dead_operator =
                operator_pid(me, &up.node_name).is_some_and(|pid| !process_alive(pid));
            if &up.node_name != me && !dead_operator {
                continue;
            }
            self.inner.spool.remove(&up.spool_name);
            if let Ok(key) = coffer_object::ObjectKey::parse(&up.object_key) {
                // The object may have been stored just before the crash, without its row.
                let _ = self.inner.b.primary.delete(&key).await;
            }
            self.inner.b.meta.end_upload(up.id).await?;
            cleaned += 1;
        }
        let strays = self.inner.spool.remove_all()?
            + self.inner.spool.remove_dirs_where(|name| {
                name.strip_prefix(OPERATOR_SPOOL_PREFIX)
                    .and_then(|pid| pid.parse().ok())
                    .is_some_and(|pid| !process_alive(pid))
            })?;
        if cleaned + strays > 0 {
            info!(
                uploads = cleaned,
                stray_files = strays,
                "recovered unfinished uploads from the spool"
            );
        }
        Ok(())
    }

    // ---- tenants ----

    /// Creates a tenant with a fresh tenant key wrapped under every region's master key.
    pub async fn create_tenant(&self, name: &str, quota_bytes: Option<i64>) -> VfsResult<Tenant> {
        self.create_tenant_with_keys(name, quota_bytes, &[]).await
    }

    /// Creates a tenant whose key is wrapped under its own master key in each region of
    /// `own` (`(region, KMS key)`), and under the deployment's master key elsewhere.
    pub async fn create_tenant_with_keys(
        &self,
        name: &str,
        quota_bytes: Option<i64>,
        own: &[(String, String)],
    ) -> VfsResult<Tenant> {
        if name.is_empty()
            || name.len() > 64
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(VfsError::new(
                ErrorKind::InvalidPath,
                "tenant names are 1-64 characters of a-z, A-Z, 0-9, '-', '_' and '.'",
            ));
        }
        let id = random_id()?;
        let root_id = random_id()?;
        let tk = TenantKey::generate()?;
        let master_keys: Vec<TenantMasterKey> = own
            .iter()
            .map(|(region, key_id)| TenantMasterKey {
                tenant_id: id,
                region: region.clone(),
                key_id: key_id.clone(),
            })
            .collect();
        let keys = self.wrap_new_tenant_key(&tk, id, &master_keys).await?;
        let derived = TenantKeys::derive(&tk, id, 1);
        let root_name_enc = derived.encrypt_name(root_id, "")?;
        let root_name_index = derived.blind_index(0, "").to_vec();
        let tenant = self
            .inner
            .b
            .meta
            .create_tenant(&NewTenant {
                id,
                name: name.to_owned(),
                root_node_id: root_id,
                root_name_enc,
                root_name_index,
                quota_bytes,
                keys,
                master_keys,
                now_ms: now_ms(),
            })
            .await?;
        self.inner.key_cache.insert(id, 1, Arc::new(derived));
        Ok(tenant)
    }

    // ---- users ----

    /// Creates a user in a tenant, creating their home folder (and its parents) if missing.
    pub async fn create_user(
        &self,
        tenant: &Tenant,
        name: &str,
        password: Option<&Password>,
        home: &VPath,
        perms: Permissions,
    ) -> VfsResult<User> {
        check_user_name(name)?;
        let password_hash = match password {
            Some(p) => Some(self.inner.hasher.hash(p).await?),
            None => None,
        };
        let home_id = self.ensure_dirs(tenant, home).await?;
        let user = self
            .inner
            .b
            .meta
            .create_user(&NewUser {
                id: random_id()?,
                tenant_id: tenant.id,
                name: name.to_owned(),
                password_hash,
                home_node_id: home_id,
                perms: perms.bits(),
                now_ms: now_ms(),
            })
            .await?;
        Ok(user)
    }

    /// Replaces a user's password.
    pub async fn set_password(&self, user: &User, password: Option<&Password>) -> VfsResult<()> {
        let hash = match password {
            Some(p) => Some(self.inner.hasher.hash(p).await?),
            None => None,
        };
        Ok(self
            .inner
            .b
            .meta
            .set_password(user.id, hash.as_deref())
            .await?)
    }

    /// Creates `path` and its missing parents below the tenant root; returns the folder's id.
    async fn ensure_dirs(&self, tenant: &Tenant, path: &VPath) -> VfsResult<i64> {
        let root = Principal {
            user: User {
                id: 0,
                tenant_id: tenant.id,
                name: String::new(),
                password_hash: None,
                home_node_id: tenant.root_node_id,
                perms: Permissions::ALL.bits(),
                disabled: false,
                locked_until_ms: None,
                created_ms: 0,
            },
            protocol: "cli",
            remote_addr: None,
        };
        let vfs = self.vfs_for(root).await?;
        vfs.mkdir_all(path).await
    }

    /// Opens a session for an authenticated principal. The user is read again: one disabled
    /// or removed since the login (a cached HTTPS login, a browser session) is refused at once.
    pub async fn session(&self, principal: Principal) -> VfsResult<Vfs> {
        let tenant = match self.inner.b.meta.user_with_tenant(principal.user.id).await {
            Ok((u, tenant)) if !u.disabled => tenant,
            Ok(_) | Err(coffer_meta::MetaError::NotFound) => {
                return Err(crate::login::auth_failed());
            }
            Err(e) => return Err(e.into()),
        };
        self.vfs_with(principal, tenant).await
    }

    pub(crate) async fn vfs_for(&self, principal: Principal) -> VfsResult<Vfs> {
        let tenant = self.inner.b.meta.tenant(principal.user.tenant_id).await?;
        self.vfs_with(principal, tenant).await
    }

    /// A session of `principal` in `tenant` (its row read just now).
    pub(crate) async fn vfs_with(&self, principal: Principal, tenant: Tenant) -> VfsResult<Vfs> {
        // The key is unwrapped (or found in the cache) now, so a session of a tenant whose
        // key is unavailable is refused at its start with that reason.
        self.tenant_keys(tenant.id, tenant.key_version).await?;
        Ok(Vfs::new(self.clone(), principal, tenant))
    }

    /// Opens a session for a user by name, without a password: for operator commands only.
    pub async fn operator_session(&self, user_name: &str) -> VfsResult<Vfs> {
        let user = self
            .inner
            .b
            .meta
            .user_by_name(user_name)
            .await
            .map_err(|e| match e {
                coffer_meta::MetaError::NotFound => {
                    VfsError::new(ErrorKind::NotFound, "no such user")
                }
                e => e.into(),
            })?;
        // Operators reach a disabled user's files too.
        self.vfs_for(Principal {
            user,
            protocol: "cli",
            remote_addr: None,
        })
        .await
    }

    // ---- authentication (see login.rs) ----

    pub(crate) async fn find_user(&self, name: &str) -> VfsResult<Option<User>> {
        match self.inner.b.meta.user_by_name(name).await {
            Ok(u) => Ok(Some(u)),
            Err(coffer_meta::MetaError::NotFound) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// `true` if the user exists and has at least one SSH key (lets SSH offer the right methods).
    pub async fn has_ssh_keys(&self, name: &str) -> bool {
        match self.inner.b.meta.user_by_name(name).await {
            Ok(u) => self
                .inner
                .b
                .meta
                .ssh_keys(u.id)
                .await
                .map(|k| !k.is_empty())
                .unwrap_or(false),
            Err(_) => false,
        }
    }

    /// Waits until queued audit records and failed-login counts are written (for orderly
    /// shutdown and tests).
    pub async fn flush_audit(&self) {
        self.inner.background.close();
        self.inner.background.wait().await;
        self.inner.background.reopen();
        self.inner.audit.flush().await;
    }
}

/// User names: 1-64 characters of letters, digits, `-`, `_`, `.` and `@`.
pub fn check_user_name(name: &str) -> VfsResult<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c));
    if ok {
        Ok(())
    } else {
        Err(VfsError::new(
            ErrorKind::InvalidPath,
            "user names are 1-64 characters of a-z, A-Z, 0-9, '-', '_', '.' and '@'",
        ))
    }
}
