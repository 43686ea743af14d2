//! The namespace inside MySQL transactions: folders, file commits, removal and renames.
//!
//! InnoDB runs writers side by side, so where the SQLite store relies on its single writer
//! this one takes row locks (`SELECT ... FOR UPDATE`), always in the same order — tenant row,
//! then folder row, then the node itself — to keep deadlocks rare (the store retries the few
//! that happen):
//! - every change inside a folder (create, commit, remove, move in or out) locks the
//!   folder's row first, so a lookup of a name and the change that follows cannot be
//!   overtaken by another node;
//! - a folder that moves locks its tenant's row, so two folder moves of one tenant never
//!   interleave their cycle checks (A into B while B moves into A);
//! - a commit that enforces a quota locks the tenant's row, so two commits cannot both fit
//!   under the quota that only one of them fits under.
//!
//! Updates still carry their `version` guard, as in the SQLite store.

use sqlx::{Executor, MySql, MySqlConnection};

use super::rows::{self, KIND_DIR, KIND_FILE, node_columns, op_column};
use super::{TxError, TxResult};
use crate::{
    CommitFile, CommitOutcome, FileContent, MetaError, NewDir, Node, NodeKind, RenameNode,
    ReplicationOp, Usage,
};

/// Deepest folder nesting the cycle check walks before it declares the tree corrupt.
const MAX_TREE_DEPTH: usize = 10_000;

const NODE_BY_ID: &str = concat!(
    "SELECT ",
    node_columns!(),
    " FROM nodes WHERE tenant_id = ? AND id = ?"
);
const NODE_BY_ID_FOR_UPDATE: &str = concat!(
    "SELECT ",
    node_columns!(),
    " FROM nodes WHERE tenant_id = ? AND id = ? FOR UPDATE"
);
const CHILD_BY_INDEX: &str = concat!(
    "SELECT ",
    node_columns!(),
    " FROM nodes WHERE tenant_id = ? AND parent_id = ? AND name_index = ?"
);
/// Served by the `nodes_name_unique_in_folder` index (tenant_id, parent_id, name_index).
pub(super) const CHILDREN: &str = concat!(
    "SELECT ",
    node_columns!(),
    " FROM nodes WHERE tenant_id = ? AND parent_id = ?"
);
/// `SUM` of a BIGINT is a DECIMAL in MySQL: cast it back.
const USAGE: &str = "SELECT CAST(COALESCE(SUM(size), 0) AS SIGNED) AS bytes, COUNT(*) AS files \
                     FROM nodes WHERE tenant_id = ? AND kind = 'f'";

/// One node of a tenant, or `NotFound`.
pub(super) async fn node<'e>(
    db: impl Executor<'e, Database = MySql>,
    tenant_id: i64,
    id: i64,
) -> TxResult<Node> {
    let row = sqlx::query(NODE_BY_ID)
        .bind(tenant_id)
        .bind(id)
        .fetch_optional(db)
        .await?;
    Ok(rows::node(&row.ok_or(MetaError::NotFound)?)?)
}

/// One node of a tenant, locked until the transaction ends, or `NotFound`.
pub(super) async fn lock_node(
    conn: &mut MySqlConnection,
    tenant_id: i64,
    id: i64,
) -> TxResult<Node> {
    let row = sqlx::query(NODE_BY_ID_FOR_UPDATE)
        .bind(tenant_id)
        .bind(id)
        .fetch_optional(conn)
        .await?;
    Ok(rows::node(&row.ok_or(MetaError::NotFound)?)?)
}

/// The child of `parent_id` with blind index `name_index`, if there is one.
pub(super) async fn child<'e>(
    db: impl Executor<'e, Database = MySql>,
    tenant_id: i64,
    parent_id: i64,
    name_index: &[u8],
) -> TxResult<Option<Node>> {
    let row = sqlx::query(CHILD_BY_INDEX)
        .bind(tenant_id)
        .bind(parent_id)
        .bind(name_index)
        .fetch_optional(db)
        .await?;
    Ok(row.as_ref().map(rows::node).transpose()?)
}

/// Every child of a folder, in one indexed query.
pub(super) async fn children<'e>(
    db: impl Executor<'e, Database = MySql>,
    tenant_id: i64,
    parent_id: i64,
) -> TxResult<Vec<Node>> {
    let found = sqlx::query(CHILDREN)
        .bind(tenant_id)
        .bind(parent_id)
        .fetch_all(db)
        .await?;
    Ok(found.iter().map(rows::node).collect::<Result<_, _>>()?)
}

/// Bytes and files of a tenant's committed files, in one query.
pub(super) async fn usage<'e>(
    db: impl Executor<'e, Database = MySql>,
    tenant_id: i64,
) -> TxResult<Usage> {
    let (bytes, files): (i64, i64) = sqlx::query_as(USAGE).bind(tenant_id).fetch_one(db).await?;
    Ok(Usage { bytes, files })
}

/// Locks the tenant's row; returns its quota. `NotFound` if there is no such tenant.
async fn lock_tenant(conn: &mut MySqlConnection, tenant_id: i64) -> TxResult<Option<i64>> {
    let quota: Option<Option<i64>> =
        sqlx::query_scalar("SELECT quota_bytes FROM tenants WHERE id = ? FOR UPDATE")
            .bind(tenant_id)
            .fetch_optional(conn)
            .await?;
    Ok(quota.ok_or(MetaError::NotFound)?)
}

/// Locks the node `id` and checks it is a folder that can hold entries.
async fn lock_folder(conn: &mut MySqlConnection, tenant_id: i64, id: i64) -> TxResult<Node> {
    let parent = lock_node(conn, tenant_id, id).await?;
    match parent.kind {
        NodeKind::Dir => Ok(parent),
        NodeKind::File => Err(MetaError::WrongKind("parent is not a folder").into()),
    }
}

/// Creates a folder under an existing folder.
pub(super) async fn create_dir(conn: &mut MySqlConnection, dir: &NewDir) -> TxResult<Node> {
    lock_folder(conn, dir.tenant_id, dir.parent_id).await?;
    let node = Node {
        id: dir.id,
        tenant_id: dir.tenant_id,
        parent_id: Some(dir.parent_id),
        kind: NodeKind::Dir,
        name_enc: dir.name_enc.clone(),
        name_index: dir.name_index.clone(),
        mtime_ms: dir.now_ms,
        ctime_ms: dir.now_ms,
        version: 1,
        content: None,
    };
    insert_dir(conn, &node).await?;
    Ok(node)
}

/// Inserts a folder row (also used for a tenant's root).
pub(super) async fn insert_dir(conn: &mut MySqlConnection, node: &Node) -> TxResult<()> {
    sqlx::query(
        "INSERT INTO nodes (id, tenant_id, parent_id, kind, name_enc, name_index, \
         mtime_ms, ctime_ms, version) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(node.id)
    .bind(node.tenant_id)
    .bind(node.parent_id)
    .bind(KIND_DIR)
    .bind(&node.name_enc)
    .bind(&node.name_index)
    .bind(node.mtime_ms)
    .bind(node.ctime_ms)
    .bind(node.version)
    .execute(conn)
    .await?;
    Ok(())
}

/// Commits a file version: a new node, or new content for the file already holding the name.
///
/// Same semantics as the SQLite store: concurrent "create or replace" commits of one new
/// name take effect one after another (the folder's row lock orders them, here across every
/// node on the database). Should an insert still meet a unique violation, the transaction
/// is retried, and the retry finds the winner's row and replaces it — or, for a commit that
/// expected the name to be free, reports `Conflict`.
pub(super) async fn commit_file(
    conn: &mut MySqlConnection,
    file: &CommitFile,
) -> TxResult<CommitOutcome> {
    let quota = if file.enforce_quota {
        lock_tenant(conn, file.tenant_id).await?
    } else {
        None
    };
    lock_folder(conn, file.tenant_id, file.parent_id).await?;
    let existing = child(&mut *conn, file.tenant_id, file.parent_id, &file.name_index).await?;
    let (outcome, growth) = match (existing, file.expect_node) {
        (Some(old), _) if old.kind == NodeKind::Dir => {
            return Err(MetaError::WrongKind("a folder holds this name").into());
        }
        (Some(old), Some((id, version))) if old.id != id || old.version != version => {
            return Err(MetaError::Conflict.into());
        }
        (None, Some(_)) => return Err(MetaError::Conflict.into()),
        (Some(_), None) if file.expect_absent => return Err(MetaError::Conflict.into()),
        (Some(old), _) => replace_content(conn, old, file).await?,
        (None, None) => insert_file(conn, file).await?,
    };
    queue_replication(
        conn,
        &file.content.object_key,
        ReplicationOp::Copy,
        file.now_ms,
    )
    .await?;
    if let Some(upload_id) = file.upload_id {
        delete_upload(&mut *conn, upload_id).await?;
    }
    if let Some(quota) = quota {
        check_quota(conn, file.tenant_id, growth, quota).await?;
    }
    Ok(outcome)
}

/// Inserts a new file node; returns the outcome and the bytes it adds.
async fn insert_file(
    conn: &mut MySqlConnection,
    file: &CommitFile,
) -> TxResult<(CommitOutcome, i64)> {
    let c = &file.content;
    let inserted = sqlx::query(
        "INSERT INTO nodes (id, tenant_id, parent_id, kind, name_enc, name_index, mtime_ms, \
         ctime_ms, version, size, object_key, content_id, wrapped_dek, key_version, chunk_size, \
         content_hash_enc) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 1, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(file.new_id)
    .bind(file.tenant_id)
    .bind(file.parent_id)
    .bind(KIND_FILE)
    .bind(&file.name_enc)
    .bind(&file.name_index)
    .bind(file.mtime_ms)
    .bind(file.now_ms)
    .bind(c.size)
    .bind(&c.object_key)
    .bind(&c.content_id)
    .bind(&c.wrapped_dek)
    .bind(i64::from(c.key_version))
    .bind(i64::from(c.chunk_size))
    .bind(&c.content_hash_enc)
    .execute(conn)
    .await;
    match inserted {
        Err(error) if is_unique_violation(&error) => return Err(TxError::RaceLost),
        other => other?,
    };
    Ok((
        CommitOutcome {
            node: file.new_node(),
            created: true,
        },
        c.size,
    ))
}

fn is_unique_violation(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .is_some_and(|db| db.kind() == sqlx::error::ErrorKind::UniqueViolation)
}

/// Gives an existing file new content, keeping its id and name; the old object becomes garbage.
async fn replace_content(
    conn: &mut MySqlConnection,
    old: Node,
    file: &CommitFile,
) -> TxResult<(CommitOutcome, i64)> {
    let c = &file.content;
    let updated = sqlx::query(
        "UPDATE nodes SET size = ?, object_key = ?, content_id = ?, wrapped_dek = ?, \
         key_version = ?, chunk_size = ?, content_hash_enc = ?, mtime_ms = ?, \
         version = version + 1 WHERE tenant_id = ? AND id = ? AND version = ?",
    )
    .bind(c.size)
    .bind(&c.object_key)
    .bind(&c.content_id)
    .bind(&c.wrapped_dek)
    .bind(i64::from(c.key_version))
    .bind(i64::from(c.chunk_size))
    .bind(&c.content_hash_enc)
    .bind(file.mtime_ms)
    .bind(old.tenant_id)
    .bind(old.id)
    .bind(old.version)
    .execute(&mut *conn)
    .await?;
    if updated.rows_affected() != 1 {
        return Err(MetaError::Conflict.into());
    }
    let old_size = old.content.as_ref().map_or(0, |o| o.size);
    if let Some(old_content) = &old.content {
        discard_object(conn, old_content, c, file.now_ms).await?;
    }
    let node = Node {
        mtime_ms: file.mtime_ms,
        version: old.version + 1,
        content: Some(c.clone()),
        ..old
    };
    Ok((
        CommitOutcome {
            node,
            created: false,
        },
        c.size - old_size,
    ))
}

/// Queues a superseded object for garbage collection, unless the new version reuses it.
async fn discard_object(
    conn: &mut MySqlConnection,
    old: &FileContent,
    new: &FileContent,
    now_ms: i64,
) -> TxResult<()> {
    if old.object_key == new.object_key {
        return Ok(());
    }
    discard_object_key(conn, &old.object_key, now_ms).await
}

/// Queues an object no row refers to any more: for the garbage collector (both stores) and
/// for the replicator (so the replica's copy goes too).
async fn discard_object_key(
    conn: &mut MySqlConnection,
    object_key: &str,
    now_ms: i64,
) -> TxResult<()> {
    sqlx::query("INSERT INTO garbage (object_key, created_ms) VALUES (?, ?)")
        .bind(object_key)
        .bind(now_ms)
        .execute(&mut *conn)
        .await?;
    queue_replication(conn, object_key, ReplicationOp::Delete, now_ms).await
}

/// Adds a replication job, due at once.
async fn queue_replication(
    conn: &mut MySqlConnection,
    object_key: &str,
    op: ReplicationOp,
    now_ms: i64,
) -> TxResult<()> {
    sqlx::query(
        "INSERT INTO replication_outbox (object_key, op, attempts, created_ms, next_attempt_ms) \
         VALUES (?, ?, 0, ?, ?)",
    )
    .bind(object_key)
    .bind(op_column(op))
    .bind(now_ms)
    .bind(now_ms)
    .execute(conn)
    .await?;
    Ok(())
}

/// Deletes an upload row; a missing row is fine.
pub(super) async fn delete_upload<'e>(
    db: impl Executor<'e, Database = MySql>,
    upload_id: i64,
) -> TxResult<()> {
    sqlx::query("DELETE FROM uploads WHERE id = ?")
        .bind(upload_id)
        .execute(db)
        .await?;
    Ok(())
}

/// Refuses a change that grew the tenant's usage beyond its quota. A change that shrinks
/// usage is always allowed, so a tenant over a lowered quota can still clean up.
async fn check_quota(
    conn: &mut MySqlConnection,
    tenant_id: i64,
    growth: i64,
    quota: i64,
) -> TxResult<()> {
    if growth > 0 && usage(conn, tenant_id).await?.bytes > quota {
        return Err(MetaError::QuotaExceeded.into());
    }
    Ok(())
}

/// Removes a file (queuing its object) or an empty folder. `now_ms` stamps the queued rows.
/// Locks the parent folder first, like every change inside a folder, so a removal and a
/// commit of the same name take effect one after the other.
pub(super) async fn remove(
    conn: &mut MySqlConnection,
    tenant_id: i64,
    id: i64,
    now_ms: i64,
) -> TxResult<()> {
    let glance = node(&mut *conn, tenant_id, id).await?;
    let Some(parent_id) = glance.parent_id else {
        return Err(MetaError::WrongKind("root").into());
    };
    lock_parent_of(conn, tenant_id, parent_id).await?;
    let target = lock_node(conn, tenant_id, id).await?;
    if target.parent_id != Some(parent_id) {
        return Err(TxError::RaceLost);
    }
    if target.kind == NodeKind::Dir && has_children(conn, tenant_id, id).await? {
        return Err(MetaError::NotEmpty.into());
    }
    delete_node(conn, &target, now_ms).await
}

/// Locks the folder a node was seen in. If that folder is gone, the node moved meanwhile:
/// the attempt is retried.
async fn lock_parent_of(
    conn: &mut MySqlConnection,
    tenant_id: i64,
    parent_id: i64,
) -> TxResult<()> {
    match lock_node(conn, tenant_id, parent_id).await {
        Err(TxError::Meta(MetaError::NotFound)) => Err(TxError::RaceLost),
        other => other.map(|_| ()),
    }
}

async fn has_children(conn: &mut MySqlConnection, tenant_id: i64, id: i64) -> TxResult<bool> {
    let any: Option<i64> =
        sqlx::query_scalar("SELECT id FROM nodes WHERE tenant_id = ? AND parent_id = ? LIMIT 1")
            .bind(tenant_id)
            .bind(id)
            .fetch_optional(conn)
            .await?;
    Ok(any.is_some())
}

/// Deletes a node row (checked by the caller); a file's object is queued for deletion.
async fn delete_node(conn: &mut MySqlConnection, target: &Node, now_ms: i64) -> TxResult<()> {
    sqlx::query("DELETE FROM nodes WHERE tenant_id = ? AND id = ? AND version = ?")
        .bind(target.tenant_id)
        .bind(target.id)
        .bind(target.version)
        .execute(&mut *conn)
        .await?;
    if let Some(content) = &target.content {
        discard_object_key(conn, &content.object_key, now_ms).await?;
    }
    Ok(())
}

/// Moves and/or renames one node: a single row update, whatever the subtree holds. Locks the
/// tenant (for a folder), then both folders in id order, then the node.
pub(super) async fn rename(conn: &mut MySqlConnection, rename: &RenameNode) -> TxResult<()> {
    let glance = node(&mut *conn, rename.tenant_id, rename.id).await?;
    let Some(old_parent_id) = glance.parent_id else {
        return Err(MetaError::WrongKind("root").into());
    };
    if glance.kind == NodeKind::Dir {
        lock_tenant(conn, rename.tenant_id).await?;
    }
    lock_both_folders(conn, rename.tenant_id, old_parent_id, rename.new_parent_id).await?;
    let moving = lock_node(conn, rename.tenant_id, rename.id).await?;
    if moving.parent_id != Some(old_parent_id) {
        return Err(TxError::RaceLost);
    }
    if moving.kind == NodeKind::Dir {
        refuse_cycle(conn, rename.tenant_id, rename.id, rename.new_parent_id).await?;
    }
    let target = child(
        &mut *conn,
        rename.tenant_id,
        rename.new_parent_id,
        &rename.new_name_index,
    )
    .await?;
    match target {
        Some(target) if target.id == moving.id => {}
        Some(target)
            if rename.replace && target.kind == NodeKind::File && moving.kind == NodeKind::File =>
        {
            delete_node(conn, &target, rename.now_ms).await?;
        }
        Some(_) => return Err(MetaError::AlreadyExists.into()),
        None => {}
    }
    move_row(conn, &moving, rename).await
}

/// Locks the folder a node leaves and the folder it enters, lower id first, so two renames
/// crossing between the same two folders cannot deadlock.
async fn lock_both_folders(
    conn: &mut MySqlConnection,
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
            lock_folder(conn, tenant_id, id).await?;
        } else {
            lock_parent_of(conn, tenant_id, id).await?;
        }
        if first == second {
            break;
        }
    }
    Ok(())
}

/// Fails with `Cycle` if `folder_id` is `new_parent_id` or one of its ancestors.
async fn refuse_cycle(
    conn: &mut MySqlConnection,
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
        current = sqlx::query_scalar("SELECT parent_id FROM nodes WHERE tenant_id = ? AND id = ?")
            .bind(tenant_id)
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?
            .ok_or(MetaError::NotFound)?;
    }
    Err(MetaError::Database("folder tree deeper than the cycle check allows".into()).into())
}

async fn move_row(conn: &mut MySqlConnection, moving: &Node, rename: &RenameNode) -> TxResult<()> {
    let moved = sqlx::query(
        "UPDATE nodes SET parent_id = ?, name_enc = ?, name_index = ?, version = version + 1 \
         WHERE tenant_id = ? AND id = ? AND version = ?",
    )
    .bind(rename.new_parent_id)
    .bind(&rename.new_name_enc)
    .bind(&rename.new_name_index)
    .bind(moving.tenant_id)
    .bind(moving.id)
    .bind(moving.version)
    .execute(conn)
    .await?;
    if moved.rows_affected() != 1 {
        return Err(MetaError::Conflict.into());
    }
    Ok(())
}
