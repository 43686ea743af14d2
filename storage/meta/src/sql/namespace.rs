//! The namespace inside write transactions: folders, file commits, removal and renames.
//!
//! On an engine with a single writer (SQLite, `BEGIN IMMEDIATE`) a read followed by a write
//! cannot be overtaken by another writer. On an engine whose writers run side by side (InnoDB)
//! the same functions take row locks (`SELECT ... FOR UPDATE`), always in the same order —
//! tenant row, then folder row, then the node itself — to keep deadlocks rare (the store
//! retries the few that happen):
//! - every change inside a folder (create, commit, remove, move in or out) locks the folder's
//!   row first, so a lookup of a name and the change that follows cannot be overtaken;
//! - a folder that moves locks its tenant's row, so two folder moves of one tenant never
//!   interleave their cycle checks (A into B while B moves into A);
//! - a commit that enforces a quota locks the tenant's row, so two commits cannot both fit
//!   under the quota that only one of them fits under.
//!
//! Updates carry their `version` guard either way.

use super::{Conn, Dialect, Sql, TxError, TxResult, sql_impl};
use crate::outbox::{replication_backoff_ms, truncate_error};
use crate::rows::{self, Columns, KIND_DIR, KIND_FILE, node_columns, op_column};
use crate::{
    CommitFile, CommitOutcome, FileContent, MetaError, NewDir, Node, NodeKind, RenameNode,
    ReplicationOp, Usage, UsageCheck,
};

/// Deepest folder nesting the cycle check walks before it declares the tree corrupt.
const MAX_TREE_DEPTH: usize = 10_000;

/// A statement that reads rows a write will depend on: as written, and with the row lock an
/// engine without a single writer takes.
pub(super) struct Locking {
    plain: &'static str,
    for_update: &'static str,
}

macro_rules! locking {
    ($sql:expr) => {
        Locking {
            plain: $sql,
            for_update: concat!($sql, " FOR UPDATE"),
        }
    };
}

impl Locking {
    /// The spelling engine `D` needs.
    pub(super) fn sql<D: Dialect>(&self) -> &'static str {
        if D::SERIAL_WRITERS {
            self.plain
        } else {
            self.for_update
        }
    }
}

const NODE_BY_ID: Locking = locking!(concat!(
    "SELECT ",
    node_columns!(),
    " FROM nodes WHERE tenant_id = ? AND id = ?"
));
/// [`NODE_BY_ID`] as read outside a transaction.
pub(crate) const NODE_BY_ID_PLAIN: &str = NODE_BY_ID.plain;
pub(crate) const CHILD_BY_INDEX: &str = concat!(
    "SELECT ",
    node_columns!(),
    " FROM nodes WHERE tenant_id = ? AND parent_id = ? AND name_index = ?"
);
/// As [`CHILD_BY_INDEX`], with the row's inline object (for a download: no second query).
pub(crate) const CHILD_WITH_OBJECT_BY_INDEX: &str = concat!(
    "SELECT ",
    node_columns!(),
    ", inline_object FROM nodes WHERE tenant_id = ? AND parent_id = ? AND name_index = ?"
);
/// Served by the `nodes_name_unique_in_folder` index (tenant_id, parent_id, name_index).
pub(crate) const CHILDREN: &str = concat!(
    "SELECT ",
    node_columns!(),
    " FROM nodes WHERE tenant_id = ? AND parent_id = ?"
);
macro_rules! queue_copy {
    () => {
        "INSERT INTO replication_outbox (object_key, op, attempts, created_ms, next_attempt_ms) \
         VALUES (?, ?, 0, ?, ?);"
    };
}
macro_rules! queue_garbage {
    () => {
        "INSERT INTO garbage (object_key, created_ms) VALUES (?, ?);"
    };
}
macro_rules! drop_upload {
    () => {
        " DELETE FROM uploads WHERE id = ?;"
    };
}
macro_rules! read_quota {
    () => {
        " SELECT quota_bytes FROM tenants WHERE id = ?;"
    };
}

/// The columns of a new file's row, in the order of [`new_file_params`].
macro_rules! insert_file_into {
    () => {
        "INSERT INTO nodes (id, tenant_id, parent_id, kind, name_enc, name_index, mtime_ms, \
         ctime_ms, version, size, object_key, content_id, wrapped_dek, key_version, chunk_size, \
         content_hash_enc, name_key_version, inline_object) "
    };
}
/// Inserts a new file node if its folder exists and the name is free there: the values of
/// [`new_file_params`], then the tenant, the folder's id and [`KIND_DIR`].
pub(super) const INSERT_FILE_IF_FREE: &str = concat!(
    insert_file_into!(),
    "SELECT ?, ?, ?, ?, ?, ?, ?, ?, 1, ?, ?, ?, ?, ?, ?, ?, ?, ? ",
    "WHERE EXISTS (SELECT 1 FROM nodes WHERE tenant_id = ? AND id = ? AND kind = ?)"
);
/// Inserts a new file node: the values of [`new_file_params`].
const INSERT_FILE: &str = concat!(
    insert_file_into!(),
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, 1, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
);
/// Gives a file new content if it is still at the version read: the values of
/// [`replace_params`].
pub(super) const REPLACE_CONTENT: &str = "UPDATE nodes SET size = ?, object_key = ?, content_id = ?, wrapped_dek = ?, \
     key_version = ?, chunk_size = ?, content_hash_enc = ?, inline_object = ?, \
     mtime_ms = ?, version = version + 1 WHERE tenant_id = ? AND id = ? AND version = ?";
/// The quota a commit checks (after its own statements, so its row counts).
pub(super) const QUOTA: &str = read_quota!();

/// A value of a statement that both the pool and the SQLite writer of `in_place.rs` run
/// (`sql/commit_in_place.rs`): each statement's values are listed once, and either binds them.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Param<'a> {
    Int(i64),
    Text(&'a str),
    Blob(&'a [u8]),
    OptBlob(Option<&'a [u8]>),
}

impl rusqlite::ToSql for Param<'_> {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(ToSqlOutput::Borrowed(match *self {
            Self::Int(v) => ValueRef::Integer(v),
            Self::Text(v) => ValueRef::Text(v.as_bytes()),
            Self::Blob(v) => ValueRef::Blob(v),
            Self::OptBlob(None) => ValueRef::Null,
            Self::OptBlob(Some(v)) => ValueRef::Blob(v),
        }))
    }
}

/// The content columns a new row and a replace both write, in this order: `size`,
/// `object_key`, `content_id`, `wrapped_dek`, `key_version`, `chunk_size`, `content_hash_enc`.
fn content_params(c: &FileContent) -> [Param<'_>; 7] {
    [
        Param::Int(c.size),
        Param::Text(&c.object_key),
        Param::Blob(&c.content_id),
        Param::Blob(&c.wrapped_dek),
        Param::Int(i64::from(c.key_version)),
        Param::Int(i64::from(c.chunk_size)),
        Param::Blob(&c.content_hash_enc),
    ]
}

/// The values of a new file's row, in the order both inserts name its columns.
pub(super) fn new_file_params(file: &CommitFile) -> Vec<Param<'_>> {
    let mut params = vec![
        Param::Int(file.new_id),
        Param::Int(file.tenant_id),
        Param::Int(file.parent_id),
        Param::Text(KIND_FILE),
        Param::Blob(&file.name_enc),
        Param::Blob(&file.name_index),
        Param::Int(file.mtime_ms),
        Param::Int(file.now_ms),
    ];
    params.extend(content_params(&file.content));
    params.extend([
        // A new file's name is encrypted with the keys that wrap its data key.
        Param::Int(i64::from(file.content.key_version)),
        Param::OptBlob(file.inline_object.as_deref()),
    ]);
    params
}

/// The values of [`INSERT_FILE_IF_FREE`].
pub(super) fn insert_if_free_params(file: &CommitFile) -> Vec<Param<'_>> {
    let mut params = new_file_params(file);
    params.extend([
        Param::Int(file.tenant_id),
        Param::Int(file.parent_id),
        Param::Text(KIND_DIR),
    ]);
    params
}

/// The values of [`REPLACE_CONTENT`] giving `old` the content of `file`.
pub(super) fn replace_params<'a>(file: &'a CommitFile, old: &Node) -> Vec<Param<'a>> {
    let mut params = content_params(&file.content).to_vec();
    params.extend([
        Param::OptBlob(file.inline_object.as_deref()),
        Param::Int(file.mtime_ms),
        Param::Int(old.tenant_id),
        Param::Int(old.id),
        Param::Int(old.version),
    ]);
    params
}

/// What a change does to its tenant's usage: the bytes and files it adds (negative: takes
/// away), counted in the shard of the node it changes (see `tenant_usage`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct UsageChange {
    pub(super) node_id: i64,
    pub(super) bytes: i64,
    pub(super) files: i64,
}

impl UsageChange {
    /// A new file of `file`'s content.
    pub(super) fn created(file: &CommitFile) -> Self {
        Self {
            node_id: file.new_id,
            bytes: file.content.size,
            files: 1,
        }
    }

    /// `content`, the content of the file `node_id`, removed.
    fn removed(node_id: i64, content: &FileContent) -> Self {
        Self {
            node_id,
            bytes: -content.size,
            files: -1,
        }
    }
}

/// The statement that counts `change` in the tenant's usage, with its values; `None` for a
/// change that adds nothing (a replace by content of the same size).
pub(super) fn usage_step<D: Dialect>(
    tenant_id: i64,
    change: UsageChange,
) -> Option<(&'static str, Vec<Param<'static>>)> {
    (change.bytes != 0 || change.files != 0).then(|| {
        (
            D::ADD_USAGE,
            vec![
                Param::Int(tenant_id),
                Param::Int(change.node_id.rem_euclid(D::USAGE_SHARDS)),
                Param::Int(change.bytes),
                Param::Int(change.files),
            ],
        )
    })
}

/// What replacing the content of `old` (updated by [`REPLACE_CONTENT`]) with `file`'s gives:
/// the outcome, what it does to the usage, and the superseded object, unless the new version
/// reuses it.
pub(super) fn replaced(
    old: Node,
    file: &CommitFile,
) -> (CommitOutcome, UsageChange, Option<FileContent>) {
    let old_size = old.content.as_ref().map_or(0, |o| o.size);
    let change = UsageChange {
        node_id: old.id,
        bytes: file.content.size - old_size,
        files: 0,
    };
    let superseded = old
        .content
        .clone()
        .filter(|o| o.object_key != file.content.object_key);
    let node = Node {
        mtime_ms: file.mtime_ms,
        version: old.version + 1,
        content: Some(file.stored_content()),
        ..old
    };
    (
        CommitOutcome {
            node,
            created: false,
        },
        change,
        superseded,
    )
}

/// Whether `node` is the file a replace expects: the same folder, the version read, still a
/// file (whatever blind index it is under now).
pub(super) fn is_expected_file(node: &Node, file: &CommitFile, version: i64) -> bool {
    node.parent_id == Some(file.parent_id) && node.version == version && node.kind == NodeKind::File
}

/// Whether a commit that adds `growth` bytes checks the tenant's quota: only one that grows
/// usage under an enforced quota (a tenant over a lowered quota can still shrink files).
pub(super) fn checks_quota(file: &CommitFile, growth: i64) -> bool {
    file.enforce_quota && growth > 0
}

/// The statements every commit runs after its node is written, with their values: count
/// the change in the tenant's usage, queue a superseded object (see
/// [`Sql::discard_object_key`]), queue the new object for replication, drop the upload's row.
/// The quota check comes after them.
pub(super) fn after_commit_steps<'a, D: Dialect>(
    file: &'a CommitFile,
    change: UsageChange,
    superseded: Option<&'a FileContent>,
) -> Vec<(&'static str, Vec<Param<'a>>)> {
    let mut steps = Vec::with_capacity(5);
    steps.extend(usage_step::<D>(file.tenant_id, change));
    if let Some(old) = superseded {
        if !old.inline {
            steps.push((
                queue_garbage!(),
                vec![Param::Text(&old.object_key), Param::Int(file.now_ms)],
            ));
        }
        steps.push((
            queue_copy!(),
            queue_params(&old.object_key, ReplicationOp::Delete, file.now_ms),
        ));
    }
    steps.push((
        queue_copy!(),
        queue_params(&file.content.object_key, ReplicationOp::Copy, file.now_ms),
    ));
    if let Some(upload_id) = file.upload_id {
        steps.push((drop_upload!(), vec![Param::Int(upload_id)]));
    }
    steps
}

/// The values of `queue_copy!`: a replication job, due at once.
fn queue_params(object_key: &str, op: ReplicationOp, now_ms: i64) -> Vec<Param<'_>> {
    vec![
        Param::Text(object_key),
        Param::Text(op_column(op)),
        Param::Int(now_ms),
        Param::Int(now_ms),
    ]
}

const TENANT_QUOTA: Locking = locking!("SELECT quota_bytes FROM tenants WHERE id = ?");
pub(super) const LOGIN_FAILURES: Locking =
    locking!("SELECT failed_count, first_failure_ms, locked_until_ms FROM users WHERE id = ?");
const REPLICATION_ATTEMPTS: Locking =
    locking!("SELECT attempts FROM replication_outbox WHERE id = ?");

sql_impl! {
impl Sql<D> {
    /// One node of a tenant, or `NotFound`.
    pub(crate) async fn node(conn: &mut Conn<D>, tenant_id: i64, id: i64) -> TxResult<Node> {
        Self::node_query(conn, NODE_BY_ID_PLAIN, tenant_id, id).await
    }

    /// One node of a tenant, locked until the transaction ends (if the engine locks rows),
    /// or `NotFound`.
    pub(crate) async fn lock_node(conn: &mut Conn<D>, tenant_id: i64, id: i64) -> TxResult<Node> {
        Self::node_query(conn, NODE_BY_ID.sql::<D>(), tenant_id, id).await
    }

    async fn node_query(
        conn: &mut Conn<D>,
        sql: &'static str,
        tenant_id: i64,
        id: i64,
    ) -> TxResult<Node> {
        let row = sqlx::query(sql)
            .bind(tenant_id)
            .bind(id)
            .fetch_optional(conn)
            .await?;
        Ok(rows::node(&row.ok_or(MetaError::NotFound)?)?)
    }

    /// The child of `parent_id` with blind index `name_index`, if there is one.
    pub(crate) async fn child(
        conn: &mut Conn<D>,
        tenant_id: i64,
        parent_id: i64,
        name_index: &[u8],
    ) -> TxResult<Option<Node>> {
        let row = sqlx::query(CHILD_BY_INDEX)
            .bind(tenant_id)
            .bind(parent_id)
            .bind(name_index)
            .fetch_optional(conn)
            .await?;
        Ok(row.as_ref().map(rows::node).transpose()?)
    }

    /// Every child of a folder, in one indexed query.
    pub(crate) async fn children(
        conn: &mut Conn<D>,
        tenant_id: i64,
        parent_id: i64,
    ) -> TxResult<Vec<Node>> {
        let found = sqlx::query(CHILDREN)
            .bind(tenant_id)
            .bind(parent_id)
            .fetch_all(conn)
            .await?;
        Ok(found.iter().map(rows::node).collect::<Result<_, _>>()?)
    }

    /// The sealed bytes stored in the row of the file whose object is `object_key`: `None`
    /// if no row has that object, or its object is in the primary store. One lookup by the
    /// unique `nodes_object_key` index.
    /// A folder's entry by name index with its inline object (`None` for a folder or an
    /// object in the primary store); `None` if there is no such entry.
    pub(crate) async fn child_with_object(
        conn: &mut Conn<D>,
        tenant_id: i64,
        parent_id: i64,
        name_index: &[u8],
    ) -> TxResult<Option<(Node, Option<Vec<u8>>)>> {
        let row = sqlx::query(CHILD_WITH_OBJECT_BY_INDEX)
            .bind(tenant_id)
            .bind(parent_id)
            .bind(name_index)
            .fetch_optional(conn)
            .await?;
        row.map(|row| rows::node_with_inline(&row))
            .transpose()
            .map_err(Into::into)
    }

    pub(crate) async fn inline_object(
        conn: &mut Conn<D>,
        object_key: &str,
    ) -> TxResult<Option<Vec<u8>>> {
        let row = sqlx::query("SELECT inline_object FROM nodes WHERE object_key = ?")
            .bind(object_key)
            .fetch_optional(conn)
            .await?;
        Ok(match row {
            Some(row) => row.opt_blob("inline_object")?,
            None => None,
        })
    }

    /// Bytes and files of a tenant's committed files, in one query.
    pub(crate) async fn usage(conn: &mut Conn<D>, tenant_id: i64) -> TxResult<Usage> {
        let row = sqlx::query(D::USAGE).bind(tenant_id).fetch_one(conn).await?;
        Ok(Usage {
            bytes: row.int("bytes")?,
            files: row.int("files")?,
        })
    }

    /// The tenant's usage count against a recount of its files, both read by one statement
    /// (one snapshot on either engine, so no lock is needed to compare them). `NotFound` if
    /// there is no such tenant.
    pub(crate) async fn usage_against_recount(
        conn: &mut Conn<D>,
        tenant_id: i64,
    ) -> TxResult<UsageCheck> {
        // Static fragments only (the engine's two queries).
        let both = format!(
            "SELECT r.bytes, r.files, c.bytes AS counted_bytes, c.files AS counted_files \
             FROM ({}) r CROSS JOIN ({}) c CROSS JOIN tenants t WHERE t.id = ?",
            D::USAGE.trim_end_matches(';'),
            D::COUNTED_USAGE.trim_end_matches(';')
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(both))
            .bind(tenant_id)
            .bind(tenant_id)
            .bind(tenant_id)
            .fetch_optional(&mut *conn)
            .await?
            .ok_or(MetaError::NotFound)?;
        Ok(UsageCheck {
            recorded: Usage {
                bytes: row.int("bytes")?,
                files: row.int("files")?,
            },
            counted: Usage {
                bytes: row.int("counted_bytes")?,
                files: row.int("counted_files")?,
            },
            recounted: false,
        })
    }

    /// [`Sql::usage_against_recount`] with the tenant's row locked; with `repair`, a count
    /// that differs is replaced by the recount.
    pub(crate) async fn check_usage(
        conn: &mut Conn<D>,
        tenant_id: i64,
        repair: bool,
    ) -> TxResult<UsageCheck> {
        Self::lock_tenant(conn, tenant_id).await?;
        let mut check = Self::usage_against_recount(conn, tenant_id).await?;
        if repair && check.recorded != check.counted {
            sqlx::query("DELETE FROM tenant_usage WHERE tenant_id = ?")
                .bind(tenant_id)
                .execute(&mut *conn)
                .await?;
            sqlx::query(
                "INSERT INTO tenant_usage (tenant_id, shard, bytes, files) \
                 SELECT tenant_id, shard, SUM(size), COUNT(*) FROM \
                 (SELECT tenant_id, id % ? AS shard, size FROM nodes \
                  WHERE tenant_id = ? AND kind = 'f') f \
                 GROUP BY tenant_id, shard",
            )
            .bind(D::USAGE_SHARDS)
            .bind(tenant_id)
            .execute(&mut *conn)
            .await?;
            check.recounted = true;
        }
        Ok(check)
    }

    /// Reads (and, if the engine locks rows, locks) the tenant's row; returns its quota.
    /// `NotFound` if there is no such tenant.
    pub(crate) async fn lock_tenant(conn: &mut Conn<D>, tenant_id: i64) -> TxResult<Option<i64>> {
        let row = sqlx::query(TENANT_QUOTA.sql::<D>())
            .bind(tenant_id)
            .fetch_optional(conn)
            .await?;
        Ok(row.ok_or(MetaError::NotFound)?.opt_int("quota_bytes")?)
    }

    /// Locks the node `id` and checks it is a folder that can hold entries.
    async fn lock_folder(conn: &mut Conn<D>, tenant_id: i64, id: i64) -> TxResult<Node> {
        let parent = Self::lock_node(conn, tenant_id, id).await?;
        match parent.kind {
            NodeKind::Dir => Ok(parent),
            NodeKind::File => Err(MetaError::WrongKind("parent is not a folder").into()),
        }
    }

    /// Creates a folder under an existing folder.
    pub(crate) async fn create_dir(conn: &mut Conn<D>, dir: &NewDir) -> TxResult<Node> {
        Self::lock_folder(conn, dir.tenant_id, dir.parent_id).await?;
        let node = Node {
            id: dir.id,
            tenant_id: dir.tenant_id,
            parent_id: Some(dir.parent_id),
            kind: NodeKind::Dir,
            name_enc: dir.name_enc.clone(),
            name_index: dir.name_index.clone(),
            name_key_version: dir.name_key_version,
            mtime_ms: dir.now_ms,
            ctime_ms: dir.now_ms,
            version: 1,
            content: None,
        };
        Self::insert_dir(conn, &node).await?;
        Ok(node)
    }

    /// Inserts a folder row (also used for a tenant's root).
    pub(crate) async fn insert_dir(conn: &mut Conn<D>, node: &Node) -> TxResult<()> {
        sqlx::query(
            "INSERT INTO nodes (id, tenant_id, parent_id, kind, name_enc, name_index, \
             name_key_version, mtime_ms, ctime_ms, version) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(node.id)
        .bind(node.tenant_id)
        .bind(node.parent_id)
        .bind(KIND_DIR)
        .bind(node.name_enc.as_slice())
        .bind(node.name_index.as_slice())
        .bind(i64::from(node.name_key_version))
        .bind(node.mtime_ms)
        .bind(node.ctime_ms)
        .bind(node.version)
        .execute(conn)
        .await?;
        Ok(())
    }

    /// Commits a file version: a new node, or new content for the file already holding the
    /// name.
    ///
    /// Concurrent commits of the same new name (`expect_node` = `None`, "create or replace")
    /// take effect one after another, exactly as if the clients had uploaded in turn: the
    /// write lock (SQLite) or the folder's row lock (MySQL, across every node on the database)
    /// orders them. The first creates the node, each later one replaces its content
    /// (`created = false`) and queues the superseded object for garbage collection. Nobody
    /// gets an error and there is always exactly one node; nobody's content is overwritten
    /// without their having asked for "create or replace". A caller that wants "replace only
    /// what I read" passes `expect_node` and gets `Conflict` when it lost. Should an insert
    /// still meet a unique violation where writers run side by side, the transaction is
    /// retried, and the retry finds the winner's row and replaces it — or, for a commit that
    /// expected the name to be free, reports `Conflict`.
    pub(crate) async fn commit_file(
        conn: &mut Conn<D>,
        file: &CommitFile,
    ) -> TxResult<CommitOutcome> {
        // The common case under a single writer, a new name, in one statement.
        if D::SERIAL_WRITERS
            && file.expect_node.is_none()
            && file.expect_absent
            && let Some(outcome) = Self::insert_file_if_free(conn, file).await?
        {
            Self::after_commit(conn, file, UsageChange::created(file), None, None).await?;
            return Ok(outcome);
        }
        // Under a single writer, replacing the version the upload read needs that row only:
        // its folder, name and content are as they were if its version is (a rename or
        // replace bumps it). Anything else takes the general path, which says what changed.
        if D::SERIAL_WRITERS
            && let Some((id, version)) = file.expect_node
            && let Some(old) = Self::expected_file(conn, file, id, version).await?
        {
            let (outcome, change, superseded) = Self::replace_content(conn, old, file).await?;
            Self::after_commit(conn, file, change, None, superseded.as_ref()).await?;
            return Ok(outcome);
        }
        let locked_quota = if file.enforce_quota && !D::SERIAL_WRITERS {
            Some(Self::lock_tenant(conn, file.tenant_id).await?)
        } else {
            None
        };
        Self::lock_folder(conn, file.tenant_id, file.parent_id).await?;
        let mut existing =
            Self::child(&mut *conn, file.tenant_id, file.parent_id, &file.name_index).await?;
        if let (None, Some((id, version))) = (&existing, file.expect_node) {
            // A tenant key rotation re-indexes rows without changing their version: the row
            // may no longer be under the index the upload looked it up by.
            existing = Self::expected_file(conn, file, id, version).await?;
        }
        let (outcome, change, superseded) = match (existing, file.expect_node) {
            (Some(old), _) if old.kind == NodeKind::Dir => {
                return Err(MetaError::WrongKind("a folder holds this name").into());
            }
            (Some(old), Some((id, version))) if old.id != id || old.version != version => {
                return Err(MetaError::Conflict.into());
            }
            (None, Some(_)) => return Err(MetaError::Conflict.into()),
            (Some(_), None) if file.expect_absent => return Err(MetaError::Conflict.into()),
            (Some(old), _) => Self::replace_content(conn, old, file).await?,
            (None, None) => (
                Self::insert_file(conn, file).await?,
                UsageChange::created(file),
                None,
            ),
        };
        Self::after_commit(conn, file, change, locked_quota, superseded.as_ref()).await?;
        Ok(outcome)
    }

    /// The file a replace expects, by id: the same row, in the same folder, at the same
    /// version, still a file (whatever blind index it is under now); `None` otherwise.
    async fn expected_file(
        conn: &mut Conn<D>,
        file: &CommitFile,
        id: i64,
        version: i64,
    ) -> TxResult<Option<Node>> {
        match Self::node(conn, file.tenant_id, id).await {
            Ok(node) if is_expected_file(&node, file, version) => Ok(Some(node)),
            Ok(_) => Ok(None),
            Err(TxError::Meta(MetaError::NotFound)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// What every commit does after its node is written: the statements of
    /// [`after_commit_steps`] (count the change in the usage, queue a superseded object, queue
    /// the new object for replication, drop the upload's row), and, when the commit grows the
    /// tenant's usage under an enforced quota, check the quota (`locked_quota` if the tenant's row was locked first, else read now). A change
    /// that shrinks usage is always allowed, so a tenant over a lowered quota can still clean
    /// up. Where the engine takes several statements in one query (SQLite), all of it is one
    /// round trip.
    async fn after_commit(
        conn: &mut Conn<D>,
        file: &CommitFile,
        change: UsageChange,
        locked_quota: Option<Option<i64>>,
        superseded: Option<&FileContent>,
    ) -> TxResult<()> {
        let check = checks_quota(file, change.bytes);
        let steps = after_commit_steps::<D>(file, change, superseded);
        if D::MULTI_STATEMENT {
            // Static fragments only: the statement varies in which parts it has, never in
            // what a caller supplies.
            let mut sql: String = steps.iter().map(|(sql, _)| *sql).collect();
            if check {
                sql.push_str(QUOTA);
            }
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for (_, params) in &steps {
                query = Self::bind_params(query, params);
            }
            if !check {
                query.execute(&mut *conn).await?;
                return Ok(());
            }
            let row = query
                .bind(file.tenant_id)
                .fetch_optional(&mut *conn)
                .await?
                .ok_or(MetaError::NotFound)?;
            let quota = row.opt_int("quota_bytes")?;
            return Self::check_quota(conn, file.tenant_id, quota).await;
        }
        for (sql, params) in &steps {
            Self::bind_params(sqlx::query(*sql), params)
                .execute(&mut *conn)
                .await?;
        }
        if !check {
            return Ok(());
        }
        let quota = match locked_quota {
            Some(quota) => quota,
            None => Self::lock_tenant(conn, file.tenant_id).await?,
        };
        Self::check_quota(conn, file.tenant_id, quota).await
    }

    /// Binds `params` to `query`, in order.
    fn bind_params(mut query: super::Query<D>, params: &[Param<'_>]) -> super::Query<D> {
        for param in params {
            query = match *param {
                Param::Int(v) => query.bind(v),
                Param::Text(v) => query.bind(v),
                Param::Blob(v) => query.bind(v),
                Param::OptBlob(v) => query.bind(v),
            };
        }
        query
    }

    /// Refuses a commit that took the tenant's usage beyond its quota (`None`: no quota).
    async fn check_quota(conn: &mut Conn<D>, tenant_id: i64, quota: Option<i64>) -> TxResult<()> {
        if let Some(quota) = quota
            && Self::usage(conn, tenant_id).await?.bytes > quota
        {
            return Err(MetaError::QuotaExceeded.into());
        }
        Ok(())
    }

    /// Inserts `file` as a new node if its parent is a folder of the tenant and the name is
    /// free there, in one statement. `None` if not (no such folder, a file or folder holds the
    /// name): the general path then finds out which and answers for it.
    async fn insert_file_if_free(
        conn: &mut Conn<D>,
        file: &CommitFile,
    ) -> TxResult<Option<CommitOutcome>> {
        let inserted = Self::bind_params(
            sqlx::query(INSERT_FILE_IF_FREE),
            &insert_if_free_params(file),
        )
        .execute(&mut *conn)
        .await;
        match inserted {
            Ok(done) if D::rows_affected(&done) == 1 => Ok(Some(CommitOutcome {
                node: file.new_node(),
                created: true,
            })),
            Ok(_) => Ok(None),
            Err(error) => match D::map_error(error) {
                MetaError::AlreadyExists => Ok(None),
                other => Err(other.into()),
            },
        }
    }

    /// Inserts a new file node (its folder was locked and the name found free). A unique
    /// violation means another node won the name after all: the attempt is retried.
    async fn insert_file(conn: &mut Conn<D>, file: &CommitFile) -> TxResult<CommitOutcome> {
        let inserted = Self::bind_params(sqlx::query(INSERT_FILE), &new_file_params(file))
            .execute(conn)
            .await;
        match inserted {
            Err(error) if is_unique_violation(&error) => return Err(TxError::RaceLost),
            other => other?,
        };
        Ok(CommitOutcome {
            node: file.new_node(),
            created: true,
        })
    }

    /// Gives an existing file new content, keeping its id and name; the old object becomes
    /// garbage.
    async fn replace_content(
        conn: &mut Conn<D>,
        old: Node,
        file: &CommitFile,
    ) -> TxResult<(CommitOutcome, UsageChange, Option<FileContent>)> {
        let updated = Self::bind_params(sqlx::query(REPLACE_CONTENT), &replace_params(file, &old))
            .execute(&mut *conn)
            .await?;
        if D::rows_affected(&updated) != 1 {
            return Err(MetaError::Conflict.into());
        }
        Ok(replaced(old, file))
    }

    /// Queues an object no row refers to any more: for the garbage collector (both stores)
    /// and for the replicator (so the replica's copy goes too, even if the collector only
    /// reaches the primary). An object kept in its row (`inline`) was never in the primary
    /// store and went with the row: only the replica's copy is left to delete. Where the
    /// engine takes several statements in one query (SQLite), both rows are one round trip.
    async fn discard_object_key(
        conn: &mut Conn<D>,
        object_key: &str,
        inline: bool,
        now_ms: i64,
    ) -> TxResult<()> {
        if inline {
            return Self::queue_replication(conn, object_key, ReplicationOp::Delete, now_ms).await;
        }
        if D::MULTI_STATEMENT {
            sqlx::query(concat!(queue_garbage!(), queue_copy!()))
            .bind(object_key)
            .bind(now_ms)
            .bind(object_key)
            .bind(op_column(ReplicationOp::Delete))
            .bind(now_ms)
            .bind(now_ms)
            .execute(&mut *conn)
            .await?;
            return Ok(());
        }
        sqlx::query(queue_garbage!())
            .bind(object_key)
            .bind(now_ms)
            .execute(&mut *conn)
            .await?;
        Self::queue_replication(conn, object_key, ReplicationOp::Delete, now_ms).await
    }

    /// Adds a replication job, due at once.
    async fn queue_replication(
        conn: &mut Conn<D>,
        object_key: &str,
        op: ReplicationOp,
        now_ms: i64,
    ) -> TxResult<()> {
        sqlx::query(queue_copy!())
        .bind(object_key)
        .bind(op_column(op))
        .bind(now_ms)
        .bind(now_ms)
        .execute(conn)
        .await?;
        Ok(())
    }

    /// Removes a file (queuing its object) or an empty folder. `now_ms` stamps the queued
    /// rows. Where rows are locked, the parent folder is locked first, like every change
    /// inside a folder, so a removal and a commit of the same name take effect one after the
    /// other.
    pub(crate) async fn remove(
        conn: &mut Conn<D>,
        tenant_id: i64,
        id: i64,
        now_ms: i64,
    ) -> TxResult<()> {
        let glance = Self::node(&mut *conn, tenant_id, id).await?;
        let Some(parent_id) = glance.parent_id else {
            return Err(MetaError::WrongKind("root").into());
        };
        let target = if D::SERIAL_WRITERS {
            glance
        } else {
            Self::lock_parent_of(conn, tenant_id, parent_id).await?;
            let target = Self::lock_node(conn, tenant_id, id).await?;
            if target.parent_id != Some(parent_id) {
                return Err(TxError::RaceLost);
            }
            target
        };
        if target.kind == NodeKind::Dir && Self::has_children(conn, tenant_id, id).await? {
            return Err(MetaError::NotEmpty.into());
        }
        Self::delete_node(conn, &target, now_ms).await
    }

    /// Locks the folder a node was seen in. If that folder is gone, the node moved meanwhile:
    /// the attempt is retried.
    async fn lock_parent_of(conn: &mut Conn<D>, tenant_id: i64, parent_id: i64) -> TxResult<()> {
        match Self::lock_node(conn, tenant_id, parent_id).await {
            Err(TxError::Meta(MetaError::NotFound)) => Err(TxError::RaceLost),
            other => other.map(|_| ()),
        }
    }

    async fn has_children(conn: &mut Conn<D>, tenant_id: i64, id: i64) -> TxResult<bool> {
        let any = sqlx::query("SELECT id FROM nodes WHERE tenant_id = ? AND parent_id = ? LIMIT 1")
            .bind(tenant_id)
            .bind(id)
            .fetch_optional(conn)
            .await?;
        Ok(any.is_some())
    }

    /// Deletes a node row (checked by the caller, and locked where rows are); a file's size
    /// leaves the usage count and its object is queued for deletion.
    async fn delete_node(conn: &mut Conn<D>, target: &Node, now_ms: i64) -> TxResult<()> {
        let deleted = sqlx::query("DELETE FROM nodes WHERE tenant_id = ? AND id = ? AND version = ?")
            .bind(target.tenant_id)
            .bind(target.id)
            .bind(target.version)
            .execute(&mut *conn)
            .await?;
        if D::rows_affected(&deleted) != 1 {
            // The row changed since the caller read it: read it again.
            return Err(TxError::RaceLost);
        }
        if let Some(content) = &target.content {
            let removed = UsageChange::removed(target.id, content);
            if let Some((sql, params)) = usage_step::<D>(target.tenant_id, removed) {
                Self::bind_params(sqlx::query(sql), &params)
                    .execute(&mut *conn)
                    .await?;
            }
            Self::discard_object_key(conn, &content.object_key, content.inline, now_ms).await?;
        }
        Ok(())
    }

    /// Moves and/or renames one node: a single row update, whatever the subtree holds. Where
    /// rows are locked: the tenant (for a folder), then both folders in id order, then the
    /// node.
    pub(crate) async fn rename(conn: &mut Conn<D>, rename: &RenameNode) -> TxResult<()> {
        let glance = Self::node(&mut *conn, rename.tenant_id, rename.id).await?;
        let Some(old_parent_id) = glance.parent_id else {
            return Err(MetaError::WrongKind("root").into());
        };
        let moving = if D::SERIAL_WRITERS {
            Self::lock_folder(conn, rename.tenant_id, rename.new_parent_id).await?;
            glance
        } else {
            if glance.kind == NodeKind::Dir {
                Self::lock_tenant(conn, rename.tenant_id).await?;
            }
            Self::lock_both_folders(conn, rename.tenant_id, old_parent_id, rename.new_parent_id)
                .await?;
            let moving = Self::lock_node(conn, rename.tenant_id, rename.id).await?;
            if moving.parent_id != Some(old_parent_id) {
                return Err(TxError::RaceLost);
            }
            moving
        };
        if moving.kind == NodeKind::Dir {
            Self::refuse_cycle(conn, rename.tenant_id, rename.id, rename.new_parent_id).await?;
        }
        let mut target = Self::child(
            &mut *conn,
            rename.tenant_id,
            rename.new_parent_id,
            &rename.new_name_index,
        )
        .await?;
        if let (None, Some(other)) = (&target, &rename.other_name_index) {
            target = Self::child(&mut *conn, rename.tenant_id, rename.new_parent_id, other).await?;
        }
        match target {
            Some(target) if target.id == moving.id => {}
            Some(target)
                if rename.replace
                    && target.kind == NodeKind::File
                    && moving.kind == NodeKind::File =>
            {
                Self::delete_node(conn, &target, rename.now_ms).await?;
            }
            Some(_) => return Err(MetaError::AlreadyExists.into()),
            None => {}
        }
        Self::move_row(conn, &moving, rename).await
    }

    /// Locks the folder a node leaves and the folder it enters, lower id first, so two
    /// renames crossing between the same two folders cannot deadlock.
    async fn lock_both_folders(
        conn: &mut Conn<D>,
        tenant_id: i64,
        old_parent_id: i64,
        new_parent_id: i64,
    ) -> TxResult<()> {
        let (first, second) = if old_parent_id <= new_parent_id {
            (old_parent_id, new_parent_id)
        } else {
            (new_parent_id, old_parent_id)
        };
        for id in [first, second] {
            if id == new_parent_id {
                Self::lock_folder(conn, tenant_id, id).await?;
            } else {
                Self::lock_parent_of(conn, tenant_id, id).await?;
            }
            if first == second {
                break;
            }
        }
        Ok(())
    }

    /// Fails with `Cycle` if `folder_id` is `new_parent_id` or one of its ancestors.
    async fn refuse_cycle(
        conn: &mut Conn<D>,
        tenant_id: i64,
        folder_id: i64,
        new_parent_id: i64,
    ) -> TxResult<()> {
        let mut current = Some(new_parent_id);
        for _ in 0..MAX_TREE_DEPTH {
            let Some(id) = current else {
                return Ok(());
            };
            if id == folder_id {
                return Err(MetaError::Cycle.into());
            }
            let row = sqlx::query("SELECT parent_id FROM nodes WHERE tenant_id = ? AND id = ?")
                .bind(tenant_id)
                .bind(id)
                .fetch_optional(&mut *conn)
                .await?;
            current = row.ok_or(MetaError::NotFound)?.opt_int("parent_id")?;
        }
        Err(MetaError::Database("folder tree deeper than the cycle check allows".into()).into())
    }

    async fn move_row(conn: &mut Conn<D>, moving: &Node, rename: &RenameNode) -> TxResult<()> {
        let moved = sqlx::query(
            "UPDATE nodes SET parent_id = ?, name_enc = ?, name_index = ?, \
             name_key_version = ?, version = version + 1 \
             WHERE tenant_id = ? AND id = ? AND version = ?",
        )
        .bind(rename.new_parent_id)
        .bind(rename.new_name_enc.as_slice())
        .bind(rename.new_name_index.as_slice())
        .bind(i64::from(rename.name_key_version))
        .bind(moving.tenant_id)
        .bind(moving.id)
        .bind(moving.version)
        .execute(conn)
        .await?;
        if D::rows_affected(&moved) != 1 {
            return Err(MetaError::Conflict.into());
        }
        Ok(())
    }

    /// Counts a failed replication attempt and pushes the job back by an exponential backoff.
    pub(crate) async fn record_replication_failure(
        conn: &mut Conn<D>,
        job_id: i64,
        error: &str,
        now_ms: i64,
    ) -> TxResult<()> {
        let row = sqlx::query(REPLICATION_ATTEMPTS.sql::<D>())
            .bind(job_id)
            .fetch_optional(&mut *conn)
            .await?;
        let attempts = row.ok_or(MetaError::NotFound)?.int("attempts")?;
        let attempts = u32::try_from(attempts.saturating_add(1)).unwrap_or(u32::MAX);
        let next_attempt_ms = now_ms.saturating_add(replication_backoff_ms(attempts));
        sqlx::query(
            "UPDATE replication_outbox SET attempts = ?, last_error = ?, next_attempt_ms = ? \
             WHERE id = ?",
        )
        .bind(i64::from(attempts))
        .bind(truncate_error(error))
        .bind(next_attempt_ms)
        .bind(job_id)
        .execute(conn)
        .await?;
        Ok(())
    }
}
}

pub(super) fn is_unique_violation(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .is_some_and(|db| db.kind() == sqlx::error::ErrorKind::UniqueViolation)
}
