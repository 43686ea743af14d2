//! Coffer's storage core: the [`Vfs`] every front end calls, over the metadata store, the
//! object stores, the key hierarchy and the spool.

#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::panic
    )
)]

mod admin;
mod audit;
pub mod auth;
mod clock;
pub mod error;
mod ids;
mod inflight;
mod inline;
mod login;
mod lookups;
pub mod path;
pub mod perms;
mod reader;
mod replicate;
mod rotation;
mod spool;
mod tenant_keys;
mod tokens;
mod vault;
mod vfs;
mod writer;

pub use admin::{Admin, NewUserRequest, Readiness, UserSummary};
pub use auth::{HashLimits, LockoutPolicy, Password};
pub use clock::now_ms;
pub use error::{ErrorKind, VfsError, VfsResult};
pub use inline::{DEFAULT_INLINE_MAX_BYTES, MAX_INLINE_BYTES};
pub use login::{
    ADDRESS_FACTOR, Check, CredentialStamp, KNOWN_SOURCE_TTL, LocalLimiter, LoginLimiter, Refusal,
    Source,
};
pub use path::VPath;
pub use perms::Permissions;
pub use reader::{FileReader, failover_reads, repaired_reads};
pub use replicate::{
    FsckProblem, FsckReport, GarbageAges, READER_PUBLISH_AFTER, ReplicationReport,
    ReplicationStatus, ResyncReport,
};
pub use rotation::{DEFAULT_ROTATION_BATCH, RotateOptions, RotationProgress, TenantRotation};
pub use spool::FreeSpaceFloor;
pub use tenant_keys::{KeyStatus, MasterRotation, RegionStatus, TenantKeyStatus, VersionStatus};
pub use tokens::{NewToken, TOKEN_PREFIX, TokenInfo};
pub use vault::{
    Backends, DEFAULT_KEY_CACHE, Principal, Vault, VaultOptions, check_user_name, operator_spool,
};
pub use vfs::{EntryKind, FileInfo, QuotaInfo, ReadTarget, Vfs, WriteOptions};
pub use writer::{FileWriter, Interrupted, PartialUploads};

/// Re-exports for wiring in the binary.
pub use coffer_keys as keys;
pub use coffer_meta as meta;
pub use coffer_object as object;
