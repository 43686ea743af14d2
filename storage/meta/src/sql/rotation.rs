//! Rotation of a tenant's key inside write transactions: beginning it (new version current),
//! rewriting rows batch by batch under a cursor, and ending it (old version destroyed only
//! when no row is under it).
//!
//! Where rows are locked, every step locks the tenant's row first, like a folder move, so a
//! rotation's start and end are ordered with each other; the row updates of a batch are
//! guarded by the version each row had when it was read, so a row a client changed
//! meanwhile is left for the next pass rather than overwritten.

use super::{Conn, Dialect, Sql, TxError, TxResult, sql_impl};
use crate::rows::{self, Columns, node_columns};
use crate::{
    KeyRotation, MetaError, Node, RekeyOutcome, RekeyedNode, RotationCursor, WrappedTenantKey,
};

const INSERT_TENANT_KEY: &str = "INSERT INTO tenant_keys (tenant_id, version, region, \
     master_key_id, wrapped, created_ms) VALUES (?, ?, ?, ?, ?, ?)";

/// Rows under a version after the cursor, by either index (`nodes_by_name_key`,
/// `nodes_by_data_key`), each side bounded; the caller drops a row both sides return and keeps
/// the first `limit`.
pub(crate) const UNDER_VERSION: &str = concat!(
    "SELECT * FROM (SELECT ",
    node_columns!(),
    " FROM nodes WHERE tenant_id = ? AND name_key_version = ? AND id > ? ORDER BY id LIMIT ?) \
     AS by_name UNION ALL SELECT * FROM (SELECT ",
    node_columns!(),
    " FROM nodes WHERE tenant_id = ? AND key_version = ? AND id > ? ORDER BY id LIMIT ?) \
     AS by_data_key ORDER BY id LIMIT ?"
);

/// Rows under a version, by either index.
const COUNT_UNDER_VERSION: &str = "SELECT \
     (SELECT COUNT(*) FROM nodes WHERE tenant_id = ? AND name_key_version = ?) + \
     (SELECT COUNT(*) FROM nodes WHERE tenant_id = ? AND key_version = ? \
        AND name_key_version <> ?) AS n";

const UPDATE_NAME: &str = "UPDATE nodes SET name_enc = ?, name_index = ?, name_key_version = ? \
     WHERE tenant_id = ? AND id = ? AND version = ? AND name_key_version = ?";
const UPDATE_FILE: &str = "UPDATE nodes SET name_enc = ?, name_index = ?, name_key_version = ?, \
     wrapped_dek = ?, content_hash_enc = ?, key_version = ? \
     WHERE tenant_id = ? AND id = ? AND version = ? AND name_key_version = ? AND key_version = ?";

sql_impl! {
impl Sql<D> {
    /// Stores the new version's copies, records the rotation and makes the new version
    /// current.
    pub(crate) async fn start_key_rotation(
        conn: &mut Conn<D>,
        tenant_id: i64,
        from_version: u32,
        to_version: u32,
        copies: &[WrappedTenantKey],
        now_ms: i64,
    ) -> TxResult<KeyRotation> {
        Self::lock_tenant(conn, tenant_id).await?;
        let current = sqlx::query("SELECT key_version FROM tenants WHERE id = ?")
            .bind(tenant_id)
            .fetch_one(&mut *conn)
            .await?
            .small("key_version")?;
        if current != from_version || Self::key_rotation(conn, tenant_id).await?.is_some() {
            return Err(MetaError::Conflict.into());
        }
        for copy in copies {
            let copy = WrappedTenantKey {
                tenant_id,
                version: to_version,
                ..copy.clone()
            };
            Self::tenant_key_query(INSERT_TENANT_KEY, &copy)
                .execute(&mut *conn)
                .await?;
        }
        let total = Self::count_under_key_version(conn, tenant_id, from_version).await?;
        sqlx::query(
            "INSERT INTO key_rotations (tenant_id, from_version, to_version, after_id, \
             pass_number, total, rewritten, started_ms, updated_ms) VALUES (?, ?, ?, 0, 1, ?, 0, ?, ?)",
        )
        .bind(tenant_id)
        .bind(i64::from(from_version))
        .bind(i64::from(to_version))
        .bind(total)
        .bind(now_ms)
        .bind(now_ms)
        .execute(&mut *conn)
        .await?;
        sqlx::query("UPDATE tenants SET key_version = ? WHERE id = ?")
            .bind(i64::from(to_version))
            .bind(tenant_id)
            .execute(&mut *conn)
            .await?;
        Ok(KeyRotation {
            tenant_id,
            from_version,
            to_version,
            after_id: 0,
            pass: 1,
            total,
            rewritten: 0,
            started_ms: now_ms,
            updated_ms: now_ms,
        })
    }

    /// The tenant's rotation row, if any.
    pub(crate) async fn key_rotation(
        conn: &mut Conn<D>,
        tenant_id: i64,
    ) -> TxResult<Option<KeyRotation>> {
        let row = sqlx::query("SELECT * FROM key_rotations WHERE tenant_id = ?")
            .bind(tenant_id)
            .fetch_optional(conn)
            .await?;
        Ok(row.as_ref().map(rows::key_rotation).transpose()?)
    }

    /// Rows of the tenant under `version` (name or data key), in one query.
    pub(crate) async fn count_under_key_version(
        conn: &mut Conn<D>,
        tenant_id: i64,
        version: u32,
    ) -> TxResult<i64> {
        let v = i64::from(version);
        let row = sqlx::query(COUNT_UNDER_VERSION)
            .bind(tenant_id)
            .bind(v)
            .bind(tenant_id)
            .bind(v)
            .bind(v)
            .fetch_one(conn)
            .await?;
        Ok(row.int("n")?)
    }

    /// Rows under `version` after `after_id`, in id order, each once.
    pub(crate) async fn nodes_under_key_version(
        conn: &mut Conn<D>,
        tenant_id: i64,
        version: u32,
        after_id: i64,
        limit: u32,
    ) -> TxResult<Vec<Node>> {
        let (v, limit) = (i64::from(version), i64::from(limit));
        let found = sqlx::query(UNDER_VERSION)
            .bind(tenant_id)
            .bind(v)
            .bind(after_id)
            .bind(limit)
            .bind(tenant_id)
            .bind(v)
            .bind(after_id)
            .bind(limit)
            // A row under the version on both sides comes twice.
            .bind(limit.saturating_mul(2))
            .fetch_all(conn)
            .await?;
        let mut nodes: Vec<Node> = found.iter().map(rows::node).collect::<Result<_, _>>()?;
        nodes.dedup_by_key(|n| n.id);
        nodes.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        Ok(nodes)
    }

    /// Rewrites a batch of rows (each only if unchanged since read) and moves the cursor.
    pub(crate) async fn rekey_nodes(
        conn: &mut Conn<D>,
        tenant_id: i64,
        nodes: &[RekeyedNode],
        cursor: RotationCursor,
        now_ms: i64,
    ) -> TxResult<RekeyOutcome> {
        if Self::key_rotation(conn, tenant_id).await?.is_none() {
            return Err(MetaError::NotFound.into());
        }
        let mut outcome = RekeyOutcome::default();
        for node in nodes {
            match Self::rekey_node(conn, tenant_id, node).await {
                Ok(true) => outcome.rewritten += 1,
                Ok(false) => outcome.missed += 1,
                Err(TxError::Sql(error)) if super::namespace::is_unique_violation(&error) => {
                    outcome.name_taken.push(node.id);
                }
                Err(error) => return Err(error),
            }
        }
        sqlx::query(
            "UPDATE key_rotations SET after_id = ?, pass_number = ?, rewritten = rewritten + ?, \
             updated_ms = ? WHERE tenant_id = ?",
        )
        .bind(cursor.after_id)
        .bind(i64::from(cursor.pass))
        .bind(i64::try_from(outcome.rewritten).unwrap_or(i64::MAX))
        .bind(now_ms)
        .bind(tenant_id)
        .execute(&mut *conn)
        .await?;
        Ok(outcome)
    }

    /// One row's update; `false` if the row changed since it was read (or is gone).
    async fn rekey_node(conn: &mut Conn<D>, tenant_id: i64, node: &RekeyedNode) -> TxResult<bool> {
        let query = match (&node.content, node.expect_key_version) {
            (Some(c), Some(expect_key_version)) => sqlx::query(UPDATE_FILE)
                .bind(node.name_enc.as_slice())
                .bind(node.name_index.as_slice())
                .bind(i64::from(node.name_key_version))
                .bind(c.wrapped_dek.as_slice())
                .bind(c.content_hash_enc.as_slice())
                .bind(i64::from(c.key_version))
                .bind(tenant_id)
                .bind(node.id)
                .bind(node.expect_version)
                .bind(i64::from(node.expect_name_key_version))
                .bind(i64::from(expect_key_version)),
            _ => sqlx::query(UPDATE_NAME)
                .bind(node.name_enc.as_slice())
                .bind(node.name_index.as_slice())
                .bind(i64::from(node.name_key_version))
                .bind(tenant_id)
                .bind(node.id)
                .bind(node.expect_version)
                .bind(i64::from(node.expect_name_key_version)),
        };
        let done = query.execute(&mut *conn).await?;
        Ok(D::rows_affected(&done) == 1)
    }

    /// Destroys the old version's copies and the rotation row if no row is under the old
    /// version; `None` otherwise.
    pub(crate) async fn finish_key_rotation(
        conn: &mut Conn<D>,
        tenant_id: i64,
    ) -> TxResult<Option<u64>> {
        Self::lock_tenant(conn, tenant_id).await?;
        let rotation = Self::key_rotation(conn, tenant_id)
            .await?
            .ok_or(MetaError::NotFound)?;
        if Self::count_under_key_version(conn, tenant_id, rotation.from_version).await? > 0 {
            return Ok(None);
        }
        let destroyed = sqlx::query("DELETE FROM tenant_keys WHERE tenant_id = ? AND version = ?")
            .bind(tenant_id)
            .bind(i64::from(rotation.from_version))
            .execute(&mut *conn)
            .await?;
        sqlx::query("DELETE FROM key_rotations WHERE tenant_id = ?")
            .bind(tenant_id)
            .execute(&mut *conn)
            .await?;
        Ok(Some(D::rows_affected(&destroyed)))
    }
}
}
