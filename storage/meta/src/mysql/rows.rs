//! Decoding MySQL rows into the crate's row types, refusing rows that break the schema's rules.

use sqlx::Row;
use sqlx::mysql::MySqlRow;

use super::mysql_error;
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

fn get<'r, T>(row: &'r MySqlRow, column: &str) -> MetaResult<T>
where
    T: sqlx::Decode<'r, sqlx::MySql> + sqlx::Type<sqlx::MySql>,
{
    row.try_get(column).map_err(mysql_error)
}

/// Reads a text column. Identifiers are stored as VARBINARY (compared byte for byte), which
/// sqlx will not decode as a string, so every text column is read as bytes and checked here.
fn text(row: &MySqlRow, column: &'static str) -> MetaResult<String> {
    let bytes: Vec<u8> = get(row, column)?;
    String::from_utf8(bytes).map_err(|_| corrupt(column))
}

/// Reads a BIGINT column that holds a `u32` (versions, sizes, permission bits).
fn get_u32(row: &MySqlRow, column: &'static str) -> MetaResult<u32> {
    let value: i64 = get(row, column)?;
    u32::try_from(value).map_err(|_| corrupt(column))
}

fn corrupt(what: &'static str) -> MetaError {
    MetaError::Database(format!("stored row has an invalid {what}"))
}

/// A `nodes` row selected with [`node_columns`].
pub(super) fn node(row: &MySqlRow) -> MetaResult<Node> {
    let kind = match text(row, "kind")?.as_str() {
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

fn file_content(row: &MySqlRow) -> MetaResult<FileContent> {
    Ok(FileContent {
        size: get(row, "size")?,
        object_key: text(row, "object_key")?,
        content_id: get(row, "content_id")?,
        wrapped_dek: get(row, "wrapped_dek")?,
        key_version: get_u32(row, "key_version")?,
        chunk_size: get_u32(row, "chunk_size")?,
        content_hash_enc: get(row, "content_hash_enc")?,
    })
}

/// A `tenants` row.
pub(super) fn tenant(row: &MySqlRow) -> MetaResult<Tenant> {
    Ok(Tenant {
        id: get(row, "id")?,
        name: text(row, "name")?,
        root_node_id: get(row, "root_node_id")?,
        key_version: get_u32(row, "key_version")?,
        quota_bytes: get(row, "quota_bytes")?,
        created_ms: get(row, "created_ms")?,
    })
}

/// A `tenant_keys` row.
pub(super) fn tenant_key(row: &MySqlRow) -> MetaResult<WrappedTenantKey> {
    Ok(WrappedTenantKey {
        tenant_id: get(row, "tenant_id")?,
        version: get_u32(row, "version")?,
        region: text(row, "region")?,
        master_key_id: text(row, "master_key_id")?,
        wrapped: get(row, "wrapped")?,
    })
}

/// A `users` row.
pub(super) fn user(row: &MySqlRow) -> MetaResult<User> {
    Ok(User {
        id: get(row, "id")?,
        tenant_id: get(row, "tenant_id")?,
        name: text(row, "name")?,
        password_hash: get(row, "password_hash")?,
        home_node_id: get(row, "home_node_id")?,
        perms: get_u32(row, "perms")?,
        disabled: get(row, "disabled")?,
        locked_until_ms: get(row, "locked_until_ms")?,
        created_ms: get(row, "created_ms")?,
    })
}

/// An `ssh_keys` row.
pub(super) fn ssh_key(row: &MySqlRow) -> MetaResult<SshKey> {
    Ok(SshKey {
        id: get(row, "id")?,
        user_id: get(row, "user_id")?,
        algorithm: text(row, "algorithm")?,
        key_base64: text(row, "key_base64")?,
        fingerprint: text(row, "fingerprint")?,
        comment: text(row, "comment")?,
    })
}

/// An `uploads` row.
pub(super) fn upload(row: &MySqlRow) -> MetaResult<Upload> {
    Ok(Upload {
        id: get(row, "id")?,
        tenant_id: get(row, "tenant_id")?,
        spool_name: text(row, "spool_name")?,
        object_key: text(row, "object_key")?,
        node_name: text(row, "node_name")?,
        started_ms: get(row, "started_ms")?,
    })
}

/// A `replication_outbox` row.
pub(super) fn replication_job(row: &MySqlRow) -> MetaResult<ReplicationJob> {
    let op = match text(row, "op")?.as_str() {
        OP_COPY => ReplicationOp::Copy,
        OP_DELETE => ReplicationOp::Delete,
        _ => return Err(corrupt("replication op")),
    };
    Ok(ReplicationJob {
        id: get(row, "id")?,
        object_key: text(row, "object_key")?,
        op,
        attempts: get_u32(row, "attempts")?,
        last_error: get(row, "last_error")?,
        created_ms: get(row, "created_ms")?,
    })
}

/// A `garbage` row.
pub(super) fn garbage(row: &MySqlRow) -> MetaResult<Garbage> {
    Ok(Garbage {
        id: get(row, "id")?,
        object_key: text(row, "object_key")?,
        created_ms: get(row, "created_ms")?,
    })
}

/// An `audit` row.
pub(super) fn audit(row: &MySqlRow) -> MetaResult<AuditRecord> {
    Ok(AuditRecord {
        at_ms: get(row, "at_ms")?,
        tenant_id: get(row, "tenant_id")?,
        user_id: get(row, "user_id")?,
        user_name: get(row, "user_name")?,
        protocol: text(row, "protocol")?,
        remote_addr: get(row, "remote_addr")?,
        action: text(row, "action")?,
        node_id: get(row, "node_id")?,
        outcome: text(row, "outcome")?,
        bytes: get(row, "bytes")?,
    })
}
