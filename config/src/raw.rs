//! The operator-facing configuration shape, exactly as written in the TOML file.
//!
//! Every field has a default (a function, so `docs/CONFIG.md` and the code
//! cannot disagree about where it comes from) and every table refuses unknown
//! fields. Paths may contain `<data_dir>`, replaced by the resolved data
//! directory during [`RawConfig::validate`](crate::RawConfig::validate).

use serde::{Deserialize, Serialize};

/// The placeholder replaced by the resolved `data_dir` inside path strings.
pub const DATA_DIR_PLACEHOLDER: &str = "<data_dir>";

/// The whole configuration file before validation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Directory holding everything the embedded default keeps on disk.
    #[serde(default = "default_data_dir")]
    pub data_dir: String,
    /// Identifies this node's spool in a cluster.
    #[serde(default = "default_node_name")]
    pub node_name: String,
    /// Logging.
    #[serde(default)]
    pub log: RawLog,
    /// The admin listener (`/healthz`, `/readyz`).
    #[serde(default)]
    pub admin: RawAdmin,
    /// The SFTP front end.
    #[serde(default)]
    pub sftp: RawSftp,
    /// The FTP/FTPES front end.
    #[serde(default)]
    pub ftp: RawFtp,
    /// The HTTPS front end.
    #[serde(default)]
    pub https: RawHttps,
    /// The certificate shared by FTPES and HTTPS.
    #[serde(default)]
    pub tls: RawTls,
    /// Chunking, spooling and the object stores.
    #[serde(default)]
    pub storage: RawStorage,
    /// The master keys of the primary and replica regions.
    #[serde(default)]
    pub keys: RawKeys,
    /// The metadata database.
    #[serde(default)]
    pub metadata: RawMetadata,
    /// Login throttling.
    #[serde(default)]
    pub auth: RawAuth,
    /// Uploads cut off before the client finished them, on every protocol.
    #[serde(default)]
    pub uploads: RawUploads,
    /// What a peer that has not logged in may hold, on every protocol.
    #[serde(default)]
    pub limits: RawLimits,
}

/// `[log]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    /// A `tracing` filter directive, e.g. `info` or `coffer=debug,info`.
    #[serde(default = "default_log_level")]
    pub level: String,
    /// `text` or `json`.
    #[serde(default = "default_log_format")]
    pub format: String,
}

/// `[admin]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    /// Socket address of the admin HTTP listener.
    #[serde(default = "default_admin_listen")]
    pub listen: String,
}

/// `[sftp]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSftp {
    /// Whether the SFTP listener runs.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Socket address of the SFTP listener.
    #[serde(default = "default_sftp_listen")]
    pub listen: String,
    /// Directory of the SSH host keys, generated there on first start.
    #[serde(default = "default_host_key_dir")]
    pub host_key_dir: String,
    /// Maximum concurrent SSH sessions.
    #[serde(default = "default_max_sessions")]
    pub max_sessions: u32,
    /// Seconds of inactivity before a session is closed.
    #[serde(default = "default_idle_timeout_secs")]
    pub idle_timeout_secs: u64,
    /// Deprecated: use `uploads.keep_partial`. `false` means `uploads.keep_partial = "never"`;
    /// `true` (the default) leaves `uploads.keep_partial` in charge.
    #[serde(default = "default_true")]
    pub keep_partial_uploads: bool,
}

/// `[ftp]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFtp {
    /// Whether the FTP listeners run.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Socket address of the explicit-FTPS (AUTH TLS) control listener.
    #[serde(default = "default_ftp_listen")]
    pub listen: String,
    /// Passive data ports, `"A-B"` inclusive.
    #[serde(default = "default_passive_ports")]
    pub passive_ports: String,
    /// Address advertised in PASV replies; `""` means the listen address.
    #[serde(default)]
    pub passive_host: String,
    /// Socket address of an implicit-FTPS listener; `""` means none.
    #[serde(default)]
    pub implicit_listen: String,
    /// Whether connections start with a PROXY protocol v2 header.
    #[serde(default)]
    pub proxy_protocol: bool,
    /// Seconds of inactivity before a control connection is closed.
    #[serde(default = "default_idle_timeout_secs")]
    pub idle_timeout_secs: u64,
}

/// `[https]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHttps {
    /// Whether the HTTPS listener runs.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Socket address of the HTTPS listener.
    #[serde(default = "default_https_listen")]
    pub listen: String,
    /// Seconds of inactivity before a web session expires.
    #[serde(default = "default_session_idle_secs")]
    pub session_idle_secs: u64,
}

/// `[tls]`
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    /// PEM certificate chain; `""` means a self-signed certificate generated
    /// under `<data_dir>/tls` on first start.
    #[serde(default)]
    pub cert_file: String,
    /// PEM private key matching `cert_file`; `""` together with `cert_file`.
    #[serde(default)]
    pub key_file: String,
}

/// `[storage]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStorage {
    /// Plaintext bytes per sealed chunk, 4096..=16777216.
    #[serde(default = "default_chunk_size")]
    pub chunk_size: u32,
    /// Local directory of in-flight uploads.
    #[serde(default = "default_spool_dir")]
    pub spool_dir: String,
    /// Per open upload: out-of-order bytes held in memory before refusal.
    #[serde(default = "default_max_buffered_write_bytes")]
    pub max_buffered_write_bytes: u64,
    /// Where ciphertext is stored first.
    #[serde(default = "default_primary_store")]
    pub primary: RawStore,
    /// Where ciphertext is copied to; `kind = "none"` turns replication off.
    #[serde(default = "default_replica_store")]
    pub replica: RawStore,
    /// Whether `coffer serve` deletes unreferenced objects itself; unset means yes for a
    /// local primary store and no for S3 (run `coffer gc` with privileged credentials).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gc_in_serve: Option<bool>,
}

/// An object store, chosen by `kind`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum RawStore {
    /// A directory on a local file system.
    Local {
        /// The directory holding the objects.
        path: String,
    },
    /// A bucket of AWS S3 or an S3-compatible server.
    S3 {
        /// The bucket holding the objects.
        bucket: String,
        /// The bucket's region.
        #[serde(default = "default_s3_region")]
        region: String,
        /// Endpoint URL of an S3-compatible server; `""` means AWS.
        #[serde(default)]
        endpoint: String,
        /// Path-style addressing (`endpoint/bucket/key`) instead of virtual-hosted style.
        #[serde(default)]
        path_style: bool,
        /// Static access key id; `""` means the standard AWS credential chain.
        #[serde(default)]
        access_key_id: String,
        /// The secret key of `access_key_id` (prefer `secret_access_key_file`).
        #[serde(default)]
        secret_access_key: String,
        /// A file (mode 0600) holding the secret key of `access_key_id`.
        #[serde(default)]
        secret_access_key_file: String,
        /// Bytes per multipart part; `0` picks about 16 MiB of whole sealed chunks.
        #[serde(default)]
        part_size: u64,
    },
    /// No store; accepted for the replica only.
    None {},
}

/// `[keys]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKeys {
    /// The master key of the primary region.
    #[serde(default = "default_primary_key")]
    pub primary: RawKey,
    /// The master key of the replica region.
    #[serde(default = "default_replica_key")]
    pub replica: RawKey,
    /// Seconds an unwrapped tenant key may stay in memory before it is unwrapped again
    /// (so a revoked KMS key takes effect within this bound).
    #[serde(default = "default_key_cache_secs")]
    pub cache_secs: u64,
    /// Master and tenant key rotation policy.
    #[serde(default)]
    pub rotation: RawKeyRotation,
}

/// `[keys.rotation]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKeyRotation {
    /// A tenant key older than this many days is overdue; `0` means never overdue.
    #[serde(default = "default_rotation_max_age_days")]
    pub max_age_days: u32,
    /// Whether `coffer serve` rotates overdue tenant keys itself.
    #[serde(default)]
    pub automatic: bool,
}

/// A master key provider, chosen by `kind`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum RawKey {
    /// A key file (mode 0600), generated on first start.
    Local {
        /// The key file.
        path: String,
        /// Older key files, still used to unwrap copies a rotation has not moved yet.
        #[serde(default)]
        previous_paths: Vec<String>,
        /// Region of a KMS reached for customer-managed tenant keys; `""` means none.
        #[serde(default)]
        kms_region: String,
        /// Endpoint URL of that KMS; `""` means AWS's endpoint for `kms_region`.
        #[serde(default)]
        kms_endpoint: String,
        /// Static access key id for that KMS; `""` means the standard AWS credential chain.
        #[serde(default)]
        access_key_id: String,
        /// The secret key of `access_key_id` (prefer `secret_access_key_file`).
        #[serde(default)]
        secret_access_key: String,
        /// A file (mode 0600) holding the secret key of `access_key_id`.
        #[serde(default)]
        secret_access_key_file: String,
    },
    /// A key of AWS KMS or a KMS-compatible server.
    #[serde(rename = "aws-kms")]
    AwsKms {
        /// Key id, key ARN, alias name (`alias/...`) or alias ARN.
        #[serde(default)]
        key_id: String,
        /// The KMS region, e.g. `eu-west-1`.
        #[serde(default)]
        region: String,
        /// Endpoint URL of the KMS; `""` means AWS's endpoint for `region`.
        #[serde(default)]
        endpoint: String,
        /// Static access key id; `""` means the standard AWS credential chain.
        #[serde(default)]
        access_key_id: String,
        /// The secret key of `access_key_id` (prefer `secret_access_key_file`).
        #[serde(default)]
        secret_access_key: String,
        /// A file (mode 0600) holding the secret key of `access_key_id`.
        #[serde(default)]
        secret_access_key_file: String,
    },
}

impl RawKey {
    /// A local key file and nothing else.
    #[must_use]
    pub fn local(path: impl Into<String>) -> Self {
        Self::Local {
            path: path.into(),
            previous_paths: Vec::new(),
            kms_region: String::new(),
            kms_endpoint: String::new(),
            access_key_id: String::new(),
            secret_access_key: String::new(),
            secret_access_key_file: String::new(),
        }
    }
}

/// `[metadata]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMetadata {
    /// Database URL: `sqlite://PATH` or `mysql://USER@HOST[:PORT]/DATABASE` (no password).
    #[serde(default = "default_metadata_url")]
    pub url: String,
    /// MySQL: file (mode 0600) holding the password; "" reads `COFFER_METADATA_PASSWORD`.
    #[serde(default)]
    pub password_file: String,
    /// MySQL: "disable", "require", "verify-ca" or "verify-full".
    #[serde(default = "default_metadata_tls")]
    pub tls: String,
    /// MySQL: PEM CA bundle that signs the server's certificate; "" uses the web roots.
    #[serde(default)]
    pub ca_file: String,
    /// MySQL: most connections one node keeps open.
    #[serde(default = "default_metadata_pool_size")]
    pub pool_size: u32,
    /// MySQL: seconds to wait for a connection before a request fails as unavailable.
    #[serde(default = "default_metadata_connect_timeout_secs")]
    pub connect_timeout_secs: u64,
    /// MySQL: retries of a transient failure (deadlock, lock wait timeout, lost connection).
    #[serde(default = "default_metadata_max_retries")]
    pub max_retries: u32,
    /// Apply pending schema migrations when the node starts (else only `coffer migrate`).
    #[serde(default = "default_true")]
    pub migrate_on_start: bool,
}

/// `[auth]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    /// Failed logins within `failure_window_secs` before lockout.
    #[serde(default = "default_max_failures")]
    pub max_failures: u32,
    /// The window, in seconds, over which failures are counted.
    #[serde(default = "default_failure_window_secs")]
    pub failure_window_secs: u64,
    /// How long, in seconds, a locked-out account stays locked.
    #[serde(default = "default_lockout_secs")]
    pub lockout_secs: u64,
}

/// `[uploads]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUploads {
    /// What an upload cut off by a lost connection (or, on FTPES, a data connection closed
    /// without TLS `close_notify`) leaves: `"new-files"` keeps the bytes received as the file
    /// when the name did not exist before, so a client can resume it; `"never"` keeps nothing.
    /// An interrupted upload never replaces a complete existing version, whatever this says.
    #[serde(default = "default_keep_partial")]
    pub keep_partial: String,
    /// Bytes that must stay free on the spool's disk and on a local object store's disk: below
    /// this a new upload is refused (`insufficient_storage`: FTP 452, HTTP 507, an SFTP failure
    /// naming it), and an upload in flight fails once less than half of it is left. The larger
    /// of this and `min_free_percent` applies; 0 and 0 turn the check off.
    #[serde(default = "default_min_free_bytes")]
    pub min_free_bytes: u64,
    /// Percent of those disks' size that must stay free (0 to 90).
    #[serde(default = "default_min_free_percent")]
    pub min_free_percent: u8,
    /// A new file whose sealed object (the encrypted bytes, a little over the plaintext) is at
    /// most this many bytes is stored in its metadata row instead of the primary object store:
    /// one database commit instead of an object write and its flushes (or an S3 request).
    /// It is still copied to the replica. 0 turns it off; at most 1048576.
    #[serde(default = "default_inline_max_bytes")]
    pub inline_max_bytes: u32,
}

/// `[limits]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    /// Connections that have not logged in yet, per front end, from all addresses together.
    #[serde(default = "default_pre_auth_connections")]
    pub pre_auth_connections: u32,
    /// Connections that have not logged in yet, per front end, from one source address (IPv4
    /// address or IPv6 /64).
    #[serde(default = "default_pre_auth_per_address")]
    pub pre_auth_per_address: u32,
    /// Seconds a connection may take to log in (SSH and FTP) or to send its first request
    /// head (HTTPS) before it is closed.
    #[serde(default = "default_login_grace_secs")]
    pub login_grace_secs: u64,
}

fn default_keep_partial() -> String {
    "new-files".to_owned()
}

fn default_min_free_bytes() -> u64 {
    1024 * 1024 * 1024
}

/// Default of `uploads.inline_max_bytes` (docs/PERFORMANCE.md, "Small files inline").
pub const DEFAULT_INLINE_MAX_BYTES: u32 = 16 * 1024;

fn default_inline_max_bytes() -> u32 {
    DEFAULT_INLINE_MAX_BYTES
}

fn default_min_free_percent() -> u8 {
    1
}

fn default_pre_auth_connections() -> u32 {
    256
}

fn default_pre_auth_per_address() -> u32 {
    32
}

fn default_login_grace_secs() -> u64 {
    30
}

fn default_data_dir() -> String {
    "./coffer-data".to_owned()
}

/// The node name used when the file does not set one: the host name from
/// `/etc/hostname` when it is a valid node name, else `coffer`.
fn default_node_name() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|name| name.trim().to_owned())
        .filter(|name| crate::validate::is_valid_node_name(name))
        .unwrap_or_else(|| "coffer".to_owned())
}

fn default_log_level() -> String {
    "info".to_owned()
}

fn default_log_format() -> String {
    "text".to_owned()
}

fn default_admin_listen() -> String {
    "127.0.0.1:9090".to_owned()
}

fn default_true() -> bool {
    true
}

fn default_sftp_listen() -> String {
    "0.0.0.0:2222".to_owned()
}

fn default_host_key_dir() -> String {
    format!("{DATA_DIR_PLACEHOLDER}/ssh")
}

fn default_max_sessions() -> u32 {
    512
}

fn default_idle_timeout_secs() -> u64 {
    600
}

fn default_ftp_listen() -> String {
    "0.0.0.0:2121".to_owned()
}

fn default_passive_ports() -> String {
    "50000-50099".to_owned()
}

fn default_https_listen() -> String {
    "0.0.0.0:8443".to_owned()
}

fn default_session_idle_secs() -> u64 {
    1800
}

fn default_chunk_size() -> u32 {
    65536
}

fn default_spool_dir() -> String {
    format!("{DATA_DIR_PLACEHOLDER}/spool")
}

fn default_max_buffered_write_bytes() -> u64 {
    64 * 1024 * 1024
}

fn default_primary_store() -> RawStore {
    RawStore::Local {
        path: format!("{DATA_DIR_PLACEHOLDER}/store/primary"),
    }
}

fn default_replica_store() -> RawStore {
    RawStore::Local {
        path: format!("{DATA_DIR_PLACEHOLDER}/store/replica"),
    }
}

fn default_s3_region() -> String {
    "us-east-1".to_owned()
}

fn default_primary_key() -> RawKey {
    RawKey::local(format!("{DATA_DIR_PLACEHOLDER}/keys/primary.key"))
}

fn default_replica_key() -> RawKey {
    RawKey::local(format!("{DATA_DIR_PLACEHOLDER}/keys/replica.key"))
}

fn default_key_cache_secs() -> u64 {
    300
}

fn default_rotation_max_age_days() -> u32 {
    365
}

fn default_metadata_url() -> String {
    format!("sqlite://{DATA_DIR_PLACEHOLDER}/meta.db")
}

fn default_metadata_tls() -> String {
    "verify-full".into()
}

fn default_metadata_pool_size() -> u32 {
    10
}

fn default_metadata_connect_timeout_secs() -> u64 {
    10
}

fn default_metadata_max_retries() -> u32 {
    5
}

fn default_max_failures() -> u32 {
    10
}

fn default_failure_window_secs() -> u64 {
    900
}

fn default_lockout_secs() -> u64 {
    900
}

impl Default for RawConfig {
    fn default() -> Self {
        Self {
            data_dir: default_data_dir(),
            node_name: default_node_name(),
            log: RawLog::default(),
            admin: RawAdmin::default(),
            sftp: RawSftp::default(),
            ftp: RawFtp::default(),
            https: RawHttps::default(),
            tls: RawTls::default(),
            storage: RawStorage::default(),
            keys: RawKeys::default(),
            metadata: RawMetadata::default(),
            auth: RawAuth::default(),
            uploads: RawUploads::default(),
            limits: RawLimits::default(),
        }
    }
}

impl Default for RawUploads {
    fn default() -> Self {
        Self {
            keep_partial: default_keep_partial(),
            min_free_bytes: default_min_free_bytes(),
            min_free_percent: default_min_free_percent(),
            inline_max_bytes: default_inline_max_bytes(),
        }
    }
}

impl Default for RawLimits {
    fn default() -> Self {
        Self {
            pre_auth_connections: default_pre_auth_connections(),
            pre_auth_per_address: default_pre_auth_per_address(),
            login_grace_secs: default_login_grace_secs(),
        }
    }
}

impl Default for RawLog {
    fn default() -> Self {
        Self {
            level: default_log_level(),
            format: default_log_format(),
        }
    }
}

impl Default for RawAdmin {
    fn default() -> Self {
        Self {
            listen: default_admin_listen(),
        }
    }
}

impl Default for RawSftp {
    fn default() -> Self {
        Self {
            enabled: default_true(),
            listen: default_sftp_listen(),
            host_key_dir: default_host_key_dir(),
            max_sessions: default_max_sessions(),
            idle_timeout_secs: default_idle_timeout_secs(),
            keep_partial_uploads: default_true(),
        }
    }
}

impl Default for RawFtp {
    fn default() -> Self {
        Self {
            enabled: default_true(),
            listen: default_ftp_listen(),
            passive_ports: default_passive_ports(),
            passive_host: String::new(),
            implicit_listen: String::new(),
            proxy_protocol: false,
            idle_timeout_secs: default_idle_timeout_secs(),
        }
    }
}

impl Default for RawHttps {
    fn default() -> Self {
        Self {
            enabled: default_true(),
            listen: default_https_listen(),
            session_idle_secs: default_session_idle_secs(),
        }
    }
}

impl Default for RawStorage {
    fn default() -> Self {
        Self {
            chunk_size: default_chunk_size(),
            spool_dir: default_spool_dir(),
            max_buffered_write_bytes: default_max_buffered_write_bytes(),
            primary: default_primary_store(),
            replica: default_replica_store(),
            gc_in_serve: None,
        }
    }
}

impl Default for RawKeys {
    fn default() -> Self {
        Self {
            primary: default_primary_key(),
            replica: default_replica_key(),
            cache_secs: default_key_cache_secs(),
            rotation: RawKeyRotation::default(),
        }
    }
}

impl Default for RawKeyRotation {
    fn default() -> Self {
        Self {
            max_age_days: default_rotation_max_age_days(),
            automatic: false,
        }
    }
}

impl Default for RawMetadata {
    fn default() -> Self {
        Self {
            url: default_metadata_url(),
            password_file: String::new(),
            tls: default_metadata_tls(),
            ca_file: String::new(),
            pool_size: default_metadata_pool_size(),
            connect_timeout_secs: default_metadata_connect_timeout_secs(),
            max_retries: default_metadata_max_retries(),
            migrate_on_start: true,
        }
    }
}

impl Default for RawAuth {
    fn default() -> Self {
        Self {
            max_failures: default_max_failures(),
            failure_window_secs: default_failure_window_secs(),
            lockout_secs: default_lockout_secs(),
        }
    }
}
