//! Coffer's typed configuration: defaults < TOML file < `COFFER_*` environment < overrides, validated.
//!
//! [`load`] merges the [`Sources`] into a [`RawConfig`] (the operator-facing
//! shape, unknown fields refused everywhere) and [`RawConfig::validate`]s it
//! into a [`Config`] with typed addresses, absolute paths and durations.
//! `docs/CONFIG.md` lists every field.

#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::panic
    )
)]

mod config;
mod error;
mod raw;
mod secret;
mod sources;
mod validate;

pub use config::{
    AdminConfig, AuthConfig, Config, DatabaseTls, FtpConfig, HttpsConfig, KeepPartial, KeyConfig,
    KeyRotationConfig, KeysConfig, KmsConnectionConfig, LimitsConfig, LogConfig, LogFormat,
    METADATA_PASSWORD_ENV, MetadataConfig, REDACTED, S3Auth, S3SecretKey, S3StoreConfig,
    SftpConfig, StorageConfig, StoreConfig, TlsCertificate, TlsConfig, UploadsConfig,
};
pub use error::ConfigError;
pub use raw::{
    DATA_DIR_PLACEHOLDER, RawAdmin, RawAuth, RawConfig, RawFtp, RawHttps, RawKey, RawKeyRotation,
    RawKeys, RawLimits, RawLog, RawMetadata, RawSftp, RawStorage, RawStore, RawTls, RawUploads,
};
pub use secret::{Secret, read_secret_file};
pub use sources::{ENV_PREFIX, IGNORED_ENV_VARS, Sources, TEST_ENV_PREFIXES, load, read_file};
pub use validate::{MAX_CHUNK_SIZE, MAX_INLINE_BYTES, MIN_CHUNK_SIZE};
