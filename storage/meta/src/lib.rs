//! The metadata store: namespace, versions, wrapped keys, users, uploads, outbox and audit.
//!
//! The store only ever holds what the layer above gives it: encrypted names, blind indexes,
//! wrapped keys and encrypted hashes are opaque byte strings here. Nothing in this crate
//! knows a key or a plaintext name. Every method is one transaction.
//!
//! One store, [`SqlStore`], is written once over a [`Dialect`] ([`SqliteStore`],
//! [`MySqlStore`]). Its methods are grouped in narrow traits — [`SchemaStore`],
//! [`TenantStore`], [`AccountStore`], [`NamespaceStore`], [`UploadStore`], [`AuditStore`] —
//! so that a caller can ask for only what it uses; [`MetadataStore`] is all of them.

// Rows read back from the database are untrusted input: no panicking shortcuts (the
// conformance checks, test code themselves, opt out).
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::panic
    )
)]

use std::fmt::Debug;

use async_trait::async_trait;

mod checkpoint;
pub mod conformance;
mod conns;
mod in_place;
mod lockout;
mod mysql;
mod outbox;
mod rows;
mod sql;
mod sqlite;
mod types;

pub use mysql::{MySqlDialect, MySqlOptions, MySqlStore, MySqlTls};
pub use sql::{Dialect, SqlStore};
pub use sqlite::{SqliteDialect, SqliteStore};
pub use types::*;

/// Errors from a metadata store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MetaError {
    /// The row asked for does not exist.
    #[error("not found")]
    NotFound,
    /// A unique constraint would be broken (a name already taken in a folder, a user name in use).
    #[error("already exists")]
    AlreadyExists,
    /// A folder still holds entries.
    #[error("directory not empty")]
    NotEmpty,
    /// The operation expected a folder and found a file, or the other way round.
    #[error("wrong node kind: {0}")]
    WrongKind(&'static str),
    /// A rename would move a folder into itself or one of its descendants.
    #[error("cannot move a folder into itself")]
    Cycle,
    /// The row changed since it was read (optimistic concurrency): the caller lost a race.
    #[error("conflict: the entry changed concurrently")]
    Conflict,
    /// A file commit would take the tenant over its byte quota; nothing was changed.
    #[error("quota exceeded")]
    QuotaExceeded,
    /// The database holds a newer schema than this build knows.
    #[error("database schema version {found} is newer than this build supports ({supported})")]
    SchemaTooNew {
        /// Version found in the database.
        found: i64,
        /// Newest version this build knows.
        supported: i64,
    },
    /// The database holds an older schema than this build needs (`found` is 0 for an empty
    /// database): run `coffer migrate`, or enable migration on start.
    #[error(
        "database schema version {found} is older than this build needs ({supported}); \
         run `coffer migrate`"
    )]
    SchemaTooOld {
        /// Version found in the database (0 if none).
        found: i64,
        /// Version this build needs.
        supported: i64,
    },
    /// The TLS connection to the database could not be set up or its certificate was refused
    /// (unknown CA, wrong host name, server without TLS). Not retried: the configuration
    /// (`metadata.tls`, `metadata.ca_file`) or the server's certificate needs fixing.
    #[error("TLS to the metadata database failed: {0}")]
    Tls(String),
    /// The database is unreachable or timed out; worth retrying later.
    #[error("metadata store unavailable: {0}")]
    Unavailable(String),
    /// Any other database error.
    #[error("metadata store error: {0}")]
    Database(String),
}

/// Result alias for this crate.
pub type MetaResult<T> = Result<T, MetaError>;

/// Every part of the metadata store: what `Vault` holds as `Arc<dyn MetadataStore>`.
/// Implemented for every type that implements the narrow traits.
pub trait MetadataStore:
    SchemaStore + TenantStore + AccountStore + NamespaceStore + UploadStore + AuditStore
{
}

impl<T> MetadataStore for T where
    T: SchemaStore + TenantStore + AccountStore + NamespaceStore + UploadStore + AuditStore
{
}

/// The schema of the database.
#[async_trait]
pub trait SchemaStore: Send + Sync + Debug {
    /// Applies pending migrations; refuses a schema newer than this build knows.
    async fn migrate(&self) -> MetaResult<()>;
}

/// Tenants and their wrapped keys.
#[async_trait]
pub trait TenantStore: Send + Sync + Debug {
    /// Creates a tenant with its root folder (a `Node` of kind `Dir`, `parent_id` = None,
    /// id = `root_node_id`) and its wrapped keys, all in one transaction.
    async fn create_tenant(&self, tenant: &NewTenant) -> MetaResult<Tenant>;
    /// Looks a tenant up by name.
    async fn tenant_by_name(&self, name: &str) -> MetaResult<Tenant>;
    /// Looks a tenant up by id.
    async fn tenant(&self, id: i64) -> MetaResult<Tenant>;
    /// All tenants, ordered by name.
    async fn list_tenants(&self) -> MetaResult<Vec<Tenant>>;
    /// Every wrapped copy of every version of the tenant's key.
    async fn tenant_keys(&self, tenant_id: i64) -> MetaResult<Vec<WrappedTenantKey>>;
    /// Adds (or replaces, for the same version and region) a wrapped tenant key; a
    /// replacement keeps the version's `created_ms`.
    async fn put_tenant_key(&self, key: &WrappedTenantKey) -> MetaResult<()>;
    /// The tenant's own master keys (customer-managed), by region.
    async fn tenant_master_keys(&self, tenant_id: i64) -> MetaResult<Vec<TenantMasterKey>>;
    /// Replaces the tenant's own master keys (an empty list: back to the deployment's keys)
    /// and stores `copies` (its key rewrapped under them), in one transaction.
    async fn set_tenant_master_keys(
        &self,
        tenant_id: i64,
        keys: &[TenantMasterKey],
        copies: &[WrappedTenantKey],
    ) -> MetaResult<()>;
    /// Destroys every wrapped copy of every version of the tenant's key (the first step of a
    /// crypto-shred: nothing of the tenant can be decrypted afterwards). Returns rows deleted.
    async fn destroy_tenant_keys(&self, tenant_id: i64) -> MetaResult<u64>;
    /// Deletes a tenant and everything it owns in one transaction; its objects are queued as
    /// garbage (returned: how many). `NotFound` if there is no such tenant.
    async fn delete_tenant(&self, tenant_id: i64, now_ms: i64) -> MetaResult<u64>;

    /// Begins a rotation of the tenant's key from `from_version` (its current version) to
    /// `to_version`, in one transaction: stores `copies` (the new version's wrapped copies),
    /// records the rotation and makes `to_version` the tenant's current version, so new
    /// writes use it from then on. `Conflict` if the tenant's current version is not
    /// `from_version` or a rotation of it is already under way.
    async fn start_key_rotation(
        &self,
        tenant_id: i64,
        from_version: u32,
        to_version: u32,
        copies: &[WrappedTenantKey],
        now_ms: i64,
    ) -> MetaResult<KeyRotation>;
    /// The tenant's rotation in progress, if any.
    async fn key_rotation(&self, tenant_id: i64) -> MetaResult<Option<KeyRotation>>;
    /// Every rotation in progress, oldest first.
    async fn key_rotations(&self) -> MetaResult<Vec<KeyRotation>>;
    /// Rows of the tenant whose name or data key is under `version` and whose id is above
    /// `after_id`, in id order, at most `limit`.
    async fn nodes_under_key_version(
        &self,
        tenant_id: i64,
        version: u32,
        after_id: i64,
        limit: u32,
    ) -> MetaResult<Vec<Node>>;
    /// How many rows of the tenant have their name or data key under `version`.
    async fn count_under_key_version(&self, tenant_id: i64, version: u32) -> MetaResult<i64>;
    /// Writes one batch of a rotation in one transaction: each node's new names and keys
    /// (only where the row is still as it was read), and the rotation's cursor and count.
    async fn rekey_nodes(
        &self,
        tenant_id: i64,
        nodes: &[RekeyedNode],
        cursor: RotationCursor,
        now_ms: i64,
    ) -> MetaResult<RekeyOutcome>;
    /// Ends a rotation: if no row of the tenant is under the rotation's old version any more,
    /// destroys that version's wrapped copies and the rotation row in one transaction and
    /// returns the copies destroyed; `None` (and nothing changed) while rows remain.
    /// `NotFound` if no rotation is under way.
    async fn finish_key_rotation(&self, tenant_id: i64) -> MetaResult<Option<u64>>;
}

/// Users and their credentials: passwords, SSH keys, API tokens and the login lockout.
#[async_trait]
pub trait AccountStore: Send + Sync + Debug {
    /// Creates a user. `AlreadyExists` if the name is taken (names are unique across tenants).
    async fn create_user(&self, user: &NewUser) -> MetaResult<User>;
    /// Looks a user up by login name.
    async fn user_by_name(&self, name: &str) -> MetaResult<User>;
    /// The user with this id; `NotFound` if none.
    async fn user(&self, id: i64) -> MetaResult<User>;
    /// The user with this id and its tenant, in one query (a session's start, each HTTPS
    /// request); `NotFound` if none.
    async fn user_with_tenant(&self, id: i64) -> MetaResult<(User, Tenant)>;
    /// All users, optionally of one tenant, ordered by name.
    async fn list_users(&self, tenant_id: Option<i64>) -> MetaResult<Vec<User>>;
    /// Replaces the password hash (PHC string) of a user.
    async fn set_password(&self, user_id: i64, password_hash: Option<&str>) -> MetaResult<()>;
    /// Disables or enables a user.
    async fn set_disabled(&self, user_id: i64, disabled: bool) -> MetaResult<()>;
    /// Deletes a user and their SSH keys and tokens. Files stay (they belong to the tenant).
    async fn delete_user(&self, user_id: i64) -> MetaResult<()>;
    /// Adds an SSH public key (OpenSSH one-line form) to a user.
    async fn add_ssh_key(&self, user_id: i64, key: &NewSshKey) -> MetaResult<()>;
    /// A user's SSH public keys.
    async fn ssh_keys(&self, user_id: i64) -> MetaResult<Vec<SshKey>>;
    /// Stores a new API token (its `id` is ignored); `AlreadyExists` if `token_id` is taken.
    async fn add_api_token(&self, token: &ApiToken) -> MetaResult<ApiToken>;
    /// The token with this public id; `NotFound` if none.
    async fn api_token(&self, token_id: &str) -> MetaResult<ApiToken>;
    /// A user's tokens, oldest first.
    async fn api_tokens(&self, user_id: i64) -> MetaResult<Vec<ApiToken>>;
    /// Deletes a user's token; `NotFound` if the user has no such token.
    async fn delete_api_token(&self, user_id: i64, token_id: &str) -> MetaResult<()>;

    /// Records one failed login at `now_ms`. If the user now has `threshold` or more failures
    /// inside the last `window_ms`, locks them until `now_ms + lock_ms`. Returns the lock
    /// expiry if the user is (now) locked. Cluster-wide: the count lives in the database.
    async fn record_login_failure(
        &self,
        user_id: i64,
        now_ms: i64,
        threshold: u32,
        window_ms: i64,
        lock_ms: i64,
    ) -> MetaResult<Option<i64>>;
    /// Clears the failure count after a successful login.
    async fn clear_login_failures(&self, user_id: i64) -> MetaResult<()>;
}

/// The namespace: folders, files and their versions.
#[async_trait]
pub trait NamespaceStore: Send + Sync + Debug {
    /// One node by id, within a tenant.
    async fn node(&self, tenant_id: i64, id: i64) -> MetaResult<Node>;
    /// The child of `parent_id` whose blind index is `name_index`.
    async fn child(&self, tenant_id: i64, parent_id: i64, name_index: &[u8]) -> MetaResult<Node>;
    /// As [`NamespaceStore::child`], with the sealed object the row holds inline (`None` for a
    /// folder and for an object in the primary store): a download's lookup and bytes in one.
    async fn child_with_object(
        &self,
        tenant_id: i64,
        parent_id: i64,
        name_index: &[u8],
    ) -> MetaResult<(Node, Option<Vec<u8>>)>;
    /// Every child of a folder, in no particular order. One indexed query.
    async fn children(&self, tenant_id: i64, parent_id: i64) -> MetaResult<Vec<Node>>;
    /// Creates a folder. `AlreadyExists` if the name is taken, `NotFound` if the parent is gone,
    /// `WrongKind` if the parent is a file.
    async fn create_dir(&self, dir: &NewDir) -> MetaResult<Node>;
    /// Commits a file version in one transaction: inserts the node, or replaces the content of
    /// the existing file with the same `(parent, name_index)`; queues the new object for
    /// replication; queues the replaced object (if any) for garbage collection; deletes the
    /// upload row `upload_id` if given. `WrongKind` if a folder holds the name.
    /// If `expect_node` is `Some((id, version))` the existing row must still be at that version
    /// (else `Conflict`); if it is `Some` and the row is gone, `Conflict` too.
    async fn commit_file(&self, file: &CommitFile) -> MetaResult<CommitOutcome>;
    /// Removes a file (its object is queued for garbage collection) or an empty folder
    /// (`NotEmpty` otherwise). The tenant root cannot be removed (`WrongKind`).
    async fn remove(&self, tenant_id: i64, id: i64) -> MetaResult<()>;
    /// Moves and/or renames a node in one transaction, whatever the folder holds.
    /// If the target name exists: with `replace` and both are files, the old target is removed
    /// (its object queued for GC); otherwise `AlreadyExists`. `Cycle` if a folder would move
    /// into its own subtree. The new name is given encrypted and indexed by the caller.
    async fn rename(&self, rename: &RenameNode) -> MetaResult<()>;
    /// Sets the modification time of a node.
    async fn set_mtime(&self, tenant_id: i64, id: i64, mtime_ms: i64) -> MetaResult<()>;
    /// Bytes and files used by a tenant's committed files: a count every change of a file
    /// keeps, read in one query whatever the number of files.
    async fn usage(&self, tenant_id: i64) -> MetaResult<Usage>;
    /// Compares the tenant's usage count with a recount of its file rows, read at one
    /// instant; with `repair`, a count that differs is set to the recount. `NotFound` if there
    /// is no such tenant.
    async fn check_usage(&self, tenant_id: i64, repair: bool) -> MetaResult<UsageCheck>;
    /// The sealed object stored in the row of the committed file whose object key is
    /// `object_key` (a small object, [`FileContent::inline`]); `None` if no committed row has
    /// that key, or its object is in the primary store. Listings and lookups never load these
    /// bytes: only this does.
    async fn inline_object(&self, object_key: &str) -> MetaResult<Option<Vec<u8>>>;
    /// Replaces the bytes of the row holding `object_key` inline with `sealed` (fsck's repair
    /// from a verified replica copy); `false` if no row holds that object inline.
    async fn restore_inline_object(&self, object_key: &str, sealed: &[u8]) -> MetaResult<bool>;
}

/// Uploads in flight, the replication outbox and the garbage list: the bookkeeping the
/// background workers and crash clean-up run on.
#[async_trait]
pub trait UploadStore: Send + Sync + Debug {
    /// Records an upload in flight (its spool file and reserved object key).
    ///
    /// The row is bookkeeping for crash clean-up, so a store may make it durable lazily — no
    /// later than the next [`NamespaceStore::commit_file`] of this process — rather than
    /// waiting for the disk before it returns (SQLite does; see `SqliteStore::open`). The same
    /// holds for `end_upload`, `replication_done`, `garbage_done` and `audit`.
    async fn begin_upload(&self, upload: &NewUpload) -> MetaResult<i64>;
    /// Forgets an upload (aborted, or cleaned after a crash). Missing rows are fine.
    async fn end_upload(&self, upload_id: i64) -> MetaResult<()>;
    /// Uploads in flight started by any node, oldest first.
    async fn uploads(&self) -> MetaResult<Vec<Upload>>;

    /// Pending replication jobs in the order they fall due, at most `limit`: jobs that never
    /// failed oldest first; a failed job waits out its backoff behind newer ones. A copy of
    /// an object kept in its row comes with the row's bytes (at most `limit` times
    /// `uploads.inline_max_bytes` in memory).
    async fn pending_replication(&self, limit: u32) -> MetaResult<Vec<ReplicationJob>>;
    /// Marks jobs done (deletes them), in one statement.
    async fn replication_done(&self, job_ids: &[i64]) -> MetaResult<()>;
    /// Records a failed attempt; the job stays pending.
    async fn replication_failed(&self, job_id: i64, error: &str, now_ms: i64) -> MetaResult<()>;
    /// Object keys no committed row refers to any more, at most `limit`.
    async fn garbage(&self, limit: u32) -> MetaResult<Vec<Garbage>>;
    /// Forgets a garbage entry once its object is deleted from every store.
    async fn garbage_done(&self, id: i64) -> MetaResult<()>;
    /// Garbage the collector may delete under `cut`, ids above `after_id`, oldest first, at
    /// most `limit`: one indexed query, the reader rows checked in it.
    async fn collectable_garbage(
        &self,
        after_id: i64,
        limit: u32,
        cut: GarbageCut,
    ) -> MetaResult<Vec<Garbage>>;

    /// Replaces the objects node `node_name` publishes as open for reading with
    /// `object_keys`, seen at `now_ms`, in one transaction; an empty list clears them.
    /// Bookkeeping, durable lazily like `begin_upload`.
    async fn publish_open_readers(
        &self,
        node_name: &str,
        object_keys: &[String],
        now_ms: i64,
    ) -> MetaResult<()>;
    /// Deletes reader rows of any node last seen before `before_ms` (nodes that stopped);
    /// returns how many.
    async fn expire_open_readers(&self, before_ms: i64) -> MetaResult<u64>;
    /// The objects node `node_name` publishes as open, sorted.
    async fn open_readers(&self, node_name: &str) -> MetaResult<Vec<String>>;
}

/// The audit log.
#[async_trait]
pub trait AuditStore: Send + Sync + Debug {
    /// Appends audit records (in the order given) in one statement; an empty slice is a no-op.
    async fn audit(&self, records: &[AuditRecord]) -> MetaResult<()>;
    /// The newest `limit` audit records, newest first.
    async fn recent_audit(&self, limit: u32) -> MetaResult<Vec<AuditRecord>>;
}
