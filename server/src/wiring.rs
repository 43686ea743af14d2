//! Builds the stores, keys and vault from a validated configuration.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use coffer_config::{
    Config, DatabaseTls, KeyConfig, KmsConnectionConfig, MetadataConfig, S3Auth, S3SecretKey,
    S3StoreConfig, StoreConfig, read_secret_file,
};
use coffer_keys::{
    AwsKms, AwsKmsSettings, KeyMetrics, KeyProvider, KeyRing, KmsConnector, KmsCredentials,
    LocalKeyProvider, RegionKeys,
};
use coffer_meta::{MetadataStore, MySqlOptions, MySqlStore, MySqlTls, SqliteStore};
use coffer_object::{LocalDirStore, ObjectStore, S3Credentials, S3Settings, S3Store};
use coffer_storage::{
    Backends, FreeSpaceFloor, LockoutPolicy, PartialUploads, Vault, VaultOptions,
};

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

/// Opens the object store configured in the table `field` (`storage.primary`, ...).
pub async fn open_store(cfg: &StoreConfig, field: &str) -> anyhow::Result<Arc<dyn ObjectStore>> {
    match cfg {
        StoreConfig::Local { path } => {
            Ok(Arc::new(LocalDirStore::open(path).with_context(|| {
                format!("{field}: cannot open {}", path.display())
            })?))
        }
        StoreConfig::S3(s3) => Ok(Arc::new(open_s3_store(s3, field).await?)),
    }
}

/// Builds an S3 client for `cfg`, reading a `secret_access_key_file` now.
pub async fn open_s3_store(cfg: &S3StoreConfig, field: &str) -> anyhow::Result<S3Store> {
    let credentials = match &cfg.credentials {
        S3Auth::DefaultChain => S3Credentials::DefaultChain,
        S3Auth::Static {
            access_key_id,
            secret_access_key,
        } => match secret_access_key {
            S3SecretKey::Inline(secret) => {
                S3Credentials::static_keys(access_key_id, secret.expose())
            }
            S3SecretKey::File(path) => {
                let field = format!("{field}.secret_access_key_file");
                let secret = read_secret_file(&field, path)?;
                S3Credentials::static_keys(access_key_id, secret.expose())
            }
        },
    };
    let settings = S3Settings {
        bucket: cfg.bucket.clone(),
        region: cfg.region.clone(),
        endpoint: cfg.endpoint.clone(),
        path_style: cfg.path_style,
        credentials,
        part_size: cfg.part_size,
    };
    S3Store::connect(settings)
        .await
        .with_context(|| format!("{field}: cannot set up the S3 client"))
}

/// Connects to the KMS of `kms` (no request is made), counting its calls in `metrics`.
async fn connect_kms(
    kms: &KmsConnectionConfig,
    field: &str,
    metrics: &Arc<KeyMetrics>,
) -> anyhow::Result<Arc<AwsKms>> {
    let credentials = match &kms.credentials {
        S3Auth::DefaultChain => KmsCredentials::DefaultChain,
        S3Auth::Static {
            access_key_id,
            secret_access_key,
        } => match secret_access_key {
            S3SecretKey::Inline(secret) => {
                KmsCredentials::static_keys(access_key_id, secret.expose())
            }
            S3SecretKey::File(path) => {
                let field = format!("{field}.secret_access_key_file");
                let secret = read_secret_file(&field, path)?;
                KmsCredentials::static_keys(access_key_id, secret.expose())
            }
        },
    };
    let settings = AwsKmsSettings {
        region: kms.region.clone(),
        endpoint: kms.endpoint.clone(),
        credentials,
    };
    Ok(Arc::new(AwsKms::connect(settings, metrics.clone()).await))
}

/// The master keys of one region (`field` is `keys.primary` or `keys.replica`): the current
/// key, older local key files still accepted for unwrapping, and the region's KMS if any.
async fn open_region_keys(
    cfg: &KeyConfig,
    field: &str,
    metrics: &Arc<KeyMetrics>,
) -> anyhow::Result<RegionKeys> {
    let keys = match cfg {
        KeyConfig::Local {
            path,
            previous_paths,
            kms,
        } => {
            let current: Arc<dyn KeyProvider> = Arc::new(
                LocalKeyProvider::load_or_create(path)
                    .with_context(|| format!("{field}.path: master key {}", path.display()))?,
            );
            let mut previous: Vec<Arc<dyn KeyProvider>> = Vec::with_capacity(previous_paths.len());
            for (n, old) in previous_paths.iter().enumerate() {
                previous.push(Arc::new(LocalKeyProvider::load(old).with_context(
                    || format!("{field}.previous_paths[{n}]: master key {}", old.display()),
                )?));
            }
            let kms: Option<Arc<dyn KmsConnector>> = match kms {
                Some(kms) => Some(connect_kms(kms, field, metrics).await?),
                None => None,
            };
            RegionKeys {
                current,
                previous,
                kms,
            }
        }
        KeyConfig::AwsKms { key_id, kms } => {
            let kms = connect_kms(kms, field, metrics).await?;
            RegionKeys {
                current: kms.key(key_id),
                previous: Vec::new(),
                kms: Some(kms),
            }
        }
    };
    Ok(keys)
}

/// Logs a region's provider kind, key id, older key ids and KMS (never a secret).
fn log_region_keys(field: &str, cfg: &KeyConfig, keys: &RegionKeys) {
    let previous: Vec<String> = keys.previous.iter().map(|p| p.key_id()).collect();
    let kms = cfg.kms().map(|k| {
        k.endpoint
            .clone()
            .unwrap_or_else(|| format!("AWS KMS {}", k.region))
    });
    tracing::info!(
        keys = field,
        kind = keys.current.kind(),
        key_id = %keys.current.key_id(),
        previous = ?previous,
        kms = ?kms,
        "master key"
    );
}

/// Both regions' master keys as one ring, every KMS counting its calls in the ring's metrics.
pub async fn open_key_ring(cfg: &Config) -> anyhow::Result<KeyRing> {
    let metrics = Arc::new(KeyMetrics::default());
    let primary = open_region_keys(&cfg.keys.primary, "keys.primary", &metrics).await?;
    let replica = open_region_keys(&cfg.keys.replica, "keys.replica", &metrics).await?;
    // Logged once both regions opened, so a refused key file stays the only line on stderr.
    for (field, cfg, keys) in [
        ("keys.primary", &cfg.keys.primary, &primary),
        ("keys.replica", &cfg.keys.replica, &replica),
    ] {
        log_region_keys(field, cfg, keys);
    }
    let mut ring = KeyRing::of_regions(primary, Some(replica));
    ring.metrics = metrics;
    Ok(ring)
}

/// Removes crash leftovers from the temp directories of local object stores. Only `serve`
/// calls this at start; objects themselves are never touched.
pub fn clean_local_store_temp(cfg: &Config) -> anyhow::Result<usize> {
    let mut n = 0;
    for store in std::iter::once(&cfg.storage.primary).chain(cfg.storage.replica.as_ref()) {
        // S3 stores keep no temp files: an interrupted multipart upload is aborted by the
        // uploader or, failing that, by `coffer gc`.
        if let StoreConfig::Local { path } = store {
            n += LocalDirStore::open(path)?.clean_temp()?;
        }
    }
    Ok(n)
}

/// Opens the metadata store named by `metadata.url`: SQLite (always migrated, it is this
/// node's own file) or MySQL (migrated if `metadata.migrate_on_start`, else its schema must
/// be exactly this build's). A schema newer than the build is refused either way.
pub async fn open_meta(cfg: &Config) -> anyhow::Result<Arc<dyn MetadataStore>> {
    if cfg.metadata.is_mysql() {
        let store = open_mysql(&cfg.metadata).await?;
        if cfg.metadata.migrate_on_start {
            store
                .migrate()
                .await
                .context("metadata: migration failed")?;
        } else {
            store
                .check_schema()
                .await
                .context("metadata: schema check failed")?;
        }
        return Ok(Arc::new(store));
    }
    if let Some(path) = cfg.metadata.url.strip_prefix("sqlite://")
        && let Some(parent) = Path::new(path).parent()
    {
        std::fs::create_dir_all(parent).ok();
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

/// `coffer migrate`: applies pending migrations; returns the schema version now in place.
pub async fn migrate_meta(cfg: &Config) -> anyhow::Result<i64> {
    if cfg.metadata.is_mysql() {
        let store = open_mysql(&cfg.metadata).await?;
        store
            .migrate()
            .await
            .context("metadata: migration failed")?;
        return Ok(store.schema_version().await?.unwrap_or(0));
    }
    ensure_data_dir(cfg)?;
    open_meta(cfg).await?;
    Ok(SqliteStore::supported_schema_version())
}

/// Connects to MySQL with the configured TLS, pool and password (never logged).
async fn open_mysql(cfg: &MetadataConfig) -> anyhow::Result<MySqlStore> {
    let password = cfg.password().context("metadata.password_file")?;
    let mut options = MySqlOptions {
        tls: match cfg.tls {
            DatabaseTls::Disable => MySqlTls::Disable,
            DatabaseTls::Require => MySqlTls::Require,
            DatabaseTls::VerifyCa => MySqlTls::VerifyCa,
            DatabaseTls::VerifyFull => MySqlTls::VerifyFull,
        },
        ca_file: cfg.ca_file.clone(),
        pool_size: cfg.pool_size,
        connect_timeout: cfg.connect_timeout,
        max_retries: cfg.max_retries,
        ..MySqlOptions::new(cfg.url.clone())
    };
    if let Some(password) = &password {
        options.set_password(password.expose());
    }
    let store = MySqlStore::open(&options)
        .await
        .context("metadata.url: cannot connect to the MySQL database")?;
    tracing::info!(target = store.target(), "metadata store: MySQL");
    Ok(store)
}

/// Removes this operator command's spool directory once it is done (it is empty unless an
/// upload failed to clean up, in which case it stays for the server's recovery).
pub fn remove_operator_spool(cfg: &Config) {
    let (dir, _) = coffer_storage::operator_spool(&cfg.storage.spool_dir, &cfg.node_name);
    let _ = std::fs::remove_dir(dir);
}

/// Builds the whole vault for `role`.
pub async fn open_vault(cfg: &Config, role: Role) -> anyhow::Result<Vault> {
    ensure_data_dir(cfg)?;
    let meta = open_meta(cfg).await?;
    let primary = open_store(&cfg.storage.primary, "storage.primary").await?;
    let replica = match &cfg.storage.replica {
        Some(r) => Some(open_store(r, "storage.replica").await?),
        None => None,
    };
    let keys = open_key_ring(cfg).await?;
    let (spool_dir, node_name) = match role {
        Role::Server => (cfg.storage.spool_dir.clone(), cfg.node_name.clone()),
        Role::Operator => coffer_storage::operator_spool(&cfg.storage.spool_dir, &cfg.node_name),
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
        partial_uploads: match cfg.uploads.keep_partial {
            coffer_config::KeepPartial::NewFiles => PartialUploads::KeepNewFiles,
            coffer_config::KeepPartial::Never => PartialUploads::Discard,
        },
        key_cache: cfg.keys.cache_ttl(),
        free_space_floor: FreeSpaceFloor {
            min_free_bytes: cfg.uploads.min_free_bytes,
            min_free_percent: cfg.uploads.min_free_percent,
        },
        local_store_dir: match &cfg.storage.primary {
            StoreConfig::Local { path } => Some(path.clone()),
            StoreConfig::S3(_) => None,
        },
        inline_max_bytes: cfg.uploads.inline_max_bytes,
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

#[cfg(test)]
mod tests {
    /// The configuration crate depends on `coffer-format` only (the chunk-size limits come from
    /// there), not on the storage crate, so it keeps its own copy of the inline-object limits,
    /// which are the writer's and the database's, not the format's: a default or ceiling
    /// changed on one side only would let the configuration accept what the storage refuses,
    /// or document another default.
    #[test]
    fn the_configuration_and_the_storage_agree_on_inline_limits() {
        assert_eq!(
            coffer_config::MAX_INLINE_BYTES,
            coffer_storage::MAX_INLINE_BYTES
        );
        assert_eq!(
            coffer_config::RawUploads::default().inline_max_bytes,
            coffer_storage::DEFAULT_INLINE_MAX_BYTES
        );
    }
}
