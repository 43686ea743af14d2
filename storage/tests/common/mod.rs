//! Test support: a real vault (SQLite file, local directory stores, local key files) in a tempdir.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use coffer_keys::{KeyRing, LocalKeyProvider};
use coffer_meta::{MetadataStore, SqliteStore};
use coffer_object::LocalDirStore;
use coffer_storage::{
    Backends, FreeSpaceFloor, LockoutPolicy, Password, Permissions, VPath, Vault, VaultOptions,
    Vfs, WriteOptions,
};

pub struct TestVault {
    pub dir: tempfile::TempDir,
    pub vault: Vault,
    pub primary: Arc<LocalDirStore>,
    /// The vault's metadata store, opened by the test (the Vault does not hand it out).
    pub meta: Arc<dyn MetadataStore>,
}

pub const CHUNK: u32 = 4096;

pub async fn vault() -> TestVault {
    vault_with(LockoutPolicy::default()).await
}

pub async fn vault_with(lockout: LockoutPolicy) -> TestVault {
    let dir = tempfile::tempdir().unwrap();
    let (vault, primary, meta) = open_vault(dir.path(), "test-node", "spool", lockout, None).await;
    TestVault {
        dir,
        vault,
        primary,
        meta,
    }
}

/// How a test vault reaches a KMS: the in-memory one, and the tenant-key cache bound.
#[derive(Clone)]
pub struct TestKms {
    pub kms: coffer_keys::MemoryKms,
    pub key_cache: std::time::Duration,
    /// The primary region's master key: `None` for the local key file under the root, or a
    /// KMS key of `kms`.
    pub primary_master: Option<String>,
}

/// A vault whose regions reach `kms` (the deployment's own keys stay local files unless
/// `primary_master` names a KMS key).
pub async fn vault_with_kms(kms: &TestKms) -> TestVault {
    let dir = tempfile::tempdir().unwrap();
    let (vault, primary, meta) = open_vault(
        dir.path(),
        "test-node",
        "spool",
        LockoutPolicy::default(),
        Some(kms),
    )
    .await;
    TestVault {
        dir,
        vault,
        primary,
        meta,
    }
}

/// A vault on the database, stores and keys under `root`, with its own spool: one node.
pub async fn open_vault(
    root: &Path,
    node: &str,
    spool: &str,
    lockout: LockoutPolicy,
    kms: Option<&TestKms>,
) -> (Vault, Arc<LocalDirStore>, Arc<dyn MetadataStore>) {
    open_vault_with_floor(root, node, spool, lockout, kms, FreeSpaceFloor::NONE).await
}

/// A vault whose uploads are checked against `floor` on the spool's and the store's disk.
pub async fn vault_with_free_space_floor(floor: FreeSpaceFloor) -> TestVault {
    let dir = tempfile::tempdir().unwrap();
    let (vault, primary, meta) = open_vault_with_floor(
        dir.path(),
        "test-node",
        "spool",
        LockoutPolicy::default(),
        None,
        floor,
    )
    .await;
    TestVault {
        dir,
        vault,
        primary,
        meta,
    }
}

pub async fn open_vault_with_floor(
    root: &Path,
    node: &str,
    spool: &str,
    lockout: LockoutPolicy,
    kms: Option<&TestKms>,
    free_space_floor: FreeSpaceFloor,
) -> (Vault, Arc<LocalDirStore>, Arc<dyn MetadataStore>) {
    open_vault_inlining(
        root,
        node,
        spool,
        lockout,
        kms,
        free_space_floor,
        coffer_storage::DEFAULT_INLINE_MAX_BYTES,
    )
    .await
}

/// A vault (default lockout, no floor) that keeps sealed objects up to `inline_max_bytes` in
/// their metadata row (0: every object goes to the primary store).
pub async fn vault_inlining(inline_max_bytes: u32) -> TestVault {
    let dir = tempfile::tempdir().unwrap();
    let (vault, primary, meta) = open_vault_inlining(
        dir.path(),
        "test-node",
        "spool",
        LockoutPolicy::default(),
        None,
        FreeSpaceFloor::NONE,
        inline_max_bytes,
    )
    .await;
    TestVault {
        dir,
        vault,
        primary,
        meta,
    }
}

pub async fn open_vault_inlining(
    root: &Path,
    node: &str,
    spool: &str,
    lockout: LockoutPolicy,
    kms: Option<&TestKms>,
    free_space_floor: FreeSpaceFloor,
    inline_max_bytes: u32,
) -> (Vault, Arc<LocalDirStore>, Arc<dyn MetadataStore>) {
    let meta = SqliteStore::open(&format!("sqlite://{}", root.join("meta.db").display()))
        .await
        .unwrap();
    meta.migrate().await.unwrap();
    let primary = Arc::new(LocalDirStore::open(&root.join("store/primary")).unwrap());
    let replica = Arc::new(LocalDirStore::open(&root.join("store/replica")).unwrap());
    let local_primary: Arc<dyn coffer_keys::KeyProvider> =
        Arc::new(LocalKeyProvider::load_or_create(&root.join("keys/primary.key")).unwrap());
    let local_replica: Arc<dyn coffer_keys::KeyProvider> =
        Arc::new(LocalKeyProvider::load_or_create(&root.join("keys/replica.key")).unwrap());
    let keys = match kms {
        None => KeyRing::new(local_primary, Some(local_replica)),
        Some(k) => {
            let connector: Arc<dyn coffer_keys::KmsConnector> = Arc::new(k.kms.clone());
            let current = match &k.primary_master {
                Some(id) => connector.key(id),
                None => local_primary,
            };
            let region = |current| coffer_keys::RegionKeys {
                current,
                previous: Vec::new(),
                kms: Some(connector.clone()),
            };
            let mut ring = KeyRing::of_regions(region(current), Some(region(local_replica)));
            ring.metrics = k.kms.metrics();
            ring
        }
    };
    let opts = VaultOptions {
        chunk_size: CHUNK,
        spool_dir: root.join(spool),
        node_name: node.into(),
        max_buffered_write_bytes: 8 * 1024 * 1024,
        lockout,
        partial_uploads: coffer_storage::PartialUploads::KeepNewFiles,
        key_cache: kms.map_or(coffer_storage::DEFAULT_KEY_CACHE, |k| k.key_cache),
        free_space_floor,
        local_store_dir: Some(root.join("store/primary")),
        inline_max_bytes,
    };
    let meta: Arc<dyn MetadataStore> = Arc::new(meta);
    let b = Backends {
        meta: meta.clone(),
        primary: primary.clone(),
        replica: Some(replica),
        keys,
    };
    (Vault::open(b, opts).await.unwrap(), primary, meta)
}

impl TestVault {
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// A second vault on the same database and stores, as another process would open them
    /// (an operator command beside `coffer serve`).
    pub async fn other_process(&self) -> Vault {
        open_vault(
            self.root(),
            "other-node",
            "spool-other",
            LockoutPolicy::default(),
            None,
        )
        .await
        .0
    }

    /// Creates tenant + user with all permissions and returns their session.
    pub async fn user(&self, tenant: &str, name: &str) -> Vfs {
        self.user_with(tenant, name, Permissions::ALL, "/").await
    }

    pub async fn user_with(&self, tenant: &str, name: &str, perms: Permissions, home: &str) -> Vfs {
        let t = match self.meta.tenant_by_name(tenant).await {
            Ok(t) => t,
            Err(_) => self.vault.create_tenant(tenant, None).await.unwrap(),
        };
        let pw = Password::new(format!("pw-{name}-secret"));
        self.vault
            .create_user(&t, name, Some(&pw), &VPath::parse(home).unwrap(), perms)
            .await
            .unwrap();
        self.vault.operator_session(name).await.unwrap()
    }

    /// Every file under the data directory, recursively.
    pub fn all_files(&self) -> Vec<PathBuf> {
        fn walk(p: &Path, out: &mut Vec<PathBuf>) {
            for e in std::fs::read_dir(p).unwrap().flatten() {
                let path = e.path();
                if path.is_dir() {
                    walk(&path, out);
                } else {
                    out.push(path);
                }
            }
        }
        let mut out = Vec::new();
        walk(self.root(), &mut out);
        out
    }

    /// Paths of every object in the replica store.
    pub fn replica_objects(&self) -> Vec<PathBuf> {
        self.objects_in("store/replica")
    }

    /// Paths of every stored object in the primary store.
    pub fn primary_objects(&self) -> Vec<PathBuf> {
        self.objects_in("store/primary")
    }

    /// Paths of every object of the local store under `store` (its temp files left out).
    fn objects_in(&self, store: &str) -> Vec<PathBuf> {
        let root = self.root().join(store);
        self.all_files()
            .into_iter()
            .filter(|p| p.starts_with(&root) && !p.to_string_lossy().contains("/.tmp/"))
            .collect()
    }
}

pub async fn put(vfs: &Vfs, path: &str, data: &[u8]) -> coffer_storage::FileInfo {
    let mut w = vfs
        .create(
            path,
            WriteOptions {
                truncate: true,
                exclusive: false,
            },
        )
        .await
        .unwrap();
    for (i, c) in data.chunks(3000).enumerate() {
        w.write_at((i * 3000) as u64, c).await.unwrap();
    }
    w.commit().await.unwrap()
}

pub async fn get(vfs: &Vfs, path: &str) -> Result<Vec<u8>, coffer_storage::VfsError> {
    let r = vfs.open_read(path).await?;
    let mut out = Vec::new();
    while (out.len() as u64) < r.size() {
        let b = r.read_at(out.len() as u64, 5000).await?;
        assert!(!b.is_empty(), "short read");
        out.extend_from_slice(&b);
    }
    Ok(out)
}

/// Deterministic pseudo-random bytes.
pub fn bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}
