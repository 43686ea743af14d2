//! The namespace inside write transactions: folders, file commits, removal and renames.
//!
//! Every function here runs on a connection that already holds SQLite's write lock
//! (`BEGIN IMMEDIATE`), so a read followed by a write cannot be overtaken by another writer.
//! Updates still carry their `version` guard so that the same statements stay correct on an
//! engine whose transactions do not serialise writers.

use sqlx::{Executor, Sqlite, SqliteConnection};

use super::rows::{self, KIND_DIR, KIND_FILE, node_columns, op_column};
use super::sqlite_error;
use crate::{
    CommitFile, CommitOutcome, FileContent, MetaError, MetaResult, NewDir, Node, NodeKind,
    RenameNode, ReplicationOp, Usage,
};

/// Deepest folder nesting the cycle check walks before it declares the tree corrupt.
const MAX_TREE_DEPTH: usize = 10_000;

const NODE_BY_ID: &str = concat!(
    "SELECT ",
    node_columns!(),
    " FROM nodes WHERE tenant_id = ? AND id = ?"
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
const USAGE: &str = "SELECT COALESCE(SUM(size), 0) AS bytes, COUNT(*) AS files \
                     FROM nodes WHERE tenant_id = ? AND kind = 'f'";

/// One node of a tenant, or `NotFound`.
pub(super) async fn node<'e>(
    db: impl Executor<'e, Database = Sqlite>,
    tenant_id: i64,
    id: i64,
) -> MetaResult<Node> {
    let row = sqlx::query(NODE_BY_ID)
        .bind(tenant_id)
        .bind(id)
        .fetch_optional(db)
        .await
        .map_err(sqlite_error)?;
    rows::node(&row.ok_or(MetaError::NotFound)?)
}

/// The child of `parent_id` with blind index `name_index`, if there is one.
pub(super) async fn child<'e>(
    db: impl Executor<'e, Database = Sqlite>,
    tenant_id: i64,
    parent_id: i64,
    name_index: &[u8],
) -> MetaResult<Option<Node>> {
    let row = sqlx::query(CHILD_BY_INDEX)
        .bind(tenant_id)
        .bind(parent_id)
        .bind(name_index)
        .fetch_optional(db)
        .await
        .map_err(sqlite_error)?;
    row.as_ref().map(rows::node).transpose()
}

/// Every child of a folder, in one indexed query.
pub(super) async fn children<'e>(
    db: impl Executor<'e, Database = Sqlite>,
    tenant_id: i64,
    parent_id: i64,
) -> MetaResult<Vec<Node>> {
    let found = sqlx::query(CHILDREN)
        .bind(tenant_id)
        .bind(parent_id)
        .fetch_all(db)
        .await
        .map_err(sqlite_error)?;
    found.iter().map(rows::node).collect()
}

/// Bytes and files of a tenant's committed files, in one query.
pub(super) async fn usage<'e>(
    db: impl Executor<'e, Database = Sqlite>,
    tenant_id: i64,
) -> MetaResult<Usage> {
    let (bytes, files): (i64, i64) = sqlx::query_as(USAGE)
        .bind(tenant_id)
        .fetch_one(db)
        .await
        .map_err(sqlite_error)?;
    Ok(Usage { bytes, files })
}

/// Loads the node `id` and checks it is a folder that can hold entries.
async fn folder(conn: &mut SqliteConnection, tenant_id: i64, id: i64) -> MetaResult<Node> {
    let parent = node(&mut *conn, tenant_id, id).await?;
    match parent.kind {
        NodeKind::Dir => Ok(parent),
        NodeKind::File => Err(MetaError::WrongKind("parent is not a folder")),
    }
}

/// Creates a folder under an existing folder.
pub(super) async fn create_dir(conn: &mut SqliteConnection, dir: &NewDir) -> MetaResult<Node> {
    folder(conn, dir.tenant_id, dir.parent_id).await?;
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
pub(super) async fn insert_dir(conn: &mut SqliteConnection, node: &Node) -> MetaResult<()> {
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
    .await
    .map_err(sqlite_error)?;
    Ok(())
}

/// Commits a file version: a new node, or new content for the file already holding the name.
///
/// Concurrent commits of the same new name (`expect_node` = `None`, "create or replace"):
/// the lookup and the insert run under the write lock, so the commits take effect one after
/// another, exactly as if the clients had uploaded in turn — the first creates the node, each
/// later one replaces its content (`created = false`) and queues the superseded object for
/// garbage collection. Nobody gets an error and there is always exactly one node; nobody's
/// content is overwritten without their having asked for "create or replace". A caller that
/// wants "replace only what I read" passes `expect_node` and gets `Conflict` when it lost.
/// (An engine without serialised writers must retry a unique violation on insert as a
/// replace to keep this behaviour.)
pub(super) async fn commit_file(
    conn: &mut SqliteConnection,
    file: &CommitFile,
) -> MetaResult<CommitOutcome> {
    if file.expect_node.is_none()
        && file.expect_absent
        && let Some(outcome) = insert_file_if_free(conn, file).await?
    {
        queue_and_check(conn, file, file.content.size).await?;
        return Ok(outcome);
    }
    folder(conn, file.tenant_id, file.parent_id).await?;
    let existing = child(&mut *conn, file.tenant_id, file.parent_id, &file.name_index).await?;
    let (outcome, growth) = match (existing, file.expect_node) {
        (Some(old), _) if old.kind == NodeKind::Dir => {
            return Err(MetaError::WrongKind("a folder holds this name"));
        }
        (Some(old), Some((id, version))) if old.id != id || old.version != version => {
            return Err(MetaError::Conflict);
        }
        (None, Some(_)) => return Err(MetaError::Conflict),
        (Some(_), None) if file.expect_absent => return Err(MetaError::Conflict),
        (Some(old), _) => replace_content(conn, old, file).await?,
        // Under the write lock the parent was just read and the name found free.
        (None, None) => (
            insert_file_if_free(conn, file)
                .await?
                .ok_or(MetaError::Conflict)?,
            file.content.size,
        ),
    };
    queue_and_check(conn, file, growth).await?;
    Ok(outcome)
}

macro_rules! queue_copy {
    () => {
        "INSERT INTO replication_outbox (object_key, op, attempts, created_ms, next_attempt_ms) \
         VALUES (?, ?, 0, ?, ?);"
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

/// What every commit does after its node is written, in one round trip to the database: queue
/// the object for replication, drop the upload's row, and, when the commit grows the tenant's
/// usage under an enforced quota, read that quota (then checked against the usage). A change
/// that shrinks usage is always allowed, so a tenant over a lowered quota can still clean up.
async fn queue_and_check(
    conn: &mut SqliteConnection,
    file: &CommitFile,
    growth: i64,
) -> MetaResult<()> {
    let check = file.enforce_quota && growth > 0;
    let sql = match (file.upload_id.is_some(), check) {
        (false, false) => queue_copy!(),
        (true, false) => concat!(queue_copy!(), drop_upload!()),
        (false, true) => concat!(queue_copy!(), read_quota!()),
        (true, true) => concat!(queue_copy!(), drop_upload!(), read_quota!()),
    };
    let mut query = sqlx::query(sql)
        .bind(&file.content.object_key)
        .bind(op_column(ReplicationOp::Copy))
        .bind(file.now_ms)
        .bind(file.now_ms);
    if let Some(upload_id) = file.upload_id {
        query = query.bind(upload_id);
    }
    if !check {
        query.execute(&mut *conn).await.map_err(sqlite_error)?;
        return Ok(());
    }
    let row = query
        .bind(file.tenant_id)
        .fetch_optional(&mut *conn)
        .await
        .map_err(sqlite_error)?
        .ok_or(MetaError::NotFound)?;
    let quota: Option<i64> = sqlx::Row::try_get(&row, 0).map_err(sqlite_error)?;
    if let Some(quota) = quota
        && usage(conn, file.tenant_id).await?.bytes > quota
    {
        return Err(MetaError::QuotaExceeded);
    }
    Ok(())
}

/// The common case, a new name, in one statement: inserts the file if its parent is a folder
/// of the tenant and the name is free there. `None` if not (no such folder, a file or folder
/// holds the name): the general path then finds out which and answers for it.
async fn insert_file_if_free(
    conn: &mut SqliteConnection,
    file: &CommitFile,
) -> MetaResult<Option<CommitOutcome>> {
    let c = &file.content;
    let inserted = sqlx::query(
        "INSERT INTO nodes (id, tenant_id, parent_id, kind, name_enc, name_index, mtime_ms, \
         ctime_ms, version, size, object_key, content_id, wrapped_dek, key_version, chunk_size, \
         content_hash_enc) SELECT ?, ?, ?, ?, ?, ?, ?, ?, 1, ?, ?, ?, ?, ?, ?, ? \
         WHERE EXISTS (SELECT 1 FROM nodes WHERE tenant_id = ? AND id = ? AND kind = ?)",
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
    .bind(file.tenant_id)
    .bind(file.parent_id)
    .bind(KIND_DIR)
    .execute(&mut *conn)
    .await;
    match inserted {
        Ok(done) if done.rows_affected() == 1 => Ok(Some(new_file_outcome(file))),
        Ok(_) => Ok(None),
        Err(e) => match sqlite_error(e) {
            MetaError::AlreadyExists => Ok(None),
            e => Err(e),
        },
    }
}

/// The outcome of inserting `file` as a new node.
fn new_file_outcome(file: &CommitFile) -> CommitOutcome {
    CommitOutcome {
        node: file.new_node(),
        created: true,
    }
}

/// Gives an existing file new content, keeping its id and name; the old object becomes garbage.
async fn replace_content(
    conn: &mut SqliteConnection,
    old: Node,
    file: &CommitFile,
) -> MetaResult<(CommitOutcome, i64)> {
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
    .await
    .map_err(sqlite_error)?;
    if updated.rows_affected() != 1 {
        return Err(MetaError::Conflict);
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
    conn: &mut SqliteConnection,
    old: &FileContent,
    new: &FileContent,
    now_ms: i64,
) -> MetaResult<()> {
    if old.object_key == new.object_key {
        return Ok(());
    }
    discard_object_key(conn, &old.object_key, now_ms).await
}

/// Queues an object no row refers to any more: for the garbage collector (both stores) and
/// for the replicator (so the replica's copy goes too, even if the collector only reaches
/// the primary).
async fn discard_object_key(
    conn: &mut SqliteConnection,
    object_key: &str,
    now_ms: i64,
) -> MetaResult<()> {
    sqlx::query("INSERT INTO garbage (object_key, created_ms) VALUES (?, ?)")
        .bind(object_key)
        .bind(now_ms)
        .execute(&mut *conn)
        .await
        .map_err(sqlite_error)?;
    queue_replication(conn, object_key, ReplicationOp::Delete, now_ms).await
}

/// Adds a replication job, due at once.
async fn queue_replication(
    conn: &mut SqliteConnection,
    object_key: &str,
    op: ReplicationOp,
    now_ms: i64,
) -> MetaResult<()> {
    sqlx::query(
        "INSERT INTO replication_outbox (object_key, op, attempts, created_ms, next_attempt_ms) \
         VALUES (?, ?, 0, ?, ?)",
    )
    .bind(object_key)
    .bind(op_column(op))
    .bind(now_ms)
    .bind(now_ms)
    .execute(conn)
    .await
    .map_err(sqlite_error)?;
    Ok(())
}

/// Deletes an upload row; a missing row is fine.
pub(super) async fn delete_upload<'e>(
    db: impl Executor<'e, Database = Sqlite>,
    upload_id: i64,
) -> MetaResult<()> {
    sqlx::query("DELETE FROM uploads WHERE id = ?")
        .bind(upload_id)
        .execute(db)
        .await
        .map_err(sqlite_error)?;
    Ok(())
}

/// Removes a file (queuing its object) or an empty folder. `now_ms` stamps the queued rows.
pub(super) async fn remove(
    conn: &mut SqliteConnection,
    tenant_id: i64,
    id: i64,
    now_ms: i64,
) -> MetaResult<()> {
    let target = node(&mut *conn, tenant_id, id).await?;
    if target.parent_id.is_none() {
        return Err(MetaError::WrongKind("root"));
    }
    if target.kind == NodeKind::Dir && has_children(conn, tenant_id, id).await? {
        return Err(MetaError::NotEmpty);
    }
    delete_node(conn, &target, now_ms).await
}

async fn has_children(conn: &mut SqliteConnection, tenant_id: i64, id: i64) -> MetaResult<bool> {
    let any: Option<i64> =
        sqlx::query_scalar("SELECT 1 FROM nodes WHERE tenant_id = ? AND parent_id = ? LIMIT 1")
            .bind(tenant_id)
            .bind(id)
            .fetch_optional(conn)
            .await
            .map_err(sqlite_error)?;
    Ok(any.is_some())
}

/// Deletes a node row (checked by the caller); a file's object is queued for deletion.
async fn delete_node(conn: &mut SqliteConnection, target: &Node, now_ms: i64) -> MetaResult<()> {
    sqlx::query("DELETE FROM nodes WHERE tenant_id = ? AND id = ? AND version = ?")
        .bind(target.tenant_id)
        .bind(target.id)
        .bind(target.version)
        .execute(&mut *conn)
        .await
        .map_err(sqlite_error)?;
    if let Some(content) = &target.content {
        discard_object_key(conn, &content.object_key, now_ms).await?;
    }
    Ok(())
}

/// Moves and/or renames one node: a single row update, whatever the subtree holds.
pub(super) async fn rename(conn: &mut SqliteConnection, rename: &RenameNode) -> MetaResult<()> {
    let moving = node(&mut *conn, rename.tenant_id, rename.id).await?;
    if moving.parent_id.is_none() {
        return Err(MetaError::WrongKind("root"));
    }
    folder(conn, rename.tenant_id, rename.new_parent_id).await?;
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
        Some(_) => return Err(MetaError::AlreadyExists),
        None => {}
    }
    move_row(conn, &moving, rename).await
}

/// Fails with `Cycle` if `folder_id` is `new_parent_id` or one of its ancestors.
async fn refuse_cycle(
    conn: &mut SqliteConnection,
    tenant_id: i64,
    folder_id: i64,
    new_parent_id: i64,
) -> MetaResult<()> {
    let mut current = Some(new_parent_id);
    for _ in 0..MAX_TREE_DEPTH {
        let Some(id) = current else {
            return Ok(());
        };
        if id == folder_id {
            return Err(MetaError::Cycle);
        }
        current = sqlx::query_scalar("SELECT parent_id FROM nodes WHERE tenant_id = ? AND id = ?")
            .bind(tenant_id)
            .bind(id)
            .fetch_optional(&mut *conn)
            .await
            .map_err(sqlite_error)?
            .ok_or(MetaError::NotFound)?;
    }
    Err(MetaError::Database(
        "folder tree deeper than the cycle check allows".into(),
    ))
}

async fn move_row(
    conn: &mut SqliteConnection,
    moving: &Node,
    rename: &RenameNode,
) -> MetaResult<()> {
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
    .await
    .map_err(sqlite_error)?;
    if moved.rows_affected() != 1 {
        return Err(MetaError::Conflict);
    }
    Ok(())
}
