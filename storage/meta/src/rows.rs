//! Decoding rows of either database into the crate's row types, refusing rows that break the
//! schema's rules. [`Columns`] reads one column of each kind the schema uses from any engine's
//! row; the shape of every row type is written once, here, and so is the multi-row insert.

use crate::{
    ApiToken, AuditRecord, FileContent, Garbage, KeyRotation, MetaError, MetaResult, Node,
    NodeKind, ReplicationJob, ReplicationOp, SshKey, Tenant, TenantMasterKey, Upload, User,
    WrappedTenantKey,
};

/// How a row hands out one column of each kind the schema uses.
pub trait Columns {
    /// An integer column.
    fn int(&self, name: &'static str) -> MetaResult<i64>;
    /// A nullable integer column.
    fn opt_int(&self, name: &'static str) -> MetaResult<Option<i64>>;
    /// A boolean column.
    fn flag(&self, name: &'static str) -> MetaResult<bool>;
    /// A binary column (ciphertext, blind indexes, wrapped keys).
    fn blob(&self, name: &'static str) -> MetaResult<Vec<u8>>;
    /// A nullable binary column.
    fn opt_blob(&self, name: &'static str) -> MetaResult<Option<Vec<u8>>>;
    /// A text column that holds an identifier or an enum value (stored as bytes on MySQL so
    /// it compares byte for byte).
    fn ident(&self, name: &'static str) -> MetaResult<String>;
    /// A nullable free-text column.
    fn opt_text(&self, name: &'static str) -> MetaResult<Option<String>>;
    /// An integer column that holds a `u32` (versions, sizes, permission bits).
    fn small(&self, name: &'static str) -> MetaResult<u32> {
        u32::try_from(self.int(name)?).map_err(|_| corrupt(name))
    }
}

/// Any engine's row whose driver decodes the schema's column types.
impl<R> Columns for R
where
    R: sqlx::Row,
    &'static str: sqlx::ColumnIndex<R>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<i64>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> bool: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Vec<u8>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<Vec<u8>>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<String>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    fn int(&self, name: &'static str) -> MetaResult<i64> {
        get(self, name)
    }
    fn opt_int(&self, name: &'static str) -> MetaResult<Option<i64>> {
        get(self, name)
    }
    fn flag(&self, name: &'static str) -> MetaResult<bool> {
        get(self, name)
    }
    fn blob(&self, name: &'static str) -> MetaResult<Vec<u8>> {
        get(self, name)
    }
    fn opt_blob(&self, name: &'static str) -> MetaResult<Option<Vec<u8>>> {
        get(self, name)
    }
    /// Identifiers are stored as VARBINARY on MySQL (compared byte for byte), which sqlx will
    /// not decode as a string, so they are read as bytes on every engine and checked here.
    fn ident(&self, name: &'static str) -> MetaResult<String> {
        let bytes: Vec<u8> = get(self, name)?;
        String::from_utf8(bytes).map_err(|_| corrupt(name))
    }
    fn opt_text(&self, name: &'static str) -> MetaResult<Option<String>> {
        get(self, name)
    }
}

/// One column of a row; a column missing or of the wrong type is a corrupt row. The message
/// names the column and the driver's reason, never a value.
fn get<'r, R, T>(row: &'r R, name: &'static str) -> MetaResult<T>
where
    R: sqlx::Row,
    &'static str: sqlx::ColumnIndex<R>,
    T: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    row.try_get(name)
        .map_err(|e| MetaError::Database(format!("stored row has an invalid {name}: {e}")))
}

/// The columns every node query selects, in the order [`node`] reads them.
macro_rules! node_columns {
    () => {
        "id, tenant_id, parent_id, kind, name_enc, name_index, name_key_version, mtime_ms, \
         ctime_ms, version, size, object_key, content_id, wrapped_dek, key_version, chunk_size, \
         content_hash_enc, CASE WHEN inline_object IS NULL THEN 0 ELSE 1 END AS inline_flag"
    };
}
pub(crate) use node_columns;

/// Column value of `kind` for a folder.
pub(crate) const KIND_DIR: &str = "d";
/// Column value of `kind` for a file.
pub(crate) const KIND_FILE: &str = "f";
/// Column value of `op` for a copy to the replica.
pub(crate) const OP_COPY: &str = "copy";
/// Column value of `op` for a delete from the replica.
pub(crate) const OP_DELETE: &str = "delete";

/// The `op` column value of a replication operation.
pub(crate) fn op_column(op: ReplicationOp) -> &'static str {
    match op {
        ReplicationOp::Copy => OP_COPY,
        ReplicationOp::Delete => OP_DELETE,
    }
}

pub(crate) fn corrupt(what: &'static str) -> MetaError {
    MetaError::Database(format!("stored row has an invalid {what}"))
}

/// A `nodes` row selected with [`node_columns`] and its `inline_object` (the sealed bytes of a
/// small file kept in its row): what a lookup that also brings the bytes decodes, the same on
/// the pool's rows and on rows read in place.
pub(crate) fn node_with_inline<R: Columns>(row: &R) -> MetaResult<(Node, Option<Vec<u8>>)> {
    Ok((node(row)?, row.opt_blob("inline_object")?))
}

/// A `nodes` row selected with [`node_columns`].
pub(crate) fn node<R: Columns>(row: &R) -> MetaResult<Node> {
    let kind = match row.ident("kind")?.as_str() {
        KIND_DIR => NodeKind::Dir,
        KIND_FILE => NodeKind::File,
        _ => return Err(corrupt("node kind")),
    };
    let content = match kind {
        NodeKind::Dir => None,
        NodeKind::File => Some(file_content(row)?),
    };
    Ok(Node {
        id: row.int("id")?,
        tenant_id: row.int("tenant_id")?,
        parent_id: row.opt_int("parent_id")?,
        kind,
        name_enc: row.blob("name_enc")?,
        name_index: row.blob("name_index")?,
        name_key_version: row.small("name_key_version")?,
        mtime_ms: row.int("mtime_ms")?,
        ctime_ms: row.int("ctime_ms")?,
        version: row.int("version")?,
        content,
    })
}

fn file_content<R: Columns>(row: &R) -> MetaResult<FileContent> {
    Ok(FileContent {
        size: row.int("size")?,
        object_key: row.ident("object_key")?,
        content_id: row.blob("content_id")?,
        wrapped_dek: row.blob("wrapped_dek")?,
        key_version: row.small("key_version")?,
        chunk_size: row.small("chunk_size")?,
        content_hash_enc: row.blob("content_hash_enc")?,
        inline: row.int("inline_flag")? != 0,
    })
}

/// A `tenants` row.
pub(crate) fn tenant<R: Columns>(row: &R) -> MetaResult<Tenant> {
    Ok(Tenant {
        id: row.int("id")?,
        name: row.ident("name")?,
        root_node_id: row.int("root_node_id")?,
        key_version: row.small("key_version")?,
        quota_bytes: row.opt_int("quota_bytes")?,
        created_ms: row.int("created_ms")?,
    })
}

/// A `tenant_keys` row.
pub(crate) fn tenant_key<R: Columns>(row: &R) -> MetaResult<WrappedTenantKey> {
    Ok(WrappedTenantKey {
        tenant_id: row.int("tenant_id")?,
        version: row.small("version")?,
        region: row.ident("region")?,
        master_key_id: row.ident("master_key_id")?,
        wrapped: row.blob("wrapped")?,
        created_ms: row.int("created_ms")?,
    })
}

/// A `tenant_master_keys` row.
pub(crate) fn tenant_master_key<R: Columns>(row: &R) -> MetaResult<TenantMasterKey> {
    Ok(TenantMasterKey {
        tenant_id: row.int("tenant_id")?,
        region: row.ident("region")?,
        key_id: row.ident("key_id")?,
    })
}

/// A `users` row.
pub(crate) fn user<R: Columns>(row: &R) -> MetaResult<User> {
    Ok(User {
        id: row.int("id")?,
        tenant_id: row.int("tenant_id")?,
        name: row.ident("name")?,
        password_hash: row.opt_text("password_hash")?,
        home_node_id: row.int("home_node_id")?,
        perms: row.small("perms")?,
        disabled: row.flag("disabled")?,
        locked_until_ms: row.opt_int("locked_until_ms")?,
        created_ms: row.int("created_ms")?,
    })
}

/// A `users` row joined with its tenant's columns (named `tenant_*`).
pub(crate) fn user_with_tenant<R: Columns>(row: &R) -> MetaResult<(User, Tenant)> {
    let user = user(row)?;
    let tenant = Tenant {
        id: user.tenant_id,
        name: row.ident("tenant_name")?,
        root_node_id: row.int("tenant_root_node_id")?,
        key_version: row.small("tenant_key_version")?,
        quota_bytes: row.opt_int("tenant_quota_bytes")?,
        created_ms: row.int("tenant_created_ms")?,
    };
    Ok((user, tenant))
}

/// An `ssh_keys` row.
pub(crate) fn ssh_key<R: Columns>(row: &R) -> MetaResult<SshKey> {
    Ok(SshKey {
        id: row.int("id")?,
        user_id: row.int("user_id")?,
        algorithm: row.ident("algorithm")?,
        key_base64: row.ident("key_base64")?,
        fingerprint: row.ident("fingerprint")?,
        comment: row.ident("comment")?,
    })
}

/// An `api_tokens` row.
pub(crate) fn api_token<R: Columns>(row: &R) -> MetaResult<ApiToken> {
    Ok(ApiToken {
        id: row.int("id")?,
        user_id: row.int("user_id")?,
        token_id: row.ident("token_id")?,
        secret_hash: row.blob("secret_hash")?,
        created_ms: row.int("created_ms")?,
        expires_ms: row.opt_int("expires_ms")?,
    })
}

/// An `uploads` row.
pub(crate) fn upload<R: Columns>(row: &R) -> MetaResult<Upload> {
    Ok(Upload {
        id: row.int("id")?,
        tenant_id: row.int("tenant_id")?,
        spool_name: row.ident("spool_name")?,
        object_key: row.ident("object_key")?,
        node_name: row.ident("node_name")?,
        started_ms: row.int("started_ms")?,
    })
}

/// A `replication_outbox` row.
pub(crate) fn replication_job<R: Columns>(row: &R) -> MetaResult<ReplicationJob> {
    let op = match row.ident("op")?.as_str() {
        OP_COPY => ReplicationOp::Copy,
        OP_DELETE => ReplicationOp::Delete,
        _ => return Err(corrupt("replication op")),
    };
    Ok(ReplicationJob {
        id: row.int("id")?,
        object_key: row.ident("object_key")?,
        op,
        attempts: row.small("attempts")?,
        last_error: row.opt_text("last_error")?,
        created_ms: row.int("created_ms")?,
        inline_object: row.opt_blob("inline_object")?,
    })
}

/// A `garbage` row.
pub(crate) fn garbage<R: Columns>(row: &R) -> MetaResult<Garbage> {
    Ok(Garbage {
        id: row.int("id")?,
        object_key: row.ident("object_key")?,
        created_ms: row.int("created_ms")?,
    })
}

/// The `object_key` column alone (`open_readers`).
pub(crate) fn object_key<R: Columns>(row: &R) -> MetaResult<String> {
    row.ident("object_key")
}

/// An `audit` row.
pub(crate) fn audit<R: Columns>(row: &R) -> MetaResult<AuditRecord> {
    Ok(AuditRecord {
        at_ms: row.int("at_ms")?,
        tenant_id: row.opt_int("tenant_id")?,
        user_id: row.opt_int("user_id")?,
        user_name: row.opt_text("user_name")?,
        protocol: row.ident("protocol")?,
        remote_addr: row.opt_text("remote_addr")?,
        action: row.ident("action")?,
        node_id: row.opt_int("node_id")?,
        outcome: row.ident("outcome")?,
        bytes: row.opt_int("bytes")?,
    })
}

/// One multi-row `INSERT` of audit records, the same SQL for every engine.
pub(crate) fn audit_insert<DB>(records: &[AuditRecord]) -> sqlx::QueryBuilder<DB>
where
    DB: sqlx::Database,
    for<'q> i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> Option<i64>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> &'q str: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> Option<&'q str>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    let mut insert = sqlx::QueryBuilder::new(
        "INSERT INTO audit (at_ms, tenant_id, user_id, user_name, protocol, remote_addr, \
         action, node_id, outcome, bytes) ",
    );
    insert.push_values(records, |mut row, r| {
        row.push_bind(r.at_ms)
            .push_bind(r.tenant_id)
            .push_bind(r.user_id)
            .push_bind(r.user_name.as_deref())
            .push_bind(r.protocol.as_str())
            .push_bind(r.remote_addr.as_deref())
            .push_bind(r.action.as_str())
            .push_bind(r.node_id)
            .push_bind(r.outcome.as_str())
            .push_bind(r.bytes);
    });
    insert
}

/// A `key_rotations` row.
pub(crate) fn key_rotation<R: Columns>(row: &R) -> MetaResult<KeyRotation> {
    Ok(KeyRotation {
        tenant_id: row.int("tenant_id")?,
        from_version: row.small("from_version")?,
        to_version: row.small("to_version")?,
        after_id: row.int("after_id")?,
        pass: row.small("pass_number")?,
        total: row.int("total")?,
        rewritten: row.int("rewritten")?,
        started_ms: row.int("started_ms")?,
        updated_ms: row.int("updated_ms")?,
    })
}
