//! Builds the stores, keys and vault from a validated configuration.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use coffer_config::{Config, KeyConfig, StoreConfig};
use coffer_keys::{KeyProvider, KeyRing, LocalKeyProvider};
use coffer_meta::{MetadataStore, SqliteStore};
use coffer_object::{LocalDirStore, ObjectStore};
use coffer_storage::{Backends, LockoutPolicy, Vault, VaultOptions};

/// Who opens the vault: the server, or an operator command running beside it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// `coffer serve`: owns the node's spool and recovers it at start.
    Server,
    /// `coffer user|files|tenant`: uses its own spool subdirectory and node name, so it never
    /// disturbs a running server's uploads.
    Operator,
}

/// Creates the data directory (0700) if it does not exist.
pub fn ensure_data_dir(cfg: &Config) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = &cfg.data_dir;
    if !dir.exists() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create data_dir {}", dir.display()))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot set permissions on data_dir {}", dir.display()))?;
    }
    Ok(())
}

fn open_store(cfg: &StoreConfig, field: &str) -> anyhow::Result<Arc<dyn ObjectStore>> {
    match cfg {
        StoreConfig::Local { path } => {
            Ok(Arc::new(LocalDirStore::open(path).with_context(|| {
                format!("{field}: cannot open {}", path.display())
            })?))
        }
    }
}

fn open_key(cfg: &KeyConfig, field: &str) -> anyhow::Result<Arc<dyn KeyProvider>> {
    match cfg {
        KeyConfig::Local { path } => Ok(Arc::new(
            LocalKeyProvider::load_or_create(path)
                .with_context(|| format!("{field}: master key {}", path.display()))?,
        )),
    }
}

/// Removes crash leftovers from the temp directories of local object stores. Only `serve`
/// calls this at start; objects themselves are never touched.
pub fn clean_local_store_temp(cfg: &Config) -> anyhow::Result<usize> {
    let mut n = 0;
    for store in std::iter::once(&cfg.storage.primary).chain(cfg.storage.replica.as_ref()) {
        let StoreConfig::Local { path } = store;
        n += LocalDirStore::open(path)?.clean_temp()?;
    }
    Ok(n)
}

/// Opens and migrates the metadata store.
pub async fn open_meta(cfg: &Config) -> anyhow::Result<Arc<dyn MetadataStore>> {
    if let Some(path) = cfg.metadata.url.strip_prefix("sqlite://") {
        if let Some(parent) = Path::new(path).parent() {
            std::fs::create_dir_all(parent).ok();
        }
    }
    let store = SqliteStore::open(&cfg.metadata.url)
        .await
        .context("metadata.url: cannot open the database")?;
    store
        .migrate()
        .await
        .context("metadata: migration failed")?;
    Ok(Arc::new(store))
}

/// Builds the whole vault for `role`.
pub async fn open_vault(cfg: &Config, role: Role) -> anyhow::Result<Vault> {
    ensure_data_dir(cfg)?;
    let meta = open_meta(cfg).await?;
    let primary = open_store(&cfg.storage.primary, "storage.primary")?;
    let replica = match &cfg.storage.replica {
        Some(r) => Some(open_store(r, "storage.replica")?),
        None => None,
    };
    let keys = KeyRing {
        primary: open_key(&cfg.keys.primary, "keys.primary")?,
        replica: Some(open_key(&cfg.keys.replica, "keys.replica")?),
    };
    let (spool_dir, node_name) = match role {
        Role::Server => (cfg.storage.spool_dir.clone(), cfg.node_name.clone()),
        Role::Operator => (
            cfg.storage
                .spool_dir
                .join(format!("cli-{}", std::process::id())),
            format!("{}/cli-{}", cfg.node_name, std::process::id()),
        ),
    };
    let opts = VaultOptions {
        chunk_size: cfg.storage.chunk_size,
        spool_dir,
        node_name,
        max_buffered_write_bytes: cfg.storage.max_buffered_write_bytes,
        lockout: LockoutPolicy {
            max_failures: cfg.auth.max_failures,
            window_ms: cfg.auth.failure_window.as_millis() as i64,
            lock_ms: cfg.auth.lockout.as_millis() as i64,
        },
    };
    let vault = Vault::open(
        Backends {
            meta,
            primary,
            replica,
            keys,
        },
        opts,
    )
    .await?;
    Ok(vault)
}
