//! The validated configuration the server is wired from, and its redacted dump.

use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::raw::{
    RawAdmin, RawAuth, RawConfig, RawFtp, RawHttps, RawKey, RawKeyRotation, RawKeys, RawLimits,
    RawLog, RawMetadata, RawSftp, RawStorage, RawStore, RawTls, RawUploads,
};
use crate::secret::Secret;

/// A configuration that passed [`RawConfig::validate`]: addresses are parsed,
/// paths are absolute with `<data_dir>` resolved, durations are typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Absolute directory holding everything the embedded default keeps on disk.
    pub data_dir: PathBuf,
    /// Identifies this node's spool in a cluster (`[A-Za-z0-9._-]`, 1..=64).
    pub node_name: String,
    /// Logging.
    pub log: LogConfig,
    /// The admin listener.
    pub admin: AdminConfig,
    /// The SFTP front end.
    pub sftp: SftpConfig,
    /// The FTP/FTPES front end.
    pub ftp: FtpConfig,
    /// The HTTPS front end.
    pub https: HttpsConfig,
    /// The certificate shared by FTPES and HTTPS.
    pub tls: TlsConfig,
    /// Chunking, spooling and the object stores.
    pub storage: StorageConfig,
    /// The master keys.
    pub keys: KeysConfig,
    /// The metadata database.
    pub metadata: MetadataConfig,
    /// Login throttling.
    pub auth: AuthConfig,
    /// Uploads cut off before the client finished them.
    pub uploads: UploadsConfig,
    /// What a peer that has not logged in may hold.
    pub limits: LimitsConfig,
}

/// What an interrupted upload leaves behind (`uploads.keep_partial`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeepPartial {
    /// Keep the bytes received as the file when the name did not exist before (resumable).
    NewFiles,
    /// Keep nothing.
    Never,
}

impl KeepPartial {
    /// The name used in the configuration file.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NewFiles => "new-files",
            Self::Never => "never",
        }
    }
}

/// `[uploads]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadsConfig {
    /// What an interrupted upload leaves; it never replaces a complete version.
    pub keep_partial: KeepPartial,
    /// Bytes the spool's disk and a local object store's keep free: uploads are refused below.
    pub min_free_bytes: u64,
    /// Percent of those disks kept free (the larger of the two floors applies).
    pub min_free_percent: u8,
    /// Sealed objects up to this many bytes are stored in their metadata row (0: never).
    pub inline_max_bytes: u32,
}

/// `[limits]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitsConfig {
    /// Connections not yet logged in, per front end, all addresses (> 0).
    pub pre_auth_connections: u32,
    /// Connections not yet logged in, per front end, per source address (> 0, ≤ the total).
    pub pre_auth_per_address: u32,
    /// Time a connection may take to log in (> 0).
    pub login_grace: Duration,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

impl LogFormat {
    /// The name used in the configuration file.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Json => "json",
        }
    }
}

/// `[log]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// A `tracing` filter directive (not empty).
    pub level: String,
    /// Text or JSON lines.
    pub format: LogFormat,
}

/// `[admin]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminConfig {
    /// Where `/healthz` and `/readyz` are served; always enabled.
    pub listen: SocketAddr,
}

/// `[sftp]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SftpConfig {
    /// Whether the SFTP listener runs.
    pub enabled: bool,
    /// Where the SFTP listener binds.
    pub listen: SocketAddr,
    /// Absolute directory of the SSH host keys.
    pub host_key_dir: PathBuf,
    /// Maximum concurrent SSH sessions (> 0).
    pub max_sessions: u32,
    /// Inactivity after which a session is closed (> 0).
    pub idle_timeout: Duration,
}

/// `[ftp]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FtpConfig {
    /// Whether the FTP listeners run.
    pub enabled: bool,
    /// Where the explicit-FTPS control listener binds.
    pub listen: SocketAddr,
    /// Passive data ports; `start >= 1024`, no listener port inside.
    pub passive_ports: RangeInclusive<u16>,
    /// Address advertised in PASV replies; `None` means the listen address.
    pub passive_host: Option<String>,
    /// Where the implicit-FTPS listener binds; `None` means no such listener.
    pub implicit_listen: Option<SocketAddr>,
    /// Whether connections start with a PROXY protocol v2 header.
    pub proxy_protocol: bool,
    /// Inactivity after which a control connection is closed (> 0).
    pub idle_timeout: Duration,
}

/// `[https]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpsConfig {
    /// Whether the HTTPS listener runs.
    pub enabled: bool,
    /// Where the HTTPS listener binds.
    pub listen: SocketAddr,
    /// Inactivity after which a web session expires (> 0).
    pub session_idle: Duration,
}

/// `[tls]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// Where the certificate comes from.
    pub certificate: TlsCertificate,
}

/// The source of the TLS certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsCertificate {
    /// Generate a self-signed certificate in `dir` (`<data_dir>/tls`) on
    /// first start and reuse it afterwards.
    SelfSigned {
        /// Absolute directory of the generated certificate and key.
        dir: PathBuf,
    },
    /// Operator-supplied PEM files.
    Files {
        /// Absolute path of the PEM certificate chain.
        cert_file: PathBuf,
        /// Absolute path of the PEM private key.
        key_file: PathBuf,
    },
}

/// `[storage]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageConfig {
    /// Plaintext bytes per sealed chunk, 4096..=16777216.
    pub chunk_size: u32,
    /// Absolute directory of in-flight uploads.
    pub spool_dir: PathBuf,
    /// Per open upload: out-of-order bytes held in memory (>= `chunk_size`).
    pub max_buffered_write_bytes: u64,
    /// Where ciphertext is stored first.
    pub primary: StoreConfig,
    /// Where ciphertext is replicated to; `None` turns replication off.
    pub replica: Option<StoreConfig>,
    /// Whether `coffer serve` runs the garbage collector (deletes unreferenced objects).
    pub gc_in_serve: bool,
}

/// An object store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreConfig {
    /// A directory on a local file system.
    Local {
        /// Absolute directory holding the objects.
        path: PathBuf,
    },
    /// A bucket of AWS S3 or an S3-compatible server.
    S3(S3StoreConfig),
}

/// `kind = "s3"`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3StoreConfig {
    /// A valid S3 bucket name.
    pub bucket: String,
    /// The bucket's region (not empty).
    pub region: String,
    /// An `http://` or `https://` endpoint URL; `None` means AWS.
    pub endpoint: Option<String>,
    /// Path-style addressing instead of virtual-hosted style.
    pub path_style: bool,
    /// Where the credentials come from.
    pub credentials: S3Auth,
    /// Bytes per multipart part: at least 5 MiB, at most 5 GiB, whole sealed chunks.
    pub part_size: u64,
}

/// The credentials of an S3 store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum S3Auth {
    /// The standard AWS chain: environment, profile, web identity, container, instance role.
    DefaultChain,
    /// A static key pair.
    Static {
        /// The access key id.
        access_key_id: String,
        /// The secret access key, or the file holding it.
        secret_access_key: S3SecretKey,
    },
}

/// A secret access key given in the configuration, or the file to read it from at start.
#[derive(Debug, Clone)]
pub enum S3SecretKey {
    /// The value itself (shared, never copied; `Debug` shows `<redacted>`).
    Inline(Arc<Secret>),
    /// An absolute path of a file (mode 0600) holding the key; read with
    /// [`read_secret_file`](crate::read_secret_file) when the store is opened.
    File(PathBuf),
}

impl PartialEq for S3SecretKey {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Inline(a), Self::Inline(b)) => {
                constant_time_eq(a.expose().as_bytes(), b.expose().as_bytes())
            }
            (Self::File(a), Self::File(b)) => a == b,
            _ => false,
        }
    }
}

impl Eq for S3SecretKey {}

/// Compares two secrets without a data-dependent early exit (the length is not secret).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `[keys]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeysConfig {
    /// The master key of the primary region.
    pub primary: KeyConfig,
    /// The master key of the replica region (distinct from the primary).
    pub replica: KeyConfig,
    /// Seconds an unwrapped tenant key may stay in memory (1..=86400).
    pub cache_secs: u64,
    /// The rotation policy.
    pub rotation: KeyRotationConfig,
}

impl KeysConfig {
    /// [`KeysConfig::cache_secs`] as a duration.
    #[must_use]
    pub fn cache_ttl(&self) -> Duration {
        Duration::from_secs(self.cache_secs)
    }
}

/// `[keys.rotation]`, validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyRotationConfig {
    /// A tenant key older than this many days is overdue; `0` means never overdue.
    pub max_age_days: u32,
    /// Whether `coffer serve` rotates overdue tenant keys itself.
    pub automatic: bool,
}

/// A master key provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyConfig {
    /// A local key file (mode 0600), generated on first start.
    Local {
        /// Absolute path of the key file.
        path: PathBuf,
        /// Absolute paths of older key files, used only to unwrap copies made under them.
        previous_paths: Vec<PathBuf>,
        /// A KMS this region reaches for customer-managed tenant keys, if configured.
        kms: Option<KmsConnectionConfig>,
    },
    /// A key of AWS KMS or a KMS-compatible server.
    AwsKms {
        /// Key id, key ARN, alias name or alias ARN, as configured (not empty).
        key_id: String,
        /// The KMS that holds it.
        kms: KmsConnectionConfig,
    },
}

impl KeyConfig {
    /// `"local"` or `"aws-kms"`.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Local { .. } => "local",
            Self::AwsKms { .. } => "aws-kms",
        }
    }

    /// The KMS this region reaches: its master key's, or the one a local region names.
    #[must_use]
    pub fn kms(&self) -> Option<&KmsConnectionConfig> {
        match self {
            Self::Local { kms, .. } => kms.as_ref(),
            Self::AwsKms { kms, .. } => Some(kms),
        }
    }
}

/// How to reach one region's KMS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KmsConnectionConfig {
    /// The KMS region (not empty).
    pub region: String,
    /// An `http://` or `https://` endpoint URL; `None` means AWS.
    pub endpoint: Option<String>,
    /// Where the credentials come from (as for an S3 store).
    pub credentials: S3Auth,
}

/// `[metadata]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataConfig {
    /// `sqlite://` URL whose database path is absolute (or `:memory:`), or a
    /// `mysql://USER@HOST[:PORT]/DATABASE` URL, which never holds a password.
    pub url: String,
    /// MySQL: absolute path of the password file (mode 0600); `None` reads
    /// [`METADATA_PASSWORD_ENV`] (or logs in without a password if that is unset).
    pub password_file: Option<PathBuf>,
    /// MySQL: how the connection is protected.
    pub tls: DatabaseTls,
    /// MySQL: absolute path of the PEM CA bundle; `None` uses the built-in web roots.
    pub ca_file: Option<PathBuf>,
    /// MySQL: most connections one node keeps open (1..=1000).
    pub pool_size: u32,
    /// MySQL: how long to wait for a connection (> 0).
    pub connect_timeout: Duration,
    /// MySQL: retries of a transient failure.
    pub max_retries: u32,
    /// Apply pending migrations at start; otherwise a schema other than this build's is refused.
    pub migrate_on_start: bool,
}

/// The environment variable holding the MySQL password when `metadata.password_file` is unset.
pub const METADATA_PASSWORD_ENV: &str = "COFFER_METADATA_PASSWORD";

impl MetadataConfig {
    /// `true` for a `mysql://` URL.
    #[must_use]
    pub fn is_mysql(&self) -> bool {
        self.url.starts_with("mysql://")
    }

    /// The MySQL password: from `password_file` (which must be mode 0600), else from
    /// [`METADATA_PASSWORD_ENV`], else `None`.
    ///
    /// # Errors
    /// As [`read_secret_file`](crate::read_secret_file) for `metadata.password_file`.
    pub fn password(&self) -> Result<Option<Secret>, crate::ConfigError> {
        if let Some(path) = &self.password_file {
            return crate::read_secret_file("metadata.password_file", path).map(Some);
        }
        Ok(std::env::var(METADATA_PASSWORD_ENV)
            .ok()
            .filter(|value| !value.is_empty())
            .map(Secret::new))
    }
}

/// `metadata.tls`: how the connection to a MySQL server is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatabaseTls {
    /// `"disable"`: plain TCP.
    Disable,
    /// `"require"`: TLS, the server's certificate is not checked.
    Require,
    /// `"verify-ca"`: TLS, the certificate must chain to `ca_file`.
    VerifyCa,
    /// `"verify-full"`: as `verify-ca`, and the certificate must name the URL's host.
    VerifyFull,
}

impl DatabaseTls {
    /// The configuration spelling.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Disable => "disable",
            Self::Require => "require",
            Self::VerifyCa => "verify-ca",
            Self::VerifyFull => "verify-full",
        }
    }
}

/// `[auth]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthConfig {
    /// Failed logins within `failure_window` before lockout (> 0).
    pub max_failures: u32,
    /// The window over which failures are counted (> 0).
    pub failure_window: Duration,
    /// How long a locked-out account stays locked (> 0).
    pub lockout: Duration,
}

/// What secret values are replaced with in [`Config::to_redacted_toml`].
pub const REDACTED: &str = "<redacted>";

impl Config {
    /// The effective configuration as a TOML file, with every secret replaced
    /// by `"<redacted>"`. Loading the output again yields an equal `Config`
    /// (as long as it holds no secrets).
    #[must_use]
    pub fn to_redacted_toml(&self) -> String {
        let raw = self.to_raw();
        let body = toml::to_string(&raw).unwrap_or_else(|error| {
            // Every RawConfig field is a string, number, bool or table, which
            // TOML can always represent; say so rather than panic if not.
            format!("# cannot render the effective configuration: {error}\n")
        });
        format!("# Effective Coffer configuration; secrets are shown as \"{REDACTED}\".\n{body}")
    }

    /// The raw shape that validates back into this configuration.
    fn to_raw(&self) -> RawConfig {
        RawConfig {
            data_dir: path_text(&self.data_dir),
            node_name: self.node_name.clone(),
            log: RawLog {
                level: self.log.level.clone(),
                format: self.log.format.as_str().to_owned(),
            },
            admin: RawAdmin {
                listen: self.admin.listen.to_string(),
            },
            sftp: self.sftp.to_raw(),
            ftp: self.ftp.to_raw(),
            https: RawHttps {
                enabled: self.https.enabled,
                listen: self.https.listen.to_string(),
                session_idle_secs: self.https.session_idle.as_secs(),
            },
            tls: self.tls.to_raw(),
            storage: self.storage.to_raw(),
            keys: RawKeys {
                primary: self.keys.primary.to_raw(),
                replica: self.keys.replica.to_raw(),
                cache_secs: self.keys.cache_secs,
                rotation: RawKeyRotation {
                    max_age_days: self.keys.rotation.max_age_days,
                    automatic: self.keys.rotation.automatic,
                },
            },
            metadata: self.metadata.to_raw(),
            uploads: RawUploads {
                keep_partial: self.uploads.keep_partial.as_str().to_owned(),
                min_free_bytes: self.uploads.min_free_bytes,
                min_free_percent: self.uploads.min_free_percent,
                inline_max_bytes: self.uploads.inline_max_bytes,
            },
            limits: RawLimits {
                pre_auth_connections: self.limits.pre_auth_connections,
                pre_auth_per_address: self.limits.pre_auth_per_address,
                login_grace_secs: self.limits.login_grace.as_secs(),
            },
            auth: RawAuth {
                max_failures: self.auth.max_failures,
                failure_window_secs: self.auth.failure_window.as_secs(),
                lockout_secs: self.auth.lockout.as_secs(),
            },
        }
    }
}

impl MetadataConfig {
    fn to_raw(&self) -> RawMetadata {
        let optional_path =
            |path: &Option<PathBuf>| path.as_deref().map(path_text).unwrap_or_default();
        RawMetadata {
            url: self.url.clone(),
            password_file: optional_path(&self.password_file),
            tls: self.tls.as_str().into(),
            ca_file: optional_path(&self.ca_file),
            pool_size: self.pool_size,
            connect_timeout_secs: self.connect_timeout.as_secs(),
            max_retries: self.max_retries,
            migrate_on_start: self.migrate_on_start,
        }
    }
}

impl SftpConfig {
    fn to_raw(&self) -> RawSftp {
        RawSftp {
            enabled: self.enabled,
            listen: self.listen.to_string(),
            host_key_dir: path_text(&self.host_key_dir),
            max_sessions: self.max_sessions,
            idle_timeout_secs: self.idle_timeout.as_secs(),
            // Folded into `uploads.keep_partial` by validation.
            keep_partial_uploads: true,
        }
    }
}

impl FtpConfig {
    fn to_raw(&self) -> RawFtp {
        RawFtp {
            enabled: self.enabled,
            listen: self.listen.to_string(),
            passive_ports: format!(
                "{}-{}",
                self.passive_ports.start(),
                self.passive_ports.end()
            ),
            passive_host: self.passive_host.clone().unwrap_or_default(),
            implicit_listen: self
                .implicit_listen
                .map(|address| address.to_string())
                .unwrap_or_default(),
            proxy_protocol: self.proxy_protocol,
            idle_timeout_secs: self.idle_timeout.as_secs(),
        }
    }
}

impl TlsConfig {
    fn to_raw(&self) -> RawTls {
        match &self.certificate {
            TlsCertificate::SelfSigned { .. } => RawTls::default(),
            TlsCertificate::Files {
                cert_file,
                key_file,
            } => RawTls {
                cert_file: path_text(cert_file),
                key_file: path_text(key_file),
            },
        }
    }
}

impl StorageConfig {
    fn to_raw(&self) -> RawStorage {
        RawStorage {
            chunk_size: self.chunk_size,
            spool_dir: path_text(&self.spool_dir),
            max_buffered_write_bytes: self.max_buffered_write_bytes,
            primary: self.primary.to_raw(),
            replica: self
                .replica
                .as_ref()
                .map_or(RawStore::None {}, StoreConfig::to_raw),
            gc_in_serve: Some(self.gc_in_serve),
        }
    }
}

impl StoreConfig {
    fn to_raw(&self) -> RawStore {
        match self {
            Self::Local { path } => RawStore::Local {
                path: path_text(path),
            },
            Self::S3(s3) => s3.to_raw(),
        }
    }
}

impl S3Auth {
    /// `(access_key_id, secret_access_key, secret_access_key_file)` as written in the
    /// file, with an inline secret redacted.
    fn to_raw(&self) -> (String, String, String) {
        match self {
            Self::DefaultChain => (String::new(), String::new(), String::new()),
            Self::Static {
                access_key_id,
                secret_access_key: S3SecretKey::Inline(_),
            } => (access_key_id.clone(), REDACTED.to_owned(), String::new()),
            Self::Static {
                access_key_id,
                secret_access_key: S3SecretKey::File(path),
            } => (access_key_id.clone(), String::new(), path_text(path)),
        }
    }
}

impl S3StoreConfig {
    fn to_raw(&self) -> RawStore {
        let (access_key_id, secret_access_key, secret_access_key_file) = self.credentials.to_raw();
        RawStore::S3 {
            bucket: self.bucket.clone(),
            region: self.region.clone(),
            endpoint: self.endpoint.clone().unwrap_or_default(),
            path_style: self.path_style,
            access_key_id,
            secret_access_key,
            secret_access_key_file,
            part_size: self.part_size,
        }
    }
}

impl KeyConfig {
    fn to_raw(&self) -> RawKey {
        match self {
            Self::Local {
                path,
                previous_paths,
                kms,
            } => {
                let (
                    kms_region,
                    kms_endpoint,
                    (access_key_id, secret_access_key, secret_access_key_file),
                ) = match kms {
                    Some(kms) => (
                        kms.region.clone(),
                        kms.endpoint.clone().unwrap_or_default(),
                        kms.credentials.to_raw(),
                    ),
                    None => (String::new(), String::new(), S3Auth::DefaultChain.to_raw()),
                };
                RawKey::Local {
                    path: path_text(path),
                    previous_paths: previous_paths.iter().map(|p| path_text(p)).collect(),
                    kms_region,
                    kms_endpoint,
                    access_key_id,
                    secret_access_key,
                    secret_access_key_file,
                }
            }
            Self::AwsKms { key_id, kms } => {
                let (access_key_id, secret_access_key, secret_access_key_file) =
                    kms.credentials.to_raw();
                RawKey::AwsKms {
                    key_id: key_id.clone(),
                    region: kms.region.clone(),
                    endpoint: kms.endpoint.clone().unwrap_or_default(),
                    access_key_id,
                    secret_access_key,
                    secret_access_key_file,
                }
            }
        }
    }
}

/// Paths in a `Config` were built from UTF-8 strings joined to the current
/// directory, so they are UTF-8 unless the current directory is not.
fn path_text(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}
