//! Tenants, their wrapped keys, users, SSH keys and the cluster-wide login lockout.

use crate::lockout::{FailureState, LockoutPolicy};
use sqlx::{Executor, Sqlite, SqliteConnection};

use super::namespace::{insert_dir, node};
use super::sqlite_error;
use crate::{
    MetaError, MetaResult, NewSshKey, NewTenant, NewUser, Node, NodeKind, Tenant, User,
    WrappedTenantKey,
};

/// Creates a tenant, its root folder and its wrapped keys. The keys are stored under
/// `tenant.id` whatever their own `tenant_id` says: they belong to the tenant being created.
pub(super) async fn create_tenant(
    conn: &mut SqliteConnection,
    new: &NewTenant,
) -> MetaResult<Tenant> {
    let tenant = Tenant {
        id: new.id,
        name: new.name.clone(),
        root_node_id: new.root_node_id,
        key_version: new.keys.iter().map(|k| k.version).max().unwrap_or(1),
        quota_bytes: new.quota_bytes,
        created_ms: new.now_ms,
    };
    sqlx::query(
        "INSERT INTO tenants (id, name, root_node_id, key_version, quota_bytes, created_ms) \
         VALUES (?, ?, ?, ?, ?, ?)",
    )
    .bind(tenant.id)
    .bind(&tenant.name)
    .bind(tenant.root_node_id)
    .bind(i64::from(tenant.key_version))
    .bind(tenant.quota_bytes)
    .bind(tenant.created_ms)
    .execute(&mut *conn)
    .await
    .map_err(sqlite_error)?;
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
        content: None,
    };
    insert_dir(conn, &root).await?;
    for key in &new.keys {
        let key = WrappedTenantKey {
            tenant_id: new.id,
            ..key.clone()
        };
        insert_tenant_key(conn, &key).await?;
    }
    Ok(tenant)
}

/// Stores a wrapped tenant key, replacing the copy for the same version and region.
/// Delete-then-insert rather than an upsert keeps the SQL the same on every engine.
pub(super) async fn put_tenant_key(
    conn: &mut SqliteConnection,
    key: &WrappedTenantKey,
) -> MetaResult<()> {
    sqlx::query("DELETE FROM tenant_keys WHERE tenant_id = ? AND version = ? AND region = ?")
        .bind(key.tenant_id)
        .bind(i64::from(key.version))
        .bind(&key.region)
        .execute(&mut *conn)
        .await
        .map_err(sqlite_error)?;
    insert_tenant_key(conn, key).await
}

async fn insert_tenant_key(conn: &mut SqliteConnection, key: &WrappedTenantKey) -> MetaResult<()> {
    sqlx::query(
        "INSERT INTO tenant_keys (tenant_id, version, region, master_key_id, wrapped) \
         VALUES (?, ?, ?, ?, ?)",
    )
    .bind(key.tenant_id)
    .bind(i64::from(key.version))
    .bind(&key.region)
    .bind(&key.master_key_id)
    .bind(&key.wrapped)
    .execute(conn)
    .await
    .map_err(sqlite_error)?;
    Ok(())
}

/// Creates a user whose home is an existing folder of their tenant.
pub(super) async fn create_user(conn: &mut SqliteConnection, new: &NewUser) -> MetaResult<User> {
    let home = node(&mut *conn, new.tenant_id, new.home_node_id).await?;
    if home.kind != NodeKind::Dir {
        return Err(MetaError::WrongKind("home is not a folder"));
    }
    sqlx::query(
        "INSERT INTO users (id, tenant_id, name, password_hash, home_node_id, perms, disabled, \
         failed_count, created_ms) VALUES (?, ?, ?, ?, ?, ?, 0, 0, ?)",
    )
    .bind(new.id)
    .bind(new.tenant_id)
    .bind(&new.name)
    .bind(new.password_hash.as_deref())
    .bind(new.home_node_id)
    .bind(i64::from(new.perms))
    .bind(new.now_ms)
    .execute(conn)
    .await
    .map_err(sqlite_error)?;
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

/// Adds an SSH key; `NotFound` if the user is gone, `AlreadyExists` for a known fingerprint.
pub(super) async fn add_ssh_key<'e>(
    db: impl Executor<'e, Database = Sqlite>,
    user_id: i64,
    key: &NewSshKey,
) -> MetaResult<()> {
    sqlx::query(
        "INSERT INTO ssh_keys (user_id, algorithm, key_base64, fingerprint, comment) \
         VALUES (?, ?, ?, ?, ?)",
    )
    .bind(user_id)
    .bind(&key.algorithm)
    .bind(&key.key_base64)
    .bind(&key.fingerprint)
    .bind(&key.comment)
    .execute(db)
    .await
    .map_err(sqlite_error)?;
    Ok(())
}

/// Records one failed login; returns the lock expiry if the user is locked after it.
pub(super) async fn record_login_failure(
    conn: &mut SqliteConnection,
    user_id: i64,
    policy: &LockoutPolicy,
) -> MetaResult<Option<i64>> {
    let (failed_count, first_failure_ms, locked_until_ms) = sqlx::query_as(
        "SELECT failed_count, first_failure_ms, locked_until_ms FROM users WHERE id = ?",
    )
    .bind(user_id)
    .fetch_optional(&mut *conn)
    .await
    .map_err(sqlite_error)?
    .ok_or(MetaError::NotFound)?;
    let state = FailureState {
        failed_count,
        first_failure_ms,
        locked_until_ms,
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
    .await
    .map_err(sqlite_error)?;
    Ok(state.locked_until_ms.filter(|&until| until > policy.now_ms))
}
