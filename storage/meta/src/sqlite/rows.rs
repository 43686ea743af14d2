//! Decoding SQLite rows into the crate's row types, refusing rows that break the schema's rules.

use sqlx::Row;
use sqlx::sqlite::SqliteRow;

use super::sqlite_error;
use crate::{
    AuditRecord, FileContent, Garbage, MetaError, MetaResult, Node, NodeKind, ReplicationJob,
    ReplicationOp, SshKey, Tenant, Upload, User, WrappedTenantKey,
};

/// The columns every node query selects, in the order [`node`] reads them.
macro_rules! node_columns {
    () => {
        "id, tenant_id, parent_id, kind, name_enc, name_index, mtime_ms, ctime_ms, version, \
         size, object_key, content_id, wrapped_dek, key_version, chunk_size, content_hash_enc"
    };
}
pub(super) use node_columns;

/// Column value of `kind` for a folder.
pub(super) const KIND_DIR: &str = "d";
/// Column value of `kind` for a file.
pub(super) const KIND_FILE: &str = "f";
/// Column value of `op` for a copy to the replica.
pub(super) const OP_COPY: &str = "copy";
/// Column value of `op` for a delete from the replica.
pub(super) const OP_DELETE: &str = "delete";

/// The `op` column value of a replication operation.
pub(super) fn op_column(op: ReplicationOp) -> &'static str {
    match op {
        ReplicationOp::Copy => OP_COPY,
        ReplicationOp::Delete => OP_DELETE,
    }
}

fn get<'r, T>(row: &'r SqliteRow, column: &str) -> MetaResult<T>
where
    T: sqlx::Decode<'r, sqlx::Sqlite> + sqlx::Type<sqlx::Sqlite>,
{
    row.try_get(column).map_err(sqlite_error)
}

/// Reads an INTEGER column that holds a `u32` (versions, sizes, permission bits).
fn get_u32(row: &SqliteRow, column: &'static str) -> MetaResult<u32> {
    let value: i64 = get(row, column)?;
    u32::try_from(value).map_err(|_| corrupt(column))
}

fn corrupt(what: &'static str) -> MetaError {
    MetaError::Database(format!("stored row has an invalid {what}"))
}

/// A `nodes` row selected with [`node_columns`].
pub(super) fn node(row: &SqliteRow) -> MetaResult<Node> {
    let kind = match get::<String>(row, "kind")?.as_str() {
        KIND_DIR => NodeKind::Dir,
        KIND_FILE => NodeKind::File,
        _ => return Err(corrupt("node kind")),
    };
    let content = match kind {
        NodeKind::Dir => None,
        NodeKind::File => Some(file_content(row)?),
    };
    Ok(Node {
        id: get(row, "id")?,
        tenant_id: get(row, "tenant_id")?,
        parent_id: get(row, "parent_id")?,
        kind,
        name_enc: get(row, "name_enc")?,
        name_index: get(row, "name_index")?,
        mtime_ms: get(row, "mtime_ms")?,
        ctime_ms: get(row, "ctime_ms")?,
        version: get(row, "version")?,
        content,
    })
}

fn file_content(row: &SqliteRow) -> MetaResult<FileContent> {
    Ok(FileContent {
        size: get(row, "size")?,
        object_key: get(row, "object_key")?,
        content_id: get(row, "content_id")?,
        wrapped_dek: get(row, "wrapped_dek")?,
        key_version: get_u32(row, "key_version")?,
        chunk_size: get_u32(row, "chunk_size")?,
        content_hash_enc: get(row, "content_hash_enc")?,
    })
}

/// A `tenants` row.
pub(super) fn tenant(row: &SqliteRow) -> MetaResult<Tenant> {
    Ok(Tenant {
        id: get(row, "id")?,
        name: get(row, "name")?,
        root_node_id: get(row, "root_node_id")?,
        key_version: get_u32(row, "key_version")?,
        quota_bytes: get(row, "quota_bytes")?,
        created_ms: get(row, "created_ms")?,
    })
}

/// A `tenant_keys` row.
pub(super) fn tenant_key(row: &SqliteRow) -> MetaResult<WrappedTenantKey> {
    Ok(WrappedTenantKey {
        tenant_id: get(row, "tenant_id")?,
        version: get_u32(row, "version")?,
        region: get(row, "region")?,
        master_key_id: get(row, "master_key_id")?,
        wrapped: get(row, "wrapped")?,
    })
}

/// A `users` row.
pub(super) fn user(row: &SqliteRow) -> MetaResult<User> {
    Ok(User {
        id: get(row, "id")?,
        tenant_id: get(row, "tenant_id")?,
        name: get(row, "name")?,
        password_hash: get(row, "password_hash")?,
        home_node_id: get(row, "home_node_id")?,
        perms: get_u32(row, "perms")?,
        disabled: get(row, "disabled")?,
        locked_until_ms: get(row, "locked_until_ms")?,
        created_ms: get(row, "created_ms")?,
    })
}

/// An `ssh_keys` row.
pub(super) fn ssh_key(row: &SqliteRow) -> MetaResult<SshKey> {
    Ok(SshKey {
        id: get(row, "id")?,
        user_id: get(row, "user_id")?,
        algorithm: get(row, "algorithm")?,
        key_base64: get(row, "key_base64")?,
        fingerprint: get(row, "fingerprint")?,
        comment: get(row, "comment")?,
    })
}

/// An `uploads` row.
pub(super) fn upload(row: &SqliteRow) -> MetaResult<Upload> {
    Ok(Upload {
        id: get(row, "id")?,
        tenant_id: get(row, "tenant_id")?,
        spool_name: get(row, "spool_name")?,
        object_key: get(row, "object_key")?,
        node_name: get(row, "node_name")?,
        started_ms: get(row, "started_ms")?,
    })
}

/// A `replication_outbox` row.
pub(super) fn replication_job(row: &SqliteRow) -> MetaResult<ReplicationJob> {
    let op = match get::<String>(row, "op")?.as_str() {
        OP_COPY => ReplicationOp::Copy,
        OP_DELETE => ReplicationOp::Delete,
        _ => return Err(corrupt("replication op")),
    };
    Ok(ReplicationJob {
        id: get(row, "id")?,
        object_key: get(row, "object_key")?,
        op,
        attempts: get_u32(row, "attempts")?,
        last_error: get(row, "last_error")?,
        created_ms: get(row, "created_ms")?,
    })
}

/// A `garbage` row.
pub(super) fn garbage(row: &SqliteRow) -> MetaResult<Garbage> {
    Ok(Garbage {
        id: get(row, "id")?,
        object_key: get(row, "object_key")?,
        created_ms: get(row, "created_ms")?,
    })
}

/// An `audit` row.
pub(super) fn audit(row: &SqliteRow) -> MetaResult<AuditRecord> {
    Ok(AuditRecord {
        at_ms: get(row, "at_ms")?,
        tenant_id: get(row, "tenant_id")?,
        user_id: get(row, "user_id")?,
        user_name: get(row, "user_name")?,
        protocol: get(row, "protocol")?,
        remote_addr: get(row, "remote_addr")?,
        action: get(row, "action")?,
        node_id: get(row, "node_id")?,
        outcome: get(row, "outcome")?,
        bytes: get(row, "bytes")?,
    })
}
