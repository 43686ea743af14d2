//! Coffer's key hierarchy: per-region master keys, wrapped tenant keys and the subkeys derived from them.
//!
//! ```text
//! master key (one per region, held by a KeyProvider)
//!   └─ tenant key (random, stored only wrapped: once per region's master key)
//!        └─ HKDF-SHA256 subkeys (salt = tenant id): names, blind index, data-key wrapping, fields
//!             └─ data key (random, one per file version, stored wrapped)
//! ```
//!
//! `docs/KEYS.md` describes the derivations, the blob layouts and the rotation story.
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::panic
    )
)]

mod aws_kms;
mod error;
mod kdf;
mod key_file;
mod local;
/// Not wired by any configuration: a test double (see its docs).
mod memory_kms;
mod metrics;
mod provider;
mod sealed_blob;
mod tenant_key;
mod tenant_keys;

pub use aws_kms::{
    AwsKms, AwsKmsKey, AwsKmsSettings, KMS_CONNECT_TIMEOUT, KMS_OPERATION_TIMEOUT, KmsCredentials,
};
pub use error::KeyError;
pub use key_file::MASTER_KEY_LEN;
pub use local::LocalKeyProvider;
pub use memory_kms::MemoryKms;
pub use metrics::{KeyMetrics, KeyMetricsSnapshot};
pub use provider::{
    KMS_KEY_ID_PREFIX, KeyProvider, KeyRing, KmsConnector, PRIMARY_REGION, REPLICA_REGION,
    RegionKeys, TenantMasterKeys, Unwrapped, WrapContext, WrappedTenantKey, tenant_key_context,
};
pub use sealed_blob::{BLOB_VERSION_1, NONCE_LEN, TAG_LEN};
pub use tenant_key::{TENANT_KEY_LEN, TenantKey};
pub use tenant_keys::TenantKeys;
