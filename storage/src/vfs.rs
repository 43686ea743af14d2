//! The Vfs: the one API SFTP, FTPES, HTTPS and the CLI call, per authenticated user.
//!
//! Permissions, path rules, quotas and the audit trail live here once, so the protocols
//! cannot drift apart. Names are encrypted and indexed here; the metadata store below only
//! ever sees ciphertext and blind indexes.

use std::sync::Arc;
use std::time::SystemTime;

use coffer_keys::TenantKeys;
use coffer_meta::{AuditRecord, MetaError, NewDir, Node, NodeKind, RenameNode, Tenant};
use tracing::debug;

use crate::clock::{ms_to_time, now_ms, time_to_ms};
use crate::error::{ErrorKind, VfsError, VfsResult};
use crate::ids::random_id;
use crate::path::VPath;
use crate::perms::Permissions;
use crate::reader::FileReader;
use crate::spool::Admit;
use crate::vault::{Principal, Vault};
use crate::writer::{FileWriter, WriteTarget};

/// Folder or file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryKind {
    /// A folder.
    Dir,
    /// A file.
    File,
}

/// A file or folder looked up for a download: see [`Vfs::stat_for_read`].
pub struct ReadTarget {
    node: Node,
    /// The sealed object, if the row holds it and the user may read it.
    inline: Option<Vec<u8>>,
    info: FileInfo,
    sha256: Option<[u8; 32]>,
}

impl std::fmt::Debug for ReadTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadTarget")
            .field("id", &self.node.id)
            .field("inline", &self.inline.is_some())
            .finish_non_exhaustive()
    }
}

impl ReadTarget {
    /// What [`Vfs::stat`] would say.
    pub fn info(&self) -> &FileInfo {
        &self.info
    }

    /// The content's SHA-256, for a user who may read the file (`None` for a folder).
    pub fn sha256(&self) -> Option<[u8; 32]> {
        self.sha256
    }
}

/// What `stat` and `list` report about an entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileInfo {
    /// The entry's name (decrypted); empty for the user's root.
    pub name: String,
    /// Folder or file.
    pub kind: EntryKind,
    /// Plaintext size in bytes (0 for folders).
    pub size: u64,
    /// Modification time.
    pub mtime: SystemTime,
    /// Creation time.
    pub ctime: SystemTime,
    /// Stable id of the entry.
    pub id: i64,
    /// Row version: changes with every new content, rename or move.
    pub version: i64,
}

impl FileInfo {
    /// `true` for folders.
    pub fn is_dir(&self) -> bool {
        self.kind == EntryKind::Dir
    }

    /// A strong validator for HTTP (`ETag`) and resume checks: changes whenever content changes.
    pub fn etag(&self) -> String {
        format!("{:x}-{:x}", self.id, self.version)
    }
}

/// How `create` opens a file for writing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriteOptions {
    /// Start from empty content (SFTP TRUNC, FTP STOR, HTTP PUT). When `false` and the file
    /// exists, writes overlay its current content (SFTP without TRUNC, FTP REST+STOR, APPE).
    pub truncate: bool,
    /// Fail if the file exists (SFTP EXCL).
    pub exclusive: bool,
}

/// Bytes and files used, and the limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuotaInfo {
    /// Bytes in committed files of the tenant.
    pub used_bytes: u64,
    /// Committed files of the tenant.
    pub files: u64,
    /// The tenant's byte quota, if any.
    pub limit_bytes: Option<u64>,
}

/// One user's view of their tenant's tree, rooted at their home folder.
#[derive(Clone, Debug)]
pub struct Vfs {
    pub(crate) vault: Vault,
    pub(crate) principal: Arc<Principal>,
    pub(crate) tenant: Arc<Tenant>,
    perms: Permissions,
}

impl Vfs {
    pub(crate) fn new(vault: Vault, principal: Principal, tenant: Tenant) -> Self {
        let perms = Permissions::from_bits(principal.user.perms);
        Self {
            vault,
            principal: Arc::new(principal),
            tenant: Arc::new(tenant),
            perms,
        }
    }

    /// The tenant's current keys (names, blind indexes, new data keys), from the Vault's
    /// bounded cache: asked for at each use, so a key that becomes unavailable stops a
    /// session that is already open.
    /// The version is the tenant's current one as read a moment ago, not at login, so a
    /// session that outlives the start of a key rotation writes under the new version too.
    pub(crate) async fn keys(&self) -> VfsResult<Arc<TenantKeys>> {
        let versions = self.vault.key_versions(self.tenant.id).await?;
        self.vault
            .tenant_keys(self.tenant.id, versions.current)
            .await
    }

    /// The keys of the tenant's key version `version` (a row's name may be under an older
    /// version than the current one while a rotation rewrites it).
    async fn keys_of(&self, version: u32) -> VfsResult<Arc<TenantKeys>> {
        self.vault.tenant_keys(self.tenant.id, version).await
    }

    /// Blind indexes of `name` in `parent_id`: under the current version, and during a
    /// rotation under the version it moves from (rows not yet rewritten carry that one).
    async fn name_indexes(&self, parent_id: i64, name: &str) -> VfsResult<NameIndexes> {
        let (current, previous) = self.vault.lookup_keys(self.tenant.id).await?;
        Ok(NameIndexes {
            current: current.blind_index(parent_id, name),
            previous: previous.map(|k| k.blind_index(parent_id, name)),
            keys: current,
        })
    }

    /// Decrypts a row's name with the keys of the version it is under.
    async fn name_of(&self, node: &Node) -> VfsResult<String> {
        let keys = self.keys_of(node.name_key_version).await?;
        keys.decrypt_name(node.id, &node.name_enc).map_err(|e| {
            self.vault.inner.b.keys.metrics.failed_decryption();
            e.into()
        })
    }

    /// Forgets the remembered lookups of these names (blind indexes): called by every change
    /// of a name, place, content or time once the store has answered.
    pub(crate) fn forget_lookups(&self, indexes: &[&[u8]]) {
        self.vault.inner.lookups.forget(self.tenant.id, indexes);
    }

    /// The logged-in principal.
    pub fn principal(&self) -> &Principal {
        &self.principal
    }

    /// The user's permissions.
    pub fn permissions(&self) -> Permissions {
        self.perms
    }

    fn require(&self, p: Permissions, what: &str) -> VfsResult<()> {
        if self.perms.contains(p) {
            Ok(())
        } else {
            Err(VfsError::new(
                ErrorKind::PermissionDenied,
                format!("permission denied: this account may not {what}"),
            ))
        }
    }

    pub(crate) fn audit(
        &self,
        action: &str,
        node_id: Option<i64>,
        outcome: &str,
        bytes: Option<u64>,
    ) {
        let p = &self.principal;
        self.vault.inner.audit.record(AuditRecord {
            at_ms: now_ms(),
            tenant_id: Some(self.tenant.id),
            user_id: Some(p.user.id),
            user_name: Some(p.user.name.clone()),
            protocol: p.protocol.to_owned(),
            remote_addr: p.remote_addr.clone(),
            action: action.to_owned(),
            node_id,
            outcome: outcome.to_owned(),
            bytes: bytes.map(|b| b.min(i64::MAX as u64) as i64),
        });
    }

    // ---- resolution ----

    async fn home(&self) -> VfsResult<Node> {
        Ok(self
            .vault
            .inner
            .b
            .meta
            .node(self.tenant.id, self.principal.user.home_node_id)
            .await?)
    }

    /// The child `name` of `parent`, read now (what a change is about to act on).
    async fn child(&self, parent: &Node, name: &str) -> VfsResult<Node> {
        if parent.kind != NodeKind::Dir {
            return Err(not_a_directory());
        }
        self.child_of(parent.id, name).await
    }

    /// The child `name` of the folder `parent_id`, read now: by its blind index under the
    /// current key version, or, during a rotation, under the version rows move from.
    async fn child_of(&self, parent_id: i64, name: &str) -> VfsResult<Node> {
        let idx = self.name_indexes(parent_id, name).await?;
        match (
            self.child_by_index(parent_id, &idx.current).await,
            idx.previous,
        ) {
            (Err(e), Some(previous)) if e.kind() == ErrorKind::NotFound => {
                self.child_under_previous(parent_id, &previous, &idx.current)
                    .await
            }
            (found, _) => found,
        }
    }

    /// During a rotation, after a miss under the current index: the previous index, and if the
    /// rotation moved the row between the two reads (rows only ever move from the previous
    /// index to the current one), the current index once more.
    async fn child_under_previous(
        &self,
        parent_id: i64,
        previous: &[u8],
        current: &[u8],
    ) -> VfsResult<Node> {
        match self.child_by_index(parent_id, previous).await {
            Err(e) if e.kind() == ErrorKind::NotFound => {
                self.child_by_index(parent_id, current).await
            }
            found => found,
        }
    }

    /// The child with blind index `idx` of the folder `parent_id`, read now.
    async fn child_by_index(&self, parent_id: i64, idx: &[u8]) -> VfsResult<Node> {
        self.vault
            .inner
            .b
            .meta
            .child(self.tenant.id, parent_id, idx)
            .await
            .map_err(not_found)
    }

    /// The child `name` of the folder `parent_id`, as a lookup of this process found it in
    /// the last moment (see `crate::lookups`), or read now.
    async fn recent_child_of(&self, parent_id: i64, name: &str) -> VfsResult<Node> {
        let idx = self.name_indexes(parent_id, name).await?;
        let lookups = &self.vault.inner.lookups;
        let ticket = match lookups.recall(self.tenant.id, &idx.current) {
            Ok(node) => return Ok(node),
            Err(ticket) => ticket,
        };
        let node = match (
            self.child_by_index(parent_id, &idx.current).await,
            idx.previous,
        ) {
            (Err(e), Some(previous)) if e.kind() == ErrorKind::NotFound => {
                // Not remembered: the rotation gives this row its new index any moment.
                return self
                    .child_under_previous(parent_id, &previous, &idx.current)
                    .await;
            }
            (found, _) => found?,
        };
        lookups.remember(ticket, &node);
        Ok(node)
    }

    /// Resolves a path to its node, one indexed lookup per component not looked up a moment
    /// ago. The home folder's own row is read only when it is the answer: below it, its id is
    /// all a lookup needs (a removed home folder has no children, so the lookup says
    /// `NotFound` as reading it would).
    pub(crate) async fn resolve(&self, path: &VPath) -> VfsResult<Node> {
        let Some((first, rest)) = path.parts().split_first() else {
            return self.home().await;
        };
        let mut node = self
            .recent_child_of(self.principal.user.home_node_id, first)
            .await?;
        for name in rest {
            if node.kind != NodeKind::Dir {
                return Err(not_a_directory());
            }
            node = self.recent_child_of(node.id, name).await?;
        }
        Ok(node)
    }

    /// Resolves the parent folder of `path` and returns it with the last name.
    pub(crate) async fn resolve_parent<'p>(&self, path: &'p VPath) -> VfsResult<(Node, &'p str)> {
        let (parent, name) = path.split_last().ok_or_else(|| {
            VfsError::new(
                ErrorKind::PermissionDenied,
                "the home folder itself cannot be changed",
            )
        })?;
        let dir = self.resolve(&parent).await?;
        if dir.kind != NodeKind::Dir {
            return Err(VfsError::new(
                ErrorKind::NotADirectory,
                "the parent is not a directory",
            ));
        }
        Ok((dir, name))
    }

    pub(crate) fn info(&self, node: &Node, name: String) -> FileInfo {
        FileInfo {
            name,
            kind: if node.kind == NodeKind::Dir {
                EntryKind::Dir
            } else {
                EntryKind::File
            },
            size: node
                .content
                .as_ref()
                .map(|c| c.size.max(0) as u64)
                .unwrap_or(0),
            mtime: ms_to_time(node.mtime_ms),
            ctime: ms_to_time(node.ctime_ms),
            id: node.id,
            version: node.version,
        }
    }

    // ---- the API ----

    /// Information about one entry.
    pub async fn stat(&self, path: &str) -> VfsResult<FileInfo> {
        self.require(Permissions::LIST, "list or stat")?;
        let path = VPath::parse(path)?;
        let node = self.resolve(&path).await?;
        let name = path.file_name().unwrap_or("").to_owned();
        Ok(self.info(&node, name))
    }

    /// The entries of a folder, sorted by name: one indexed query plus name decryption.
    pub async fn list(&self, path: &str) -> VfsResult<Vec<FileInfo>> {
        self.require(Permissions::LIST, "list folders")?;
        let path = VPath::parse(path)?;
        let dir = self.resolve(&path).await?;
        if dir.kind != NodeKind::Dir {
            return Err(VfsError::new(ErrorKind::NotADirectory, "not a directory"));
        }
        let children = self
            .vault
            .inner
            .b
            .meta
            .children(self.tenant.id, dir.id)
            .await?;
        let mut out = Vec::with_capacity(children.len());
        for c in &children {
            out.push(self.info(c, self.name_of(c).await?));
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// The SHA-256 of a file's content, read from its encrypted row (never by reading the file
    /// back): for checksum commands of sync tools (SFTP `check-file-name`, `sha256sum`, FTP
    /// `HASH`, HTTP `Repr-Digest`). Needs the read permission, like a download.
    /// Returns the file's information (its size is the range the hash covers) with the hash;
    /// audited as `checksum`, like a download.
    pub async fn sha256(&self, path: &str) -> VfsResult<(FileInfo, [u8; 32])> {
        self.require(Permissions::READ, "read checksums")?;
        let path = VPath::parse(path)?;
        let node = self.resolve(&path).await?;
        let hash = self
            .content_sha256(&node)
            .await?
            .ok_or_else(|| VfsError::new(ErrorKind::IsADirectory, "is a directory"))?;
        let info = self.info(&node, path.file_name().unwrap_or("").to_owned());
        self.audit("checksum", Some(node.id), "ok", None);
        Ok((info, hash))
    }

    /// Like [`list`](Self::list), with each file's SHA-256 beside it. Hashes are given only to
    /// a user who may read the files; for others (and for folders) they are `None`.
    pub async fn list_with_sha256(
        &self,
        path: &str,
    ) -> VfsResult<Vec<(FileInfo, Option<[u8; 32]>)>> {
        self.require(Permissions::LIST, "list folders")?;
        let may_read = self.perms.contains(Permissions::READ);
        let path = VPath::parse(path)?;
        let dir = self.resolve(&path).await?;
        if dir.kind != NodeKind::Dir {
            return Err(VfsError::new(ErrorKind::NotADirectory, "not a directory"));
        }
        let children = self
            .vault
            .inner
            .b
            .meta
            .children(self.tenant.id, dir.id)
            .await?;
        let mut out = Vec::with_capacity(children.len());
        for c in &children {
            let hash = if may_read {
                self.content_sha256(c).await?
            } else {
                None
            };
            out.push((self.info(c, self.name_of(c).await?), hash));
        }
        out.sort_by(|a, b| a.0.name.cmp(&b.0.name));
        Ok(out)
    }

    /// The decrypted content hash of a file row (sealed under the file's key version);
    /// `None` for a folder.
    async fn content_sha256(&self, node: &Node) -> VfsResult<Option<[u8; 32]>> {
        let Some(content) = &node.content else {
            return Ok(None);
        };
        let keys = self
            .vault
            .tenant_keys(self.tenant.id, content.key_version)
            .await?;
        let plain = keys.open_field(
            "content-sha256",
            &content.content_id,
            &content.content_hash_enc,
        )?;
        let hash: [u8; 32] = plain
            .as_slice()
            .try_into()
            .map_err(|_| VfsError::new(ErrorKind::Integrity, "stored content hash is malformed"))?;
        Ok(Some(hash))
    }

    /// For a download (HTTP `GET`/`HEAD`): what [`stat`](Self::stat) says, with the file's
    /// SHA-256 when the user may read it (`None` for folders and for users without the read
    /// permission; for `Repr-Digest`), from one lookup that also brings a small file's bytes,
    /// so that [`open_target`](Self::open_target) needs no further query. Audited only when
    /// opened.
    pub async fn stat_for_read(&self, path: &str) -> VfsResult<ReadTarget> {
        self.require(Permissions::LIST, "list or stat")?;
        let may_read = self.perms.contains(Permissions::READ);
        let path = VPath::parse(path)?;
        let (node, inline) = if may_read {
            self.lookup_for_read(&path).await?
        } else {
            (self.resolve(&path).await?, None)
        };
        let sha256 = if may_read {
            self.content_sha256(&node).await?
        } else {
            None
        };
        let info = self.info(&node, path.file_name().unwrap_or("").to_owned());
        Ok(ReadTarget {
            node,
            inline,
            info,
            sha256,
        })
    }

    /// The node at `path` for a download: its folders as [`Vfs::resolve`] finds them, the last
    /// name read now with the row's inline bytes (one query for a small file's row and bytes).
    async fn lookup_for_read(&self, path: &VPath) -> VfsResult<(Node, Option<Vec<u8>>)> {
        match path.split_last() {
            Some((parent, name)) => {
                let dir = self.resolve(&parent).await?;
                if dir.kind != NodeKind::Dir {
                    return Err(not_a_directory());
                }
                self.child_for_read(dir.id, name).await
            }
            None => Ok((self.resolve(path).await?, None)),
        }
    }

    /// The child `name` of the folder `parent_id` with its inline bytes, read now (or, for a
    /// row whose object is in the store, as a lookup found it a moment ago); during a
    /// rotation a miss falls back to the previous index (the bytes are then read on open).
    async fn child_for_read(
        &self,
        parent_id: i64,
        name: &str,
    ) -> VfsResult<(Node, Option<Vec<u8>>)> {
        let idx = self.name_indexes(parent_id, name).await?;
        // A row looked up a moment ago whose object is in the store: nothing more to read.
        if let Ok(node) = self
            .vault
            .inner
            .lookups
            .recall(self.tenant.id, &idx.current)
            && !node.content.as_ref().is_some_and(|c| c.inline)
        {
            return Ok((node, None));
        }
        let found = self
            .vault
            .inner
            .b
            .meta
            .child_with_object(self.tenant.id, parent_id, &idx.current)
            .await
            .map_err(not_found);
        match (found, idx.previous) {
            (Err(e), Some(previous)) if e.kind() == ErrorKind::NotFound => Ok((
                self.child_under_previous(parent_id, &previous, &idx.current)
                    .await?,
                None,
            )),
            (found, _) => found,
        }
    }

    /// Opens the file [`stat_for_read`](Self::stat_for_read) found, as
    /// [`open_read`](Self::open_read) would.
    pub async fn open_target(&self, target: ReadTarget) -> VfsResult<FileReader> {
        self.require(Permissions::READ, "download")?;
        if target.node.kind == NodeKind::Dir {
            return Err(VfsError::new(ErrorKind::IsADirectory, "is a directory"));
        }
        let id = target.node.id;
        let reader = FileReader::open_with(self, &target.node, target.info, target.inline).await?;
        self.audit("download", Some(id), "ok", None);
        Ok(reader)
    }

    /// Opens a file for reading at any offset; every chunk is verified before it is returned.
    pub async fn open_read(&self, path: &str) -> VfsResult<FileReader> {
        self.require(Permissions::READ, "download")?;
        let path = VPath::parse(path)?;
        let (node, inline) = self.lookup_for_read(&path).await?;
        let info = self.info(&node, path.file_name().unwrap_or("").to_owned());
        self.open_target(ReadTarget {
            node,
            inline,
            info,
            sha256: None,
        })
        .await
    }

    /// Opens a file for writing. Nothing is visible until [`FileWriter::commit`] succeeds:
    /// readers see the old version or the new one, never a half-written one.
    pub async fn create(&self, path: &str, opts: WriteOptions) -> VfsResult<FileWriter> {
        self.require(Permissions::WRITE, "upload")?;
        self.vault.inner.free_space.check(Admit::NewUpload)?;
        let path = VPath::parse(path)?;
        let (dir, name) = self.resolve_parent(&path).await?;
        let existing = match self.child(&dir, name).await {
            Ok(n) => Some(n),
            Err(e) if e.kind() == ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        if let Some(n) = &existing {
            if n.kind == NodeKind::Dir {
                return Err(VfsError::new(
                    ErrorKind::IsADirectory,
                    "a folder with that name exists",
                ));
            }
            if opts.exclusive {
                return Err(VfsError::new(
                    ErrorKind::AlreadyExists,
                    "the file already exists",
                ));
            }
        }
        let base = match (&existing, opts.truncate) {
            (Some(n), false) => {
                let info = self.info(n, name.to_owned());
                Some(FileReader::open(self, n, info).await?)
            }
            _ => None,
        };
        // An existing file keeps the index it has (it may still be under the version a
        // rotation moves from); a new one gets the current version's.
        let name_index = match &existing {
            Some(n) => n.name_index.clone(),
            None => self.keys().await?.blind_index(dir.id, name).to_vec(),
        };
        let claim = match &existing {
            None => Some(self.vault.inner.new_names.claim(
                self.tenant.id,
                &name_index,
                opts.exclusive,
            )?),
            Some(_) => None,
        };
        let target = WriteTarget {
            parent_id: dir.id,
            name: name.to_owned(),
            name_index,
            expect: existing.as_ref().map(|n| (n.id, n.version)),
            _claim: claim,
        };
        FileWriter::start(self.clone(), target, base).await
    }

    /// Creates a folder.
    pub async fn mkdir(&self, path: &str) -> VfsResult<FileInfo> {
        self.require(Permissions::MKDIR, "create folders")?;
        let path = VPath::parse(path)?;
        let (dir, name) = self.resolve_parent(&path).await?;
        let node = self.create_dir_in(&dir, name).await?;
        self.audit("mkdir", Some(node.id), "ok", None);
        Ok(self.info(&node, name.to_owned()))
    }

    async fn create_dir_in(&self, dir: &Node, name: &str) -> VfsResult<Node> {
        let id = random_id()?;
        let now = now_ms();
        let idx = self.name_indexes(dir.id, name).await?;
        if let Some(previous) = &idx.previous
            && self.child_by_index(dir.id, previous).await.is_ok()
        {
            // The name is taken by an entry a rotation has not rewritten yet.
            return Err(MetaError::AlreadyExists.into());
        }
        let keys = idx.keys;
        let index = idx.current;
        let created = self
            .vault
            .inner
            .b
            .meta
            .create_dir(&NewDir {
                id,
                tenant_id: self.tenant.id,
                parent_id: dir.id,
                name_enc: keys.encrypt_name(id, name)?,
                name_index: index.to_vec(),
                name_key_version: keys.key_version(),
                now_ms: now,
            })
            .await;
        self.forget_lookups(&[&index]);
        Ok(created?)
    }

    /// Creates a folder and its missing parents (like `mkdir -p`); returns the folder's id.
    /// Needs the MKDIR permission when a folder is missing; each folder made is audited.
    pub async fn mkdir_all(&self, path: &VPath) -> VfsResult<i64> {
        let mut node = self.home().await?;
        for name in path.parts() {
            node = match self.child(&node, name).await {
                Ok(n) if n.kind == NodeKind::Dir => n,
                Ok(_) => {
                    return Err(VfsError::new(
                        ErrorKind::NotADirectory,
                        "a component of the path is a file",
                    ));
                }
                Err(e) if e.kind() == ErrorKind::NotFound => {
                    self.require(Permissions::MKDIR, "create folders")?;
                    match self.create_dir_in(&node, name).await {
                        Ok(n) => {
                            self.audit("mkdir", Some(n.id), "ok", None);
                            n
                        }
                        // Another session created it meanwhile.
                        Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                            self.child(&node, name).await?
                        }
                        Err(e) => return Err(e),
                    }
                }
                Err(e) => return Err(e),
            };
        }
        Ok(node.id)
    }

    /// Removes an empty folder.
    pub async fn rmdir(&self, path: &str) -> VfsResult<()> {
        self.require(Permissions::DELETE, "delete")?;
        let path = VPath::parse(path)?;
        let (dir, name) = self.resolve_parent(&path).await?;
        let node = self.child(&dir, name).await?;
        if node.kind != NodeKind::Dir {
            return Err(VfsError::new(ErrorKind::NotADirectory, "not a directory"));
        }
        let removed = self
            .vault
            .inner
            .b
            .meta
            .remove(self.tenant.id, node.id)
            .await;
        self.forget_lookups(&[&node.name_index]);
        removed?;
        self.audit("rmdir", Some(node.id), "ok", None);
        Ok(())
    }

    /// Removes a file. Its object is queued for the garbage collector.
    pub async fn remove(&self, path: &str) -> VfsResult<()> {
        self.require(Permissions::DELETE, "delete")?;
        let path = VPath::parse(path)?;
        let (dir, name) = self.resolve_parent(&path).await?;
        let node = self.child(&dir, name).await?;
        if node.kind == NodeKind::Dir {
            return Err(VfsError::new(
                ErrorKind::IsADirectory,
                "is a directory; remove folders with rmdir",
            ));
        }
        let removed = self
            .vault
            .inner
            .b
            .meta
            .remove(self.tenant.id, node.id)
            .await;
        self.forget_lookups(&[&node.name_index]);
        removed?;
        self.audit("delete", Some(node.id), "ok", None);
        Ok(())
    }

    /// Renames or moves a file or a folder of any size in one transaction. With `replace`, an
    /// existing file at the target is replaced (POSIX rename); otherwise the target must not exist.
    pub async fn rename(&self, from: &str, to: &str, replace: bool) -> VfsResult<()> {
        self.require(Permissions::RENAME, "rename or move")?;
        let from = VPath::parse(from)?;
        let to = VPath::parse(to)?;
        if to.starts_with(&from) && to != from {
            return Err(VfsError::new(
                ErrorKind::InvalidPath,
                "cannot move a folder into itself",
            ));
        }
        let (src_dir, src_name) = self.resolve_parent(&from).await?;
        let node = self.child(&src_dir, src_name).await?;
        let (dst_dir, dst_name) = self.resolve_parent(&to).await?;
        let idx = self.name_indexes(dst_dir.id, dst_name).await?;
        let keys = idx.keys;
        let new_index = idx.current;
        let renamed = self
            .vault
            .inner
            .b
            .meta
            .rename(&RenameNode {
                tenant_id: self.tenant.id,
                id: node.id,
                new_parent_id: dst_dir.id,
                new_name_enc: keys.encrypt_name(node.id, dst_name)?,
                new_name_index: new_index.to_vec(),
                name_key_version: keys.key_version(),
                other_name_index: idx.previous.map(|p| p.to_vec()),
                replace,
                now_ms: now_ms(),
            })
            .await;
        match &idx.previous {
            Some(previous) => self.forget_lookups(&[&node.name_index, &new_index, previous]),
            None => self.forget_lookups(&[&node.name_index, &new_index]),
        }
        renamed?;
        debug!(node = node.id, "renamed");
        self.audit("rename", Some(node.id), "ok", None);
        Ok(())
    }

    /// Sets the modification time (SFTP setstat, `put -p`, FTP MFMT).
    pub async fn set_times(&self, path: &str, mtime: SystemTime) -> VfsResult<()> {
        self.require(Permissions::WRITE, "change times")?;
        let path = VPath::parse(path)?;
        let node = self.resolve(&path).await?;
        let set = self
            .vault
            .inner
            .b
            .meta
            .set_mtime(self.tenant.id, node.id, time_to_ms(mtime))
            .await;
        self.forget_lookups(&[&node.name_index]);
        Ok(set?)
    }

    /// The tenant's usage and quota.
    pub async fn quota(&self) -> VfsResult<QuotaInfo> {
        let u = self.vault.inner.b.meta.usage(self.tenant.id).await?;
        Ok(QuotaInfo {
            used_bytes: u.bytes.max(0) as u64,
            files: u.files.max(0) as u64,
            limit_bytes: self.tenant.quota_bytes.map(|q| q.max(0) as u64),
        })
    }
}

/// A name's blind indexes in one folder, and the keys that made the current one.
struct NameIndexes {
    current: [u8; 32],
    previous: Option<[u8; 32]>,
    keys: Arc<TenantKeys>,
}

fn not_a_directory() -> VfsError {
    VfsError::new(
        ErrorKind::NotADirectory,
        "a component of the path is not a directory",
    )
}

/// Maps a missing row to a path error; passes others through.
fn not_found(e: MetaError) -> VfsError {
    match e {
        MetaError::NotFound => VfsError::new(ErrorKind::NotFound, "no such file or directory"),
        e => e.into(),
    }
}
