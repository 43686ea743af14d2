//! Tenants, their wrapped keys, users and the cluster-wide login lockout, inside write
//! transactions.

use super::namespace::LOGIN_FAILURES;
use super::{Conn, Dialect, Query, Sql, TxResult, sql_impl};
use crate::lockout::{FailureState, LockoutPolicy};
use crate::rows::Columns;
use crate::{
    MetaError, NewTenant, NewUser, Node, NodeKind, Tenant, TenantMasterKey, User, WrappedTenantKey,
};

/// Stores a wrapped key of a tenant being created (the tenant is new: no copy to replace).
const INSERT_TENANT_KEY: &str = "INSERT INTO tenant_keys (tenant_id, version, region, master_key_id, wrapped, created_ms) \
     VALUES (?, ?, ?, ?, ?, ?)";

sql_impl! {
impl Sql<D> {
    /// Creates a tenant, its root folder and its wrapped keys. The keys are stored under
    /// `tenant.id` whatever their own `tenant_id` says: they belong to the tenant being
    /// created.
    pub(crate) async fn create_tenant(conn: &mut Conn<D>, new: &NewTenant) -> TxResult<Tenant> {
        let tenant = Tenant {
            id: new.id,
            name: new.name.clone(),
            root_node_id: new.root_node_id,
            key_version: new.keys.iter().map(|k| k.version).max().unwrap_or(1),
            quota_bytes: new.quota_bytes,
            created_ms: new.now_ms,
        };
        sqlx::query(
            "INSERT INTO tenants (id, name, root_node_id, key_version, quota_bytes, \
             created_ms) VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(tenant.id)
        .bind(tenant.name.as_str())
        .bind(tenant.root_node_id)
        .bind(i64::from(tenant.key_version))
        .bind(tenant.quota_bytes)
        .bind(tenant.created_ms)
        .execute(&mut *conn)
        .await?;
        let root = Node {
            id: new.root_node_id,
            tenant_id: new.id,
            parent_id: None,
            kind: NodeKind::Dir,
            name_enc: new.root_name_enc.clone(),
            name_index: new.root_name_index.clone(),
            mtime_ms: new.now_ms,
            ctime_ms: new.now_ms,
            version: 1,
            name_key_version: tenant.key_version,
            content: None,
        };
        Self::insert_dir(conn, &root).await?;
        Self::insert_master_keys(conn, new.id, &new.master_keys).await?;
        for key in &new.keys {
            let key = WrappedTenantKey {
                tenant_id: new.id,
                ..key.clone()
            };
            Self::tenant_key_query(INSERT_TENANT_KEY, &key)
                .execute(&mut *conn)
                .await?;
        }
        Ok(tenant)
    }

    /// `sql` (an insert or upsert of `tenant_keys`) with the key's columns bound.
    pub(crate) fn tenant_key_query(sql: &'static str, key: &WrappedTenantKey) -> Query<D> {
        sqlx::query(sql)
            .bind(key.tenant_id)
            .bind(i64::from(key.version))
            .bind(key.region.as_str())
            .bind(key.master_key_id.as_str())
            .bind(key.wrapped.as_slice())
            .bind(key.created_ms)
    }

    /// Replaces the tenant's own master keys and stores its copies wrapped under them.
    pub(crate) async fn set_tenant_master_keys(
        conn: &mut Conn<D>,
        tenant_id: i64,
        keys: &[TenantMasterKey],
        copies: &[WrappedTenantKey],
    ) -> TxResult<()> {
        Self::lock_tenant(conn, tenant_id).await?;
        sqlx::query("DELETE FROM tenant_master_keys WHERE tenant_id = ?")
            .bind(tenant_id)
            .execute(&mut *conn)
            .await?;
        Self::insert_master_keys(conn, tenant_id, keys).await?;
        for copy in copies {
            let copy = WrappedTenantKey {
                tenant_id,
                ..copy.clone()
            };
            Self::tenant_key_query(D::PUT_TENANT_KEY, &copy)
                .execute(&mut *conn)
                .await?;
        }
        Ok(())
    }

    async fn insert_master_keys(
        conn: &mut Conn<D>,
        tenant_id: i64,
        keys: &[TenantMasterKey],
    ) -> TxResult<()> {
        for key in keys {
            sqlx::query("INSERT INTO tenant_master_keys (tenant_id, region, key_id) VALUES (?, ?, ?)")
                .bind(tenant_id)
                .bind(key.region.as_str())
                .bind(key.key_id.as_str())
                .execute(&mut *conn)
                .await?;
        }
        Ok(())
    }

    /// Removes a tenant whose keys are already destroyed: every file object (and every
    /// upload's reserved object) is queued as garbage and for deletion from the replica, and its
    /// nodes, users (with their SSH keys and tokens), uploads and own master keys deleted.
    /// Returns the number of objects queued.
    pub(crate) async fn delete_tenant(
        conn: &mut Conn<D>,
        tenant_id: i64,
        now_ms: i64,
    ) -> TxResult<u64> {
        Self::lock_tenant(conn, tenant_id).await?;
        let queued = sqlx::query(
            "INSERT INTO garbage (object_key, created_ms) \
             SELECT object_key, ? FROM nodes WHERE tenant_id = ? AND object_key IS NOT NULL \
             UNION ALL SELECT object_key, ? FROM uploads WHERE tenant_id = ?",
        )
        .bind(now_ms)
        .bind(tenant_id)
        .bind(now_ms)
        .bind(tenant_id)
        .execute(&mut *conn)
        .await?;
        // The replica's copies go too: pending copies are dropped, deletions queued.
        sqlx::query(
            "DELETE FROM replication_outbox WHERE op = 'copy' AND object_key IN \
             (SELECT object_key FROM nodes WHERE tenant_id = ? AND object_key IS NOT NULL)",
        )
        .bind(tenant_id)
        .execute(&mut *conn)
        .await?;
        sqlx::query(
            "INSERT INTO replication_outbox (object_key, op, attempts, created_ms, next_attempt_ms) \
             SELECT object_key, 'delete', 0, ?, ? FROM nodes \
             WHERE tenant_id = ? AND object_key IS NOT NULL",
        )
        .bind(now_ms)
        .bind(now_ms)
        .bind(tenant_id)
        .execute(&mut *conn)
        .await?;
        for sql in [
            "DELETE FROM users WHERE tenant_id = ?",
            "DELETE FROM uploads WHERE tenant_id = ?",
            // Folders point at their parents: cut the links first, as InnoDB checks foreign
            // keys row by row.
            "UPDATE nodes SET parent_id = NULL WHERE tenant_id = ?",
            "DELETE FROM nodes WHERE tenant_id = ?",
            "DELETE FROM tenant_usage WHERE tenant_id = ?",
            "DELETE FROM tenant_master_keys WHERE tenant_id = ?",
            "DELETE FROM key_rotations WHERE tenant_id = ?",
            "DELETE FROM tenant_keys WHERE tenant_id = ?",
            "DELETE FROM tenants WHERE id = ?",
        ] {
            sqlx::query(sql).bind(tenant_id).execute(&mut *conn).await?;
        }
        Ok(D::rows_affected(&queued))
    }

    /// Creates a user whose home is an existing folder of their tenant. Where rows are
    /// locked, the folder is, so it cannot be removed before the user row that points at it
    /// commits.
    pub(crate) async fn create_user(conn: &mut Conn<D>, new: &NewUser) -> TxResult<User> {
        let home = Self::lock_node(conn, new.tenant_id, new.home_node_id).await?;
        if home.kind != NodeKind::Dir {
            return Err(MetaError::WrongKind("home is not a folder").into());
        }
        sqlx::query(
            "INSERT INTO users (id, tenant_id, name, password_hash, home_node_id, perms, \
             disabled, failed_count, created_ms) VALUES (?, ?, ?, ?, ?, ?, 0, 0, ?)",
        )
        .bind(new.id)
        .bind(new.tenant_id)
        .bind(new.name.as_str())
        .bind(new.password_hash.as_deref())
        .bind(new.home_node_id)
        .bind(i64::from(new.perms))
        .bind(new.now_ms)
        .execute(conn)
        .await?;
        Ok(User {
            id: new.id,
            tenant_id: new.tenant_id,
            name: new.name.clone(),
            password_hash: new.password_hash.clone(),
            home_node_id: new.home_node_id,
            perms: new.perms,
            disabled: false,
            locked_until_ms: None,
            created_ms: new.now_ms,
        })
    }

    /// Records one failed login; returns the lock expiry if the user is locked after it.
    pub(crate) async fn record_login_failure(
        conn: &mut Conn<D>,
        user_id: i64,
        policy: &LockoutPolicy,
    ) -> TxResult<Option<i64>> {
        let row = sqlx::query(LOGIN_FAILURES.sql::<D>())
            .bind(user_id)
            .fetch_optional(&mut *conn)
            .await?
            .ok_or(MetaError::NotFound)?;
        let state = FailureState {
            failed_count: row.int("failed_count")?,
            first_failure_ms: row.opt_int("first_failure_ms")?,
            locked_until_ms: row.opt_int("locked_until_ms")?,
        }
        .after_failure(policy);
        sqlx::query(
            "UPDATE users SET failed_count = ?, first_failure_ms = ?, locked_until_ms = ? \
             WHERE id = ?",
        )
        .bind(state.failed_count)
        .bind(state.first_failure_ms)
        .bind(state.locked_until_ms)
        .bind(user_id)
        .execute(conn)
        .await?;
        Ok(state.locked_until_ms.filter(|&until| until > policy.now_ms))
    }
}
}
