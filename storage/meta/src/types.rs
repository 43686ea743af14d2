//! Row types shared by every metadata store implementation.

use std::fmt;

/// A tenant: an organisation whose users share one tree and one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tenant {
    /// Random positive id.
    pub id: i64,
    /// Operator-chosen name (an account label, not customer content: stored in the clear).
    pub name: String,
    /// Id of the tenant's root folder node.
    pub root_node_id: i64,
    /// Current tenant-key version used for new writes.
    pub key_version: u32,
    /// Byte quota for the whole tenant; `None` is unlimited.
    pub quota_bytes: Option<i64>,
    /// Creation time, ms since the Unix epoch.
    pub created_ms: i64,
}

/// What `create_tenant` needs.
#[derive(Clone, Debug)]
pub struct NewTenant {
    /// Random positive id chosen by the caller.
    pub id: i64,
    /// Unique name.
    pub name: String,
    /// Random positive id for the root folder.
    pub root_node_id: i64,
    /// Encrypted name for the root folder (the caller encrypts "" or "/").
    pub root_name_enc: Vec<u8>,
    /// Blind index for the root folder (unique per tenant with parent = None).
    pub root_name_index: Vec<u8>,
    /// Byte quota; `None` is unlimited.
    pub quota_bytes: Option<i64>,
    /// Wrapped tenant keys (version 1, one per region).
    pub keys: Vec<WrappedTenantKey>,
    /// The tenant's own master keys (customer-managed), if it brings any.
    pub master_keys: Vec<TenantMasterKey>,
    /// Creation time, ms since the Unix epoch.
    pub now_ms: i64,
}

/// A tenant's own master key of one region (a customer-managed KMS key).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TenantMasterKey {
    /// The tenant.
    pub tenant_id: i64,
    /// Region name, "primary" or "replica".
    pub region: String,
    /// The KMS key id, ARN or alias, as the customer gave it.
    pub key_id: String,
}

/// One wrapped copy of one version of a tenant key, under one region's master key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WrappedTenantKey {
    /// The tenant.
    pub tenant_id: i64,
    /// Tenant key version (starts at 1).
    pub version: u32,
    /// Region name, e.g. "primary" or "replica".
    pub region: String,
    /// Identifier of the master key that wrapped it (provider-specific).
    pub master_key_id: String,
    /// The wrapped key blob.
    pub wrapped: Vec<u8>,
    /// When this key version was made, ms since the Unix epoch (0: before schema version 3).
    /// A rewrap keeps it.
    pub created_ms: i64,
}

/// A login.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    /// Random positive id.
    pub id: i64,
    /// Owning tenant.
    pub tenant_id: i64,
    /// Login name, unique across the installation.
    pub name: String,
    /// Argon2id PHC string, or `None` for key-only users.
    pub password_hash: Option<String>,
    /// Node id of the user's home folder (their `/`).
    pub home_node_id: i64,
    /// Permission bits, see `coffer-storage`'s `Permissions`.
    pub perms: u32,
    /// A disabled user cannot log in.
    pub disabled: bool,
    /// Locked out until this time (ms since epoch), if locked.
    pub locked_until_ms: Option<i64>,
    /// Creation time, ms since the Unix epoch.
    pub created_ms: i64,
}

/// What `create_user` needs.
#[derive(Clone, Debug)]
pub struct NewUser {
    /// Random positive id chosen by the caller.
    pub id: i64,
    /// Owning tenant.
    pub tenant_id: i64,
    /// Login name.
    pub name: String,
    /// Argon2id PHC string, or `None`.
    pub password_hash: Option<String>,
    /// Home folder node id (must exist in the tenant).
    pub home_node_id: i64,
    /// Permission bits.
    pub perms: u32,
    /// Creation time, ms since the Unix epoch.
    pub now_ms: i64,
}

/// An SSH public key of a user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SshKey {
    /// Row id.
    pub id: i64,
    /// Owner.
    pub user_id: i64,
    /// Algorithm name, e.g. `ssh-ed25519`.
    pub algorithm: String,
    /// Base64 key blob as in `authorized_keys`.
    pub key_base64: String,
    /// SHA-256 fingerprint (`SHA256:...`).
    pub fingerprint: String,
    /// Free-form comment.
    pub comment: String,
}

/// What `add_ssh_key` needs.
#[derive(Clone, Debug)]
pub struct NewSshKey {
    /// Algorithm name.
    pub algorithm: String,
    /// Base64 key blob.
    pub key_base64: String,
    /// SHA-256 fingerprint; unique per user.
    pub fingerprint: String,
    /// Comment.
    pub comment: String,
}

/// An API token of a user, without its secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiToken {
    /// Row id.
    pub id: i64,
    /// Owner.
    pub user_id: i64,
    /// The public half of the token, shown in listings and used to look it up.
    pub token_id: String,
    /// SHA-256 of the secret half.
    pub secret_hash: Vec<u8>,
    /// When it was created (ms since the epoch).
    pub created_ms: i64,
    /// When it stops working (ms since the epoch); `None` never.
    pub expires_ms: Option<i64>,
}

/// Folder or file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeKind {
    /// A folder.
    Dir,
    /// A file with committed content.
    File,
}

/// The content of a committed file version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileContent {
    /// Plaintext length: trusted, the reader expects exactly this many bytes.
    pub size: i64,
    /// Storage key of the sealed object (32 hex digits).
    pub object_key: String,
    /// The format's content id (16 bytes), bound into every chunk.
    pub content_id: Vec<u8>,
    /// The data key, wrapped under the tenant key version `key_version`.
    pub wrapped_dek: Vec<u8>,
    /// Tenant key version that wrapped the data key.
    pub key_version: u32,
    /// Plaintext chunk size of the object.
    pub chunk_size: u32,
    /// SHA-256 of the plaintext, encrypted like a name.
    pub content_hash_enc: Vec<u8>,
    /// The sealed object is stored in the row itself (`inline_object`), not in the primary
    /// object store; fetch it with [`crate::NamespaceStore::inline_object`]. Set by the store
    /// from [`CommitFile::inline_object`]; node queries never load the bytes.
    pub inline: bool,
}

/// A folder or file row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    /// Random positive id.
    pub id: i64,
    /// Owning tenant.
    pub tenant_id: i64,
    /// Parent folder; `None` only for a tenant root.
    pub parent_id: Option<i64>,
    /// Folder or file.
    pub kind: NodeKind,
    /// Encrypted name (opaque here).
    pub name_enc: Vec<u8>,
    /// Blind index of the name (opaque here), unique per parent.
    pub name_index: Vec<u8>,
    /// Tenant key version that encrypted the name and made its blind index.
    pub name_key_version: u32,
    /// Modification time, ms since the Unix epoch.
    pub mtime_ms: i64,
    /// Creation time, ms since the Unix epoch.
    pub ctime_ms: i64,
    /// Row version, bumped by every change of content, name or place (not by a key
    /// rotation, which changes no plaintext).
    pub version: i64,
    /// Present for files.
    pub content: Option<FileContent>,
}

/// What `create_dir` needs.
#[derive(Clone, Debug)]
pub struct NewDir {
    /// Random positive id chosen by the caller (the encrypted name is bound to it).
    pub id: i64,
    /// Owning tenant.
    pub tenant_id: i64,
    /// Parent folder.
    pub parent_id: i64,
    /// Encrypted name.
    pub name_enc: Vec<u8>,
    /// Blind index.
    pub name_index: Vec<u8>,
    /// Tenant key version of the name and blind index.
    pub name_key_version: u32,
    /// Times, ms since the Unix epoch.
    pub now_ms: i64,
}

/// What `commit_file` needs.
#[derive(Clone, Debug)]
pub struct CommitFile {
    /// Id for a new node; ignored when an existing file is replaced (its id is kept).
    pub new_id: i64,
    /// Owning tenant.
    pub tenant_id: i64,
    /// Parent folder.
    pub parent_id: i64,
    /// Encrypted name, bound to the id of the node it is stored in: used only for a new node.
    pub name_enc: Vec<u8>,
    /// Blind index.
    pub name_index: Vec<u8>,
    /// The new content.
    pub content: FileContent,
    /// The sealed object's bytes, if they are to be stored in the row instead of the primary
    /// store (a small object); `None` when the object is in the store.
    pub inline_object: Option<Vec<u8>>,
    /// Modification time to record.
    pub mtime_ms: i64,
    /// Current time.
    pub now_ms: i64,
    /// Optimistic check: the existing file's (id, version) this upload started from, if any.
    pub expect_node: Option<(i64, i64)>,
    /// Optimistic check for an upload that started as a new file: the name must still be free
    /// (else `Conflict`), so a racing upload of the same new name is never silently replaced.
    /// With `expect_node` = `None` and this `false`, the commit creates or replaces.
    pub expect_absent: bool,
    /// The upload row to delete in the same transaction.
    pub upload_id: Option<i64>,
    /// Refuse if the tenant's usage would exceed its quota.
    pub enforce_quota: bool,
}

impl CommitFile {
    /// The node this commit creates when its name is new.
    pub(crate) fn new_node(&self) -> Node {
        Node {
            id: self.new_id,
            tenant_id: self.tenant_id,
            parent_id: Some(self.parent_id),
            kind: NodeKind::File,
            name_enc: self.name_enc.clone(),
            name_index: self.name_index.clone(),
            // A new file's name is encrypted with the keys that wrap its data key.
            name_key_version: self.content.key_version,
            mtime_ms: self.mtime_ms,
            ctime_ms: self.now_ms,
            version: 1,
            content: Some(self.stored_content()),
        }
    }

    /// The content as the row holds it: inline if the commit carries the bytes.
    pub(crate) fn stored_content(&self) -> FileContent {
        FileContent {
            inline: self.inline_object.is_some(),
            ..self.content.clone()
        }
    }
}

/// The result of `commit_file`.
#[derive(Clone, Debug)]
pub struct CommitOutcome {
    /// The committed node.
    pub node: Node,
    /// `true` if a new node was created, `false` if an existing file got new content.
    pub created: bool,
}

/// What `rename` needs.
#[derive(Clone, Debug)]
pub struct RenameNode {
    /// Owning tenant.
    pub tenant_id: i64,
    /// The node to move.
    pub id: i64,
    /// Its new parent folder.
    pub new_parent_id: i64,
    /// New encrypted name (bound to `id`).
    pub new_name_enc: Vec<u8>,
    /// New blind index (bound to `new_parent_id`).
    pub new_name_index: Vec<u8>,
    /// Tenant key version of the new name and blind index.
    pub name_key_version: u32,
    /// During a tenant key rotation: the new name's blind index under the other version, so
    /// an entry of that name not yet rotated is found as the target too.
    pub other_name_index: Option<Vec<u8>>,
    /// Replace an existing file at the target.
    pub replace: bool,
    /// Current time.
    pub now_ms: i64,
}

/// Bytes and files used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Usage {
    /// Sum of plaintext sizes of committed files.
    pub bytes: i64,
    /// Number of committed files.
    pub files: i64,
}

/// A tenant's usage as counted by its commits, against a recount of its files (`fsck`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct UsageCheck {
    /// What the count says (what quotas are checked against).
    pub recorded: Usage,
    /// What the tenant's file rows add up to.
    pub counted: Usage,
    /// The count was set to the recount (asked for, and the two differed).
    pub recounted: bool,
}

/// An upload in flight.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upload {
    /// Row id.
    pub id: i64,
    /// Owning tenant.
    pub tenant_id: i64,
    /// Name of the spool file, relative to the spool directory of the node that owns it.
    pub spool_name: String,
    /// Storage key reserved for the object.
    pub object_key: String,
    /// Which node (host) owns the spool file.
    pub node_name: String,
    /// Start time, ms since the Unix epoch.
    pub started_ms: i64,
}

/// What `begin_upload` needs.
#[derive(Clone, Debug)]
pub struct NewUpload {
    /// Owning tenant.
    pub tenant_id: i64,
    /// Spool file name.
    pub spool_name: String,
    /// Reserved storage key.
    pub object_key: String,
    /// The owning node's name.
    pub node_name: String,
    /// Start time.
    pub now_ms: i64,
}

/// What the replicator must do for one object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplicationOp {
    /// Copy the object to the replica.
    Copy,
    /// Delete the object from the replica.
    Delete,
}

/// One pending replication job. Its `Debug` gives the length of the inline bytes, not the
/// bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct ReplicationJob {
    /// Row id.
    pub id: i64,
    /// Storage key.
    pub object_key: String,
    /// Copy or delete.
    pub op: ReplicationOp,
    /// Failed attempts so far.
    pub attempts: u32,
    /// Last error, if any.
    pub last_error: Option<String>,
    /// When the job was queued, ms since epoch.
    pub created_ms: i64,
    /// For a copy of an object kept in its file's row: the row's sealed bytes, read with the
    /// job (no query per job). `None` for a delete, an object in the primary store, or an
    /// object whose row is gone.
    pub inline_object: Option<Vec<u8>>,
}

impl fmt::Debug for ReplicationJob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplicationJob")
            .field("id", &self.id)
            .field("object_key", &self.object_key)
            .field("op", &self.op)
            .field("attempts", &self.attempts)
            .field("last_error", &self.last_error)
            .field("created_ms", &self.created_ms)
            .field("inline_bytes", &self.inline_object.as_ref().map(Vec::len))
            .finish()
    }
}

/// An object no committed row refers to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Garbage {
    /// Row id.
    pub id: i64,
    /// Storage key.
    pub object_key: String,
    /// When it became garbage, ms since epoch.
    pub created_ms: i64,
}

/// Which garbage the collector may delete (times in ms since the epoch): any entry that became
/// garbage at or before `abandoned_ms`, whatever holds it, and an entry that became garbage at
/// or before `settled_ms` that no published reader row seen at or after `readers_seen_ms`
/// names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GarbageCut {
    /// Garbage younger than this is kept: a reader that looked the old row up just before the
    /// replace may not have published itself yet.
    pub settled_ms: i64,
    /// Reader rows last seen before this are stale (their node stopped refreshing them).
    pub readers_seen_ms: i64,
    /// Garbage older than this goes regardless of readers (a reader that never ends).
    pub abandoned_ms: i64,
}

/// One audit record. Holds ids, never names: the path of a file is not written here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditRecord {
    /// Time, ms since epoch.
    pub at_ms: i64,
    /// Tenant, if known.
    pub tenant_id: Option<i64>,
    /// User, if known.
    pub user_id: Option<i64>,
    /// The login name tried (for failed logins), else the user's name.
    pub user_name: Option<String>,
    /// Protocol or channel: "sftp", "ftp", "https", "cli".
    pub protocol: String,
    /// Client address, as the front end saw it (after PROXY protocol).
    pub remote_addr: Option<String>,
    /// What happened, e.g. "login", "login_failed", "upload", "download", "delete", "rename".
    pub action: String,
    /// The node acted on, if any.
    pub node_id: Option<i64>,
    /// "ok" or an error kind.
    pub outcome: String,
    /// Bytes moved, if any.
    pub bytes: Option<i64>,
}

/// A rotation of a tenant's key in progress (a `key_rotations` row): every row under
/// `from_version` is being rewritten under `to_version`, in id order, pass after pass, until
/// none is left; then the old version's copies are destroyed and the row goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyRotation {
    /// The tenant.
    pub tenant_id: i64,
    /// The version rows move from (its wrapped copies are destroyed at the end).
    pub from_version: u32,
    /// The version rows move to: the tenant's current version.
    pub to_version: u32,
    /// The cursor: the highest node id done in this pass (0 at the start of a pass).
    pub after_id: i64,
    /// The pass, from 1: a pass that found rows left behind (changed while it read them)
    /// is followed by another.
    pub pass: u32,
    /// Rows under the old version when the rotation began.
    pub total: i64,
    /// Rows rewritten so far, every pass together.
    pub rewritten: i64,
    /// When the rotation began, ms since the epoch.
    pub started_ms: i64,
    /// When it last made progress, ms since the epoch.
    pub updated_ms: i64,
}

/// One node's names and keys rewritten under a new tenant key version. The update applies
/// only if the row is still as it was read (`expect_*`); the rotation finds a row that
/// changed meanwhile again later.
#[derive(Clone, Debug)]
pub struct RekeyedNode {
    /// The node.
    pub id: i64,
    /// Its row version when read.
    pub expect_version: i64,
    /// Its name's key version when read.
    pub expect_name_key_version: u32,
    /// Its data key's version when read (files only).
    pub expect_key_version: Option<u32>,
    /// The name, encrypted under the new version.
    pub name_enc: Vec<u8>,
    /// The name's blind index under the new version.
    pub name_index: Vec<u8>,
    /// The new version of name and index.
    pub name_key_version: u32,
    /// For a file: the data key wrapped, and the content hash sealed, under `key_version`.
    pub content: Option<RekeyedContent>,
}

/// A file's data key and content hash under a new tenant key version.
#[derive(Clone, Debug)]
pub struct RekeyedContent {
    /// The data key, wrapped under `key_version`.
    pub wrapped_dek: Vec<u8>,
    /// The SHA-256 of the content, sealed under `key_version`.
    pub content_hash_enc: Vec<u8>,
    /// The version.
    pub key_version: u32,
}

/// What one batch of a rotation did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RekeyOutcome {
    /// Rows rewritten.
    pub rewritten: u64,
    /// Rows that had changed since they were read (left for a later pass).
    pub missed: u64,
    /// Rows whose new blind index is already taken in their folder (another entry of the
    /// same name was written under the new version meanwhile): left as they are.
    pub name_taken: Vec<i64>,
}

/// Where a rotation's batch leaves its cursor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RotationCursor {
    /// The highest node id done in this pass.
    pub after_id: i64,
    /// The pass.
    pub pass: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replication_jobs_debug_shows_the_inline_bytes_length_not_the_bytes() {
        let job = ReplicationJob {
            id: 7,
            object_key: "k".into(),
            op: ReplicationOp::Copy,
            attempts: 0,
            last_error: None,
            created_ms: 1,
            inline_object: Some(b"sealed-secret-bytes".to_vec()),
        };
        let shown = format!("{job:?}");
        assert!(shown.contains("inline_bytes: Some(19)"), "{shown}");
        assert!(!shown.contains("115, 101, 97"), "{shown}");
    }
}
