//! Turns a [`RawConfig`] into a [`Config`], refusing values that cannot work
//! with an error that names the field and the fix.

use std::ffi::OsString;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::config::{
    AdminConfig, AuthConfig, Config, DatabaseTls, FtpConfig, HttpsConfig, KeepPartial, KeyConfig,
    KeyRotationConfig, KeysConfig, KmsConnectionConfig, LimitsConfig, LogConfig, LogFormat,
    MetadataConfig, S3Auth, S3SecretKey, S3StoreConfig, SftpConfig, StorageConfig, StoreConfig,
    TlsCertificate, TlsConfig, UploadsConfig,
};
use crate::error::ConfigError;
use crate::raw::{
    DATA_DIR_PLACEHOLDER, RawAuth, RawConfig, RawFtp, RawHttps, RawKey, RawKeys, RawLimits, RawLog,
    RawSftp, RawStorage, RawStore, RawTls, RawUploads,
};
use crate::secret::Secret;

/// The accepted range of `storage.chunk_size`: the chunked format's own limits.
pub use coffer_format::{MAX_CHUNK_SIZE, MIN_CHUNK_SIZE};
/// Passive ports must be unprivileged.
const MIN_PASSIVE_PORT: u16 = 1024;
/// Bytes a sealed chunk adds to its plaintext: a 12-byte nonce and a 16-byte GCM tag.
const SEALED_CHUNK_OVERHEAD: u64 = coffer_format::CHUNK_OVERHEAD as u64;
/// S3's smallest multipart part.
const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;
/// S3's largest multipart part.
const MAX_PART_SIZE: u64 = 5 * 1024 * 1024 * 1024;
/// The default part size is the smallest whole number of sealed chunks at least this large.
const DEFAULT_PART_TARGET: u64 = 16 * 1024 * 1024;
/// Node names become file names in shared spools; keep them short.
const MAX_NODE_NAME_LEN: usize = 64;

impl RawConfig {
    /// Checks every field and resolves paths against the current directory,
    /// replacing `<data_dir>` by the resolved data directory.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the first field that cannot work.
    pub fn validate(self) -> Result<Config, ConfigError> {
        let data_dir = resolve_data_dir(&self.data_dir)?;
        let paths = PathResolver {
            data_dir: &data_dir,
        };
        let config = Config {
            node_name: validate_node_name(&self.node_name)?,
            log: validate_log(&self.log)?,
            admin: AdminConfig {
                listen: parse_listen("admin.listen", &self.admin.listen, "127.0.0.1:9090")?,
            },
            sftp: validate_sftp(&self.sftp, &paths)?,
            ftp: validate_ftp(&self.ftp)?,
            https: validate_https(&self.https)?,
            tls: validate_tls(&self.tls, &paths)?,
            storage: validate_storage(&self.storage, &paths)?,
            keys: validate_keys(&self.keys, &paths)?,
            metadata: validate_metadata(&self.metadata, &paths)?,
            auth: validate_auth(&self.auth)?,
            uploads: validate_uploads(&self.uploads, &self.sftp)?,
            limits: validate_limits(&self.limits)?,
            data_dir,
        };
        check_listener_conflicts(&config)?;
        check_passive_ports_free(&config)?;
        Ok(config)
    }
}

/// Whether `name` may identify a node: 1..=64 characters of `[A-Za-z0-9._-]`,
/// not starting with a dot.
pub(crate) fn is_valid_node_name(name: &str) -> bool {
    (1..=MAX_NODE_NAME_LEN).contains(&name.len())
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

fn validate_node_name(name: &str) -> Result<String, ConfigError> {
    if is_valid_node_name(name) {
        return Ok(name.to_owned());
    }
    Err(ConfigError::invalid(
        "node_name",
        format!(
            "{name:?} is not a valid node name (use 1 to {MAX_NODE_NAME_LEN} letters, digits, \
             '.', '_' or '-', not starting with '.', e.g. \"node-1\")"
        ),
    ))
}

fn resolve_data_dir(text: &str) -> Result<PathBuf, ConfigError> {
    if text.trim().is_empty() {
        return Err(ConfigError::invalid(
            "data_dir",
            "must not be empty; set a directory, e.g. data_dir = \"./coffer-data\"",
        ));
    }
    if text.contains(DATA_DIR_PLACEHOLDER) {
        return Err(ConfigError::invalid(
            "data_dir",
            format!("{text:?} cannot refer to itself; remove {DATA_DIR_PLACEHOLDER}"),
        ));
    }
    absolute("data_dir", Path::new(text))
}

fn absolute(field: &str, path: &Path) -> Result<PathBuf, ConfigError> {
    std::path::absolute(path).map_err(|error| {
        ConfigError::invalid(
            field,
            format!(
                "cannot make {} absolute ({error}); give an absolute path",
                path.display()
            ),
        )
    })
}

/// Resolves path strings: `<data_dir>` substitution, then absolute.
struct PathResolver<'a> {
    data_dir: &'a Path,
}

impl PathResolver<'_> {
    fn resolve(&self, field: &str, text: &str) -> Result<PathBuf, ConfigError> {
        if text.trim().is_empty() {
            return Err(ConfigError::invalid(
                field,
                format!("must not be empty; give a path, e.g. \"{DATA_DIR_PLACEHOLDER}/...\""),
            ));
        }
        absolute(field, Path::new(&self.substitute(text)))
    }

    /// Replaces every `<data_dir>` without a lossy round trip through UTF-8.
    fn substitute(&self, text: &str) -> OsString {
        let mut joined = OsString::new();
        for (index, part) in text.split(DATA_DIR_PLACEHOLDER).enumerate() {
            if index > 0 {
                joined.push(self.data_dir.as_os_str());
            }
            joined.push(part);
        }
        joined
    }
}

fn validate_log(raw: &RawLog) -> Result<LogConfig, ConfigError> {
    if raw.level.trim().is_empty() {
        return Err(ConfigError::invalid(
            "log.level",
            "must not be empty; use a tracing filter such as \"info\" or \"coffer=debug,info\"",
        ));
    }
    let format = match raw.format.as_str() {
        "text" => LogFormat::Text,
        "json" => LogFormat::Json,
        other => {
            return Err(ConfigError::invalid(
                "log.format",
                format!("{other:?} is not a log format; use \"text\" or \"json\""),
            ));
        }
    };
    Ok(LogConfig {
        level: raw.level.clone(),
        format,
    })
}

fn parse_listen(field: &str, text: &str, example: &str) -> Result<SocketAddr, ConfigError> {
    text.trim().parse().map_err(|_| {
        ConfigError::invalid(
            field,
            format!(
                "{text:?} is not a socket address (expected host:port, e.g. \"{example}\"; \
                 the host must be an IP address)"
            ),
        )
    })
}

fn positive_secs(field: &str, secs: u64) -> Result<Duration, ConfigError> {
    if secs == 0 {
        return Err(ConfigError::invalid(
            field,
            "must be greater than 0 (a number of seconds)",
        ));
    }
    Ok(Duration::from_secs(secs))
}

fn positive_count(field: &str, count: u32) -> Result<u32, ConfigError> {
    if count == 0 {
        return Err(ConfigError::invalid(field, "must be greater than 0"));
    }
    Ok(count)
}

fn validate_sftp(raw: &RawSftp, paths: &PathResolver<'_>) -> Result<SftpConfig, ConfigError> {
    Ok(SftpConfig {
        enabled: raw.enabled,
        listen: parse_listen("sftp.listen", &raw.listen, "0.0.0.0:2222")?,
        host_key_dir: paths.resolve("sftp.host_key_dir", &raw.host_key_dir)?,
        max_sessions: positive_count("sftp.max_sessions", raw.max_sessions)?,
        idle_timeout: positive_secs("sftp.idle_timeout_secs", raw.idle_timeout_secs)?,
    })
}

fn validate_ftp(raw: &RawFtp) -> Result<FtpConfig, ConfigError> {
    let implicit_listen = match raw.implicit_listen.trim() {
        "" => None,
        text => Some(parse_listen("ftp.implicit_listen", text, "0.0.0.0:990")?),
    };
    Ok(FtpConfig {
        enabled: raw.enabled,
        listen: parse_listen("ftp.listen", &raw.listen, "0.0.0.0:2121")?,
        passive_ports: parse_port_range(&raw.passive_ports)?,
        passive_host: validate_passive_host(&raw.passive_host)?,
        implicit_listen,
        proxy_protocol: raw.proxy_protocol,
        idle_timeout: positive_secs("ftp.idle_timeout_secs", raw.idle_timeout_secs)?,
    })
}

fn parse_port_range(text: &str) -> Result<RangeInclusive<u16>, ConfigError> {
    const FIELD: &str = "ftp.passive_ports";
    let bounds = text
        .split_once('-')
        .and_then(|(first, last)| Some((first.trim().parse().ok()?, last.trim().parse().ok()?)));
    let Some((first, last)): Option<(u16, u16)> = bounds else {
        return Err(ConfigError::invalid(
            FIELD,
            format!("{text:?} is not a port range (expected \"FIRST-LAST\", e.g. \"50000-50099\")"),
        ));
    };
    if first < MIN_PASSIVE_PORT {
        return Err(ConfigError::invalid(
            FIELD,
            format!(
                "{text:?} starts below {MIN_PASSIVE_PORT}; use unprivileged ports, e.g. \"50000-50099\""
            ),
        ));
    }
    if first > last {
        return Err(ConfigError::invalid(
            FIELD,
            format!("{text:?} is reversed; write the lower port first, e.g. \"{last}-{first}\""),
        ));
    }
    Ok(first..=last)
}

fn validate_passive_host(text: &str) -> Result<Option<String>, ConfigError> {
    let host = text.trim();
    if host.is_empty() {
        return Ok(None);
    }
    if host.parse::<IpAddr>().is_ok() || is_host_name(host) {
        return Ok(Some(host.to_owned()));
    }
    Err(ConfigError::invalid(
        "ftp.passive_host",
        format!(
            "{text:?} is neither an IP address nor a host name; give e.g. \"203.0.113.7\" \
             or \"ftp.example.com\", or \"\" to advertise the listen address"
        ),
    ))
}

fn is_host_name(text: &str) -> bool {
    text.len() <= 253
        && text.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

fn validate_https(raw: &RawHttps) -> Result<HttpsConfig, ConfigError> {
    Ok(HttpsConfig {
        enabled: raw.enabled,
        listen: parse_listen("https.listen", &raw.listen, "0.0.0.0:8443")?,
        session_idle: positive_secs("https.session_idle_secs", raw.session_idle_secs)?,
    })
}

fn validate_tls(raw: &RawTls, paths: &PathResolver<'_>) -> Result<TlsConfig, ConfigError> {
    let certificate = match (
        raw.cert_file.trim().is_empty(),
        raw.key_file.trim().is_empty(),
    ) {
        (true, true) => TlsCertificate::SelfSigned {
            dir: paths.data_dir.join("tls"),
        },
        (false, false) => TlsCertificate::Files {
            cert_file: paths.resolve("tls.cert_file", &raw.cert_file)?,
            key_file: paths.resolve("tls.key_file", &raw.key_file)?,
        },
        (false, true) => {
            return Err(ConfigError::invalid(
                "tls.key_file",
                "is empty but tls.cert_file is set; set both, or neither for a self-signed certificate",
            ));
        }
        (true, false) => {
            return Err(ConfigError::invalid(
                "tls.cert_file",
                "is empty but tls.key_file is set; set both, or neither for a self-signed certificate",
            ));
        }
    };
    Ok(TlsConfig { certificate })
}

fn validate_storage(
    raw: &RawStorage,
    paths: &PathResolver<'_>,
) -> Result<StorageConfig, ConfigError> {
    if !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&raw.chunk_size) {
        return Err(ConfigError::invalid(
            "storage.chunk_size",
            format!(
                "{} is out of range; use {MIN_CHUNK_SIZE}..={MAX_CHUNK_SIZE} bytes, e.g. 65536",
                raw.chunk_size
            ),
        ));
    }
    if raw.max_buffered_write_bytes < u64::from(raw.chunk_size) {
        return Err(ConfigError::invalid(
            "storage.max_buffered_write_bytes",
            format!(
                "{} is below storage.chunk_size ({}); raise it to at least one chunk",
                raw.max_buffered_write_bytes, raw.chunk_size
            ),
        ));
    }
    let stores = StoreValidator {
        paths,
        chunk_size: raw.chunk_size,
    };
    let Some(primary) = stores.validate("storage.primary", &raw.primary)? else {
        return Err(ConfigError::invalid(
            "storage.primary.kind",
            "\"none\" is only allowed for storage.replica; use kind = \"local\" or \"s3\" for the primary store",
        ));
    };
    let replica = stores.validate("storage.replica", &raw.replica)?;
    match (&primary, &replica) {
        (StoreConfig::Local { path: primary_path }, Some(StoreConfig::Local { path })) => {
            refuse_overlap(
                "storage.replica.path",
                path,
                "storage.primary.path",
                primary_path,
            )?;
        }
        (StoreConfig::S3(primary_s3), Some(StoreConfig::S3(replica_s3)))
            if primary_s3.bucket == replica_s3.bucket
                && primary_s3.endpoint == replica_s3.endpoint =>
        {
            return Err(ConfigError::invalid(
                "storage.replica.bucket",
                format!(
                    "{:?} on the same endpoint is also the primary bucket; replicate to another bucket",
                    replica_s3.bucket
                ),
            ));
        }
        _ => {}
    }
    let gc_in_serve = raw
        .gc_in_serve
        .unwrap_or(matches!(primary, StoreConfig::Local { .. }));
    Ok(StorageConfig {
        chunk_size: raw.chunk_size,
        spool_dir: paths.resolve("storage.spool_dir", &raw.spool_dir)?,
        max_buffered_write_bytes: raw.max_buffered_write_bytes,
        primary,
        replica,
        gc_in_serve,
    })
}

/// Validates `[storage.primary]` and `[storage.replica]` tables.
struct StoreValidator<'a> {
    paths: &'a PathResolver<'a>,
    chunk_size: u32,
}

impl StoreValidator<'_> {
    /// `Ok(None)` for `kind = "none"`; the caller decides whether that is allowed.
    fn validate(&self, table: &str, raw: &RawStore) -> Result<Option<StoreConfig>, ConfigError> {
        match raw {
            RawStore::Local { path } => Ok(Some(StoreConfig::Local {
                path: self.paths.resolve(&format!("{table}.path"), path)?,
            })),
            RawStore::S3 {
                bucket,
                region,
                endpoint,
                path_style,
                access_key_id,
                secret_access_key,
                secret_access_key_file,
                part_size,
            } => Ok(Some(StoreConfig::S3(S3StoreConfig {
                bucket: validate_bucket(&format!("{table}.bucket"), bucket)?,
                region: validate_region(&format!("{table}.region"), region)?,
                endpoint: validate_endpoint(&format!("{table}.endpoint"), endpoint)?,
                path_style: *path_style,
                credentials: self.s3_credentials(
                    table,
                    access_key_id,
                    secret_access_key,
                    secret_access_key_file,
                )?,
                part_size: validate_part_size(
                    &format!("{table}.part_size"),
                    *part_size,
                    self.chunk_size,
                )?,
            }))),
            RawStore::None {} => Ok(None),
        }
    }

    fn s3_credentials(
        &self,
        table: &str,
        access_key_id: &str,
        secret: &str,
        secret_file: &str,
    ) -> Result<S3Auth, ConfigError> {
        aws_credentials(self.paths, table, access_key_id, secret, secret_file)
    }
}

/// The credentials of an AWS client (an S3 store or a KMS) from the fields `access_key_id`,
/// `secret_access_key` and `secret_access_key_file` of `table`: none means the standard chain.
fn aws_credentials(
    paths: &PathResolver<'_>,
    table: &str,
    access_key_id: &str,
    secret: &str,
    secret_file: &str,
) -> Result<S3Auth, ConfigError> {
    {
        let secret_access_key = match (access_key_id.is_empty(), secret, secret_file) {
            (true, "", "") => return Ok(S3Auth::DefaultChain),
            (true, _, _) => {
                return Err(ConfigError::invalid(
                    &format!("{table}.access_key_id"),
                    "is empty but a secret access key is set; set the key id too, or remove \
                     the secret to use the standard AWS credential chain",
                ));
            }
            (false, "", "") => {
                return Err(ConfigError::invalid(
                    &format!("{table}.secret_access_key_file"),
                    "is empty but access_key_id is set; give the file holding the secret key",
                ));
            }
            (false, inline, "") => S3SecretKey::Inline(Arc::new(Secret::new(inline.to_owned()))),
            (false, "", file) => {
                S3SecretKey::File(paths.resolve(&format!("{table}.secret_access_key_file"), file)?)
            }
            (false, _, _) => {
                return Err(ConfigError::invalid(
                    &format!("{table}.secret_access_key"),
                    "and secret_access_key_file are both set; keep only the file",
                ));
            }
        };
        Ok(S3Auth::Static {
            access_key_id: access_key_id.to_owned(),
            secret_access_key,
        })
    }
}

/// S3's bucket naming rules: 3 to 63 lowercase letters, digits, '.' and '-', starting and
/// ending with a letter or digit.
fn validate_bucket(field: &str, bucket: &str) -> Result<String, ConfigError> {
    let edges_ok = bucket.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && bucket.ends_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit());
    let chars_ok = bucket
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-'));
    if (3..=63).contains(&bucket.len()) && edges_ok && chars_ok {
        return Ok(bucket.to_owned());
    }
    Err(ConfigError::invalid(
        field,
        format!(
            "{bucket:?} is not a valid bucket name (3 to 63 lowercase letters, digits, '.' or '-', \
             e.g. \"coffer-eu-west-1\")"
        ),
    ))
}

fn validate_region(field: &str, region: &str) -> Result<String, ConfigError> {
    let region = region.trim();
    if region.is_empty()
        || !region
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-')
    {
        return Err(ConfigError::invalid(
            field,
            format!("{region:?} is not a region name; use e.g. \"eu-west-1\""),
        ));
    }
    Ok(region.to_owned())
}

fn validate_endpoint(field: &str, endpoint: &str) -> Result<Option<String>, ConfigError> {
    let endpoint = endpoint.trim();
    if endpoint.is_empty() {
        return Ok(None);
    }
    let host = endpoint
        .strip_prefix("https://")
        .or_else(|| endpoint.strip_prefix("http://"));
    match host {
        Some(host) if !host.is_empty() && !host.contains(char::is_whitespace) => {
            Ok(Some(endpoint.trim_end_matches('/').to_owned()))
        }
        _ => Err(ConfigError::invalid(
            field,
            format!(
                "{endpoint:?} is not an endpoint URL; use e.g. \"https://s3.eu-west-1.amazonaws.com\", \
                 or \"\" for AWS"
            ),
        )),
    }
}

/// `0` picks the smallest whole number of sealed chunks of at least [`DEFAULT_PART_TARGET`].
fn validate_part_size(field: &str, part_size: u64, chunk_size: u32) -> Result<u64, ConfigError> {
    let sealed_chunk = u64::from(chunk_size) + SEALED_CHUNK_OVERHEAD;
    if part_size == 0 {
        return Ok(DEFAULT_PART_TARGET.div_ceil(sealed_chunk) * sealed_chunk);
    }
    let example = MIN_PART_SIZE.div_ceil(sealed_chunk) * sealed_chunk;
    if !(MIN_PART_SIZE..=MAX_PART_SIZE).contains(&part_size)
        || !part_size.is_multiple_of(sealed_chunk)
    {
        return Err(ConfigError::invalid(
            field,
            format!(
                "{part_size} must be between 5 MiB and 5 GiB and a multiple of the sealed chunk \
                 size ({sealed_chunk} = storage.chunk_size + {SEALED_CHUNK_OVERHEAD}), e.g. {example}; \
                 or 0 for the default"
            ),
        ));
    }
    Ok(part_size)
}

/// Two stores sharing a directory, or one nested in the other, would mix
/// their objects; refuse it.
fn refuse_overlap(
    field: &str,
    path: &Path,
    other_field: &str,
    other: &Path,
) -> Result<(), ConfigError> {
    if path.starts_with(other) || other.starts_with(path) {
        return Err(ConfigError::invalid(
            field,
            format!(
                "{} is the same as, or nested with, {other_field} ({}); give each its own directory",
                path.display(),
                other.display()
            ),
        ));
    }
    Ok(())
}

/// The longest `keys.cache_secs`: a day.
const MAX_KEY_CACHE_SECS: u64 = 86_400;
/// The longest `keys.rotation.max_age_days`: a hundred years.
const MAX_KEY_AGE_DAYS: u32 = 36_500;

fn validate_keys(raw: &RawKeys, paths: &PathResolver<'_>) -> Result<KeysConfig, ConfigError> {
    let primary = validate_key("keys.primary", &raw.primary, paths)?;
    let replica = validate_key("keys.replica", &raw.replica, paths)?;
    match (&primary, &replica) {
        (
            KeyConfig::Local {
                path: primary_path, ..
            },
            KeyConfig::Local { path, .. },
        ) if path == primary_path => {
            return Err(ConfigError::invalid(
                "keys.replica.path",
                format!(
                    "{} is also keys.primary.path; each region needs its own master key file",
                    path.display()
                ),
            ));
        }
        (
            KeyConfig::AwsKms {
                key_id: primary_key,
                kms: primary_kms,
            },
            KeyConfig::AwsKms { key_id, kms },
        ) if key_id == primary_key
            && kms.region == primary_kms.region
            && kms.endpoint == primary_kms.endpoint =>
        {
            return Err(ConfigError::invalid(
                "keys.replica.key_id",
                format!(
                    "{key_id:?} is also keys.primary.key_id in the same KMS; each region needs \
                     its own master key"
                ),
            ));
        }
        _ => {}
    }
    if !(1..=MAX_KEY_CACHE_SECS).contains(&raw.cache_secs) {
        return Err(ConfigError::invalid(
            "keys.cache_secs",
            format!(
                "{} is out of range; unwrapped tenant keys stay in memory 1 to \
                 {MAX_KEY_CACHE_SECS} seconds (default 300)",
                raw.cache_secs
            ),
        ));
    }
    if raw.rotation.max_age_days > MAX_KEY_AGE_DAYS {
        return Err(ConfigError::invalid(
            "keys.rotation.max_age_days",
            format!(
                "{} is out of range; use 1 to {MAX_KEY_AGE_DAYS} days, or 0 for never overdue",
                raw.rotation.max_age_days
            ),
        ));
    }
    if raw.rotation.automatic && raw.rotation.max_age_days == 0 {
        return Err(ConfigError::invalid(
            "keys.rotation.automatic",
            "automatic rotation rotates keys older than keys.rotation.max_age_days, which is 0 \
             (never overdue): set max_age_days to 1 or more, or automatic to false",
        ));
    }
    Ok(KeysConfig {
        primary,
        replica,
        cache_secs: raw.cache_secs,
        rotation: KeyRotationConfig {
            max_age_days: raw.rotation.max_age_days,
            automatic: raw.rotation.automatic,
        },
    })
}

fn validate_key(
    table: &str,
    raw: &RawKey,
    paths: &PathResolver<'_>,
) -> Result<KeyConfig, ConfigError> {
    match raw {
        RawKey::Local {
            path,
            previous_paths,
            kms_region,
            kms_endpoint,
            access_key_id,
            secret_access_key,
            secret_access_key_file,
        } => {
            let path = paths.resolve(&format!("{table}.path"), path)?;
            let mut previous = Vec::with_capacity(previous_paths.len());
            for (n, old) in previous_paths.iter().enumerate() {
                let field = format!("{table}.previous_paths[{n}]");
                let old = paths.resolve(&field, old)?;
                if old == path || previous.contains(&old) {
                    return Err(ConfigError::invalid(
                        &field,
                        format!(
                            "{} is listed twice; previous_paths holds only older key files, \
                             not {table}.path",
                            old.display()
                        ),
                    ));
                }
                previous.push(old);
            }
            let kms = if kms_region.trim().is_empty() {
                let stray = [
                    ("kms_endpoint", kms_endpoint),
                    ("access_key_id", access_key_id),
                    ("secret_access_key", secret_access_key),
                    ("secret_access_key_file", secret_access_key_file),
                ];
                if let Some((name, _)) = stray.iter().find(|(_, v)| !v.trim().is_empty()) {
                    return Err(ConfigError::invalid(
                        &format!("{table}.kms_region"),
                        format!(
                            "is empty but {table}.{name} is set; name the KMS region for \
                             customer-managed tenant keys, or remove {name}"
                        ),
                    ));
                }
                None
            } else {
                Some(KmsConnectionConfig {
                    region: validate_region(&format!("{table}.kms_region"), kms_region)?,
                    endpoint: validate_endpoint(&format!("{table}.kms_endpoint"), kms_endpoint)?,
                    credentials: aws_credentials(
                        paths,
                        table,
                        access_key_id,
                        secret_access_key,
                        secret_access_key_file,
                    )?,
                })
            };
            Ok(KeyConfig::Local {
                path,
                previous_paths: previous,
                kms,
            })
        }
        RawKey::AwsKms {
            key_id,
            region,
            endpoint,
            access_key_id,
            secret_access_key,
            secret_access_key_file,
        } => {
            let key_id = key_id.trim();
            if key_id.is_empty() {
                return Err(ConfigError::invalid(
                    &format!("{table}.key_id"),
                    "required for kind = \"aws-kms\": a key id, key ARN or alias \
                     (e.g. \"alias/coffer-primary\")",
                ));
            }
            if key_id.contains(char::is_whitespace) || key_id.starts_with("aws-kms:") {
                return Err(ConfigError::invalid(
                    &format!("{table}.key_id"),
                    format!(
                        "{key_id:?} is not a KMS key id; give the key id, key ARN or alias \
                         exactly as KMS names it (e.g. \"alias/coffer-primary\")"
                    ),
                ));
            }
            if region.trim().is_empty() {
                return Err(ConfigError::invalid(
                    &format!("{table}.region"),
                    "required for kind = \"aws-kms\": the KMS region, e.g. \"eu-west-1\"",
                ));
            }
            Ok(KeyConfig::AwsKms {
                key_id: key_id.to_owned(),
                kms: KmsConnectionConfig {
                    region: validate_region(&format!("{table}.region"), region)?,
                    endpoint: validate_endpoint(&format!("{table}.endpoint"), endpoint)?,
                    credentials: aws_credentials(
                        paths,
                        table,
                        access_key_id,
                        secret_access_key,
                        secret_access_key_file,
                    )?,
                },
            })
        }
    }
}

fn validate_metadata_url(url: &str, paths: &PathResolver<'_>) -> Result<String, ConfigError> {
    const FIELD: &str = "metadata.url";
    if let Some(rest) = url.strip_prefix("sqlite://") {
        return resolve_sqlite_url(rest, paths);
    }
    if let Some(rest) = url.strip_prefix("mysql://") {
        return check_mysql_url(rest).map(|()| url.to_owned());
    }
    Err(ConfigError::invalid(
        FIELD,
        "not a supported database URL; use sqlite://PATH, e.g. \"sqlite://<data_dir>/meta.db\", \
         or mysql://USER@HOST[:PORT]/DATABASE",
    ))
}

/// Accepts `USER@HOST[:PORT]/DATABASE`. A password in the URL is refused (it would show in
/// the effective configuration and in process listings); its text is never echoed.
fn check_mysql_url(rest: &str) -> Result<(), ConfigError> {
    const FIELD: &str = "metadata.url";
    const SHAPE: &str = "use mysql://USER@HOST[:PORT]/DATABASE, e.g. \
                         \"mysql://coffer@db.example:3306/coffer\"";
    let Some((user, location)) = rest.rsplit_once('@') else {
        return Err(ConfigError::invalid(
            FIELD,
            format!("no user name; {SHAPE}"),
        ));
    };
    if user.contains(':') {
        return Err(ConfigError::invalid(
            FIELD,
            "must not contain a password; put it in metadata.password_file (mode 0600) \
             or the COFFER_METADATA_PASSWORD environment variable",
        ));
    }
    let (host_port, database) = location.split_once('/').unwrap_or((location, ""));
    let (host, port) = host_port
        .rsplit_once(':')
        .map_or((host_port, None), |(h, p)| (h, Some(p)));
    let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok_and(|p| p > 0));
    let database_ok = !database.is_empty()
        && database
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '$' | '-'));
    if user.is_empty() || host.is_empty() || !port_ok || !database_ok {
        return Err(ConfigError::invalid(
            FIELD,
            format!(
                "needs a user, a host, a valid port and a database name (no ?options); {SHAPE}"
            ),
        ));
    }
    Ok(())
}

fn validate_metadata(
    raw: &crate::raw::RawMetadata,
    paths: &PathResolver<'_>,
) -> Result<MetadataConfig, ConfigError> {
    let optional_path = |field: &str, text: &str| {
        if text.is_empty() {
            Ok(None)
        } else {
            paths.resolve(field, text).map(Some)
        }
    };
    let tls = match raw.tls.as_str() {
        "disable" => DatabaseTls::Disable,
        "require" => DatabaseTls::Require,
        "verify-ca" => DatabaseTls::VerifyCa,
        "verify-full" => DatabaseTls::VerifyFull,
        other => {
            return Err(ConfigError::invalid(
                "metadata.tls",
                format!(
                    "{other:?} is not a TLS mode; use disable, require, verify-ca or verify-full"
                ),
            ));
        }
    };
    if !(1..=1000).contains(&raw.pool_size) {
        return Err(ConfigError::invalid(
            "metadata.pool_size",
            "must be between 1 and 1000",
        ));
    }
    Ok(MetadataConfig {
        url: validate_metadata_url(&raw.url, paths)?,
        password_file: optional_path("metadata.password_file", &raw.password_file)?,
        tls,
        ca_file: optional_path("metadata.ca_file", &raw.ca_file)?,
        pool_size: raw.pool_size,
        connect_timeout: positive_secs("metadata.connect_timeout_secs", raw.connect_timeout_secs)?,
        max_retries: raw.max_retries,
        migrate_on_start: raw.migrate_on_start,
    })
}

/// Makes the database path of a `sqlite://` URL absolute, keeping any
/// `?options`, so the URL means the same file from any working directory.
fn resolve_sqlite_url(rest: &str, paths: &PathResolver<'_>) -> Result<String, ConfigError> {
    const FIELD: &str = "metadata.url";
    let (path, options) = rest
        .split_once('?')
        .map_or((rest, None), |(p, o)| (p, Some(o)));
    if path == ":memory:" {
        return Ok(format!("sqlite://{rest}"));
    }
    let resolved = paths.resolve(FIELD, path)?;
    let Some(resolved) = resolved.to_str() else {
        return Err(ConfigError::invalid(
            FIELD,
            format!(
                "{} is not valid UTF-8; choose a UTF-8 path",
                resolved.display()
            ),
        ));
    };
    Ok(match options {
        Some(options) => format!("sqlite://{resolved}?{options}"),
        None => format!("sqlite://{resolved}"),
    })
}

fn validate_auth(raw: &RawAuth) -> Result<AuthConfig, ConfigError> {
    Ok(AuthConfig {
        max_failures: positive_count("auth.max_failures", raw.max_failures)?,
        failure_window: positive_secs("auth.failure_window_secs", raw.failure_window_secs)?,
        lockout: positive_secs("auth.lockout_secs", raw.lockout_secs)?,
    })
}

fn validate_uploads(raw: &RawUploads, sftp: &RawSftp) -> Result<UploadsConfig, ConfigError> {
    let keep_partial = match raw.keep_partial.as_str() {
        "new-files" => KeepPartial::NewFiles,
        "never" => KeepPartial::Never,
        _ => {
            return Err(ConfigError::invalid(
                "uploads.keep_partial",
                "must be \"new-files\" (keep what arrived of a new file, so it can be resumed) \
                 or \"never\"",
            ));
        }
    };
    // The old per-protocol switch can only narrow the one policy.
    let keep_partial = if sftp.keep_partial_uploads {
        keep_partial
    } else {
        KeepPartial::Never
    };
    if raw.min_free_percent > MAX_MIN_FREE_PERCENT {
        return Err(ConfigError::invalid(
            "uploads.min_free_percent",
            format!(
                "{} is not a percentage of the disk uploads may leave free: use 0 to \
                 {MAX_MIN_FREE_PERCENT} (e.g. 5), or set uploads.min_free_bytes instead",
                raw.min_free_percent
            ),
        ));
    }
    if raw.inline_max_bytes > MAX_INLINE_BYTES {
        return Err(ConfigError::invalid(
            "uploads.inline_max_bytes",
            format!(
                "{} bytes is too large to keep in a metadata row: use 0 (off) to \
                 {MAX_INLINE_BYTES} (1 MiB); the default is {}",
                raw.inline_max_bytes,
                crate::raw::DEFAULT_INLINE_MAX_BYTES
            ),
        ));
    }
    Ok(UploadsConfig {
        keep_partial,
        min_free_bytes: raw.min_free_bytes,
        min_free_percent: raw.min_free_percent,
        inline_max_bytes: raw.inline_max_bytes,
    })
}

/// Largest `uploads.inline_max_bytes`: one in-memory batch of the writer, well inside a
/// MariaDB/MySQL MEDIUMBLOB and their default `max_allowed_packet`.
pub const MAX_INLINE_BYTES: u32 = 1024 * 1024;

/// Largest `uploads.min_free_percent`: a floor above it would refuse nearly every upload.
const MAX_MIN_FREE_PERCENT: u8 = 90;

fn validate_limits(raw: &RawLimits) -> Result<LimitsConfig, ConfigError> {
    let total = positive_count("limits.pre_auth_connections", raw.pre_auth_connections)?;
    let per_address = positive_count("limits.pre_auth_per_address", raw.pre_auth_per_address)?;
    if per_address > total {
        return Err(ConfigError::invalid(
            "limits.pre_auth_per_address",
            "must not be larger than limits.pre_auth_connections",
        ));
    }
    Ok(LimitsConfig {
        pre_auth_connections: total,
        pre_auth_per_address: per_address,
        login_grace: positive_secs("limits.login_grace_secs", raw.login_grace_secs)?,
    })
}

/// The listeners that will actually bind, with the field that configures each.
fn enabled_listeners(config: &Config) -> Vec<(&'static str, SocketAddr)> {
    let mut listeners = vec![("admin.listen", config.admin.listen)];
    if config.sftp.enabled {
        listeners.push(("sftp.listen", config.sftp.listen));
    }
    if config.ftp.enabled {
        listeners.push(("ftp.listen", config.ftp.listen));
        if let Some(implicit) = config.ftp.implicit_listen {
            listeners.push(("ftp.implicit_listen", implicit));
        }
    }
    if config.https.enabled {
        listeners.push(("https.listen", config.https.listen));
    }
    listeners
}

/// Two sockets collide when they share a port and an address, or one binds
/// the unspecified address. Port 0 asks the OS for a free port, so never collides.
fn sockets_collide(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() != 0
        && a.port() == b.port()
        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

fn check_listener_conflicts(config: &Config) -> Result<(), ConfigError> {
    let listeners = enabled_listeners(config);
    for (index, &(field, address)) in listeners.iter().enumerate() {
        let earlier = listeners.iter().take(index);
        if let Some(&(other_field, other)) = earlier
            .into_iter()
            .find(|(_, other)| sockets_collide(address, *other))
        {
            return Err(ConfigError::invalid(
                field,
                format!(
                    "{address} collides with {other_field} ({other}); give each enabled listener its own port"
                ),
            ));
        }
    }
    Ok(())
}

fn check_passive_ports_free(config: &Config) -> Result<(), ConfigError> {
    if !config.ftp.enabled {
        return Ok(());
    }
    let range = &config.ftp.passive_ports;
    let clash = enabled_listeners(config)
        .into_iter()
        .find(|(_, address)| range.contains(&address.port()));
    if let Some((field, address)) = clash {
        return Err(ConfigError::invalid(
            "ftp.passive_ports",
            format!(
                "{}-{} contains the port of {field} ({address}); move the range or the listener",
                range.start(),
                range.end()
            ),
        ));
    }
    Ok(())
}
