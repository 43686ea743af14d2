//! `SqliteStore`: the embedded default metadata store, one SQLite file in WAL mode.
//!
//! Writers are serialised twice over: inside the process by an async mutex (so concurrent
//! requests queue instead of spinning in SQLite's busy handler), and across processes by
//! `BEGIN IMMEDIATE`, which takes SQLite's write lock before the first read of a
//! read-then-write transaction, so a snapshot can never go stale under it.

// Rows read back from the database are untrusted input: no panicking shortcuts.
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::panic
    )
)]

mod accounts;
mod namespace;
mod rows;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::error::ErrorKind;
use sqlx::migrate::{MigrateError, Migrator};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Sqlite, SqliteConnection, Transaction};
use tokio::sync::{Mutex, OwnedMutexGuard};

use crate::lockout::LockoutPolicy;
use crate::outbox::{replication_backoff_ms, truncate_error, wall_clock_ms};
use crate::{
    ApiToken, AuditRecord, CommitFile, CommitOutcome, Garbage, MetaError, MetaResult,
    MetadataStore, NewDir, NewSshKey, NewTenant, NewUpload, NewUser, Node, RenameNode,
    ReplicationJob, SshKey, Tenant, Upload, Usage, User, WrappedTenantKey,
};

/// The migrations this build knows, embedded at compile time.
static MIGRATOR: Migrator = sqlx::migrate!("./migrations/sqlite");

/// How long a connection waits for another process's write lock before `Unavailable`.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a request waits for a pooled connection before `Unavailable`.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections of a file database: readers run in parallel, writers take turns.
const FILE_POOL_SIZE: u32 = 8;

/// The SQLite metadata store. Cloning is cheap and shares the pool.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// One connection with `synchronous=NORMAL` for bookkeeping writes (upload rows, outbox
    /// and garbage acknowledgements, audit): their commits do not wait for an fsync, and the
    /// next commit on `pool` (which does) makes them durable too, since both append to the
    /// same write-ahead log. A crash of the process loses none of them; a power cut can lose
    /// the last few, which costs at most a leaked object, a repeated replication copy or the
    /// last audit lines (docs/ARCHITECTURE.md, "Durability").
    bookkeeping: SqlitePool,
    /// Held for the whole of every write transaction of this process.
    writer: Arc<Mutex<()>>,
}

impl SqliteStore {
    /// Opens (creating the file if missing) a SQLite database at a `sqlite://PATH` URL or plain
    /// path: WAL journal, `synchronous=FULL` (a commit is on disk before the caller hears of
    /// it) except for bookkeeping writes (see the `bookkeeping` field), foreign keys on, a 5 s
    /// busy timeout. Call [`MetadataStore::migrate`] next.
    pub async fn open(url: &str) -> MetaResult<Self> {
        let options = if url.starts_with("sqlite:") {
            SqliteConnectOptions::from_str(url)
                .map_err(|e| MetaError::Database(format!("invalid SQLite URL: {e}")))?
        } else {
            SqliteConnectOptions::new().filename(url)
        };
        let options = options
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT);
        // No ping before handing out a connection: it is a thread in this process, and the
        // ping would be one more round trip to it before every query.
        let pool = SqlitePoolOptions::new()
            .max_connections(FILE_POOL_SIZE)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .test_before_acquire(false)
            .connect_with(options.clone())
            .await
            .map_err(sqlite_error)?;
        let bookkeeping = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .test_before_acquire(false)
            .connect_with(options.synchronous(SqliteSynchronous::Normal))
            .await
            .map_err(sqlite_error)?;
        Ok(Self {
            pool,
            bookkeeping,
            writer: Arc::new(Mutex::new(())),
        })
    }

    /// A private in-memory database for tests. It lives as long as its single connection,
    /// which the pool never closes.
    pub async fn open_in_memory() -> MetaResult<Self> {
        let options = SqliteConnectOptions::from_str("sqlite::memory:")
            .map_err(sqlite_error)?
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .test_before_acquire(false)
            .connect_with(options)
            .await
            .map_err(sqlite_error)?;
        Ok(Self {
            bookkeeping: pool.clone(),
            pool,
            writer: Arc::new(Mutex::new(())),
        })
    }

    /// The newest schema version this build can run on.
    pub fn supported_schema_version() -> i64 {
        MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0)
    }

    /// The newest migration applied to the database, `None` for a fresh database.
    pub async fn schema_version(&self) -> MetaResult<Option<i64>> {
        let tables: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(sqlite_error)?;
        if tables == 0 {
            return Ok(None);
        }
        sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations")
            .fetch_one(&self.pool)
            .await
            .map_err(sqlite_error)
    }

    /// Starts a write transaction holding both this process's writer lock and SQLite's.
    async fn write(&self) -> MetaResult<WriteTx> {
        let writer = Arc::clone(&self.writer).lock_owned().await;
        let tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(sqlite_error)?;
        Ok(WriteTx {
            tx,
            _writer: writer,
        })
    }
}

/// A write transaction. Field order matters: the transaction ends before the lock is freed.
struct WriteTx {
    tx: Transaction<'static, Sqlite>,
    _writer: OwnedMutexGuard<()>,
}

impl WriteTx {
    fn conn(&mut self) -> &mut SqliteConnection {
        &mut self.tx
    }

    /// Commits if `result` is a success, rolls back otherwise; returns `result`.
    async fn finish<T>(self, result: MetaResult<T>) -> MetaResult<T> {
        match result {
            Ok(value) => {
                self.tx.commit().await.map_err(sqlite_error)?;
                Ok(value)
            }
            Err(error) => {
                if let Err(rollback) = self.tx.rollback().await {
                    tracing::warn!(error = %sqlite_error(rollback), "metadata rollback failed");
                }
                Err(error)
            }
        }
    }
}

/// Maps a sqlx error to the crate's error. SQLite's own messages name tables, columns and
/// constraints, never bound values, so they are safe to pass on.
pub(crate) fn sqlite_error(error: sqlx::Error) -> MetaError {
    match error {
        sqlx::Error::RowNotFound => MetaError::NotFound,
        sqlx::Error::Database(db) => match db.kind() {
            ErrorKind::UniqueViolation => MetaError::AlreadyExists,
            // Every foreign key points at a row the caller named: it is missing.
            ErrorKind::ForeignKeyViolation => MetaError::NotFound,
            _ if is_transient(db.code().as_deref()) => {
                MetaError::Unavailable(format!("sqlite: {}", db.message()))
            }
            _ => MetaError::Database(format!("sqlite: {}", db.message())),
        },
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => MetaError::Unavailable(error.to_string()),
        other => MetaError::Database(other.to_string()),
    }
}

/// SQLite result codes worth retrying later: busy, locked, I/O error, disk full, cannot open.
fn is_transient(code: Option<&str>) -> bool {
    const BUSY: i32 = 5;
    const LOCKED: i32 = 6;
    const IOERR: i32 = 10;
    const FULL: i32 = 13;
    const CANTOPEN: i32 = 14;
    let primary = code.and_then(|c| c.parse::<i32>().ok()).map(|c| c & 0xff);
    matches!(primary, Some(BUSY | LOCKED | IOERR | FULL | CANTOPEN))
}

fn migrate_error(error: MigrateError) -> MetaError {
    match error {
        MigrateError::Execute(e) => sqlite_error(e),
        other => MetaError::Database(format!("migration failed: {other}")),
    }
}

/// Fails with `NotFound` unless a statement changed a row.
fn require_row(result: sqlx::sqlite::SqliteQueryResult) -> MetaResult<()> {
    if result.rows_affected() == 0 {
        return Err(MetaError::NotFound);
    }
    Ok(())
}

#[async_trait]
impl MetadataStore for SqliteStore {
    async fn migrate(&self) -> MetaResult<()> {
        let _writer = self.writer.lock().await;
        let supported = Self::supported_schema_version();
        if let Some(found) = self.schema_version().await?
            && found > supported
        {
            return Err(MetaError::SchemaTooNew { found, supported });
        }
        MIGRATOR.run(&self.pool).await.map_err(migrate_error)
    }

    async fn create_tenant(&self, tenant: &NewTenant) -> MetaResult<Tenant> {
        let mut w = self.write().await?;
        let result = accounts::create_tenant(w.conn(), tenant).await;
        w.finish(result).await
    }

    async fn tenant_by_name(&self, name: &str) -> MetaResult<Tenant> {
        let row = sqlx::query("SELECT * FROM tenants WHERE name = ?")
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(sqlite_error)?;
        rows::tenant(&row.ok_or(MetaError::NotFound)?)
    }

    async fn tenant(&self, id: i64) -> MetaResult<Tenant> {
        let row = sqlx::query("SELECT * FROM tenants WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(sqlite_error)?;
        rows::tenant(&row.ok_or(MetaError::NotFound)?)
    }

    async fn list_tenants(&self) -> MetaResult<Vec<Tenant>> {
        let found = sqlx::query("SELECT * FROM tenants ORDER BY name")
            .fetch_all(&self.pool)
            .await
            .map_err(sqlite_error)?;
        found.iter().map(rows::tenant).collect()
    }

    async fn tenant_keys(&self, tenant_id: i64) -> MetaResult<Vec<WrappedTenantKey>> {
        let found =
            sqlx::query("SELECT * FROM tenant_keys WHERE tenant_id = ? ORDER BY version, region")
                .bind(tenant_id)
                .fetch_all(&self.pool)
                .await
                .map_err(sqlite_error)?;
        found.iter().map(rows::tenant_key).collect()
    }

    async fn put_tenant_key(&self, key: &WrappedTenantKey) -> MetaResult<()> {
        let mut w = self.write().await?;
        let result = accounts::put_tenant_key(w.conn(), key).await;
        w.finish(result).await
    }

    async fn create_user(&self, user: &NewUser) -> MetaResult<User> {
        let mut w = self.write().await?;
        let result = accounts::create_user(w.conn(), user).await;
        w.finish(result).await
    }

    async fn user_by_name(&self, name: &str) -> MetaResult<User> {
        let row = sqlx::query("SELECT * FROM users WHERE name = ?")
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(sqlite_error)?;
        rows::user(&row.ok_or(MetaError::NotFound)?)
    }

    async fn user(&self, id: i64) -> MetaResult<User> {
        let row = sqlx::query("SELECT * FROM users WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(sqlite_error)?;
        rows::user(&row.ok_or(MetaError::NotFound)?)
    }

    async fn list_users(&self, tenant_id: Option<i64>) -> MetaResult<Vec<User>> {
        let query = match tenant_id {
            Some(tenant_id) => {
                sqlx::query("SELECT * FROM users WHERE tenant_id = ? ORDER BY name").bind(tenant_id)
            }
            None => sqlx::query("SELECT * FROM users ORDER BY name"),
        };
        let found = query.fetch_all(&self.pool).await.map_err(sqlite_error)?;
        found.iter().map(rows::user).collect()
    }

    async fn set_password(&self, user_id: i64, password_hash: Option<&str>) -> MetaResult<()> {
        let _writer = self.writer.lock().await;
        let done = sqlx::query("UPDATE users SET password_hash = ? WHERE id = ?")
            .bind(password_hash)
            .bind(user_id)
            .execute(&self.pool)
            .await
            .map_err(sqlite_error)?;
        require_row(done)
    }

    async fn set_disabled(&self, user_id: i64, disabled: bool) -> MetaResult<()> {
        let _writer = self.writer.lock().await;
        let done = sqlx::query("UPDATE users SET disabled = ? WHERE id = ?")
            .bind(disabled)
            .bind(user_id)
            .execute(&self.pool)
            .await
            .map_err(sqlite_error)?;
        require_row(done)
    }

    async fn delete_user(&self, user_id: i64) -> MetaResult<()> {
        let _writer = self.writer.lock().await;
        // SSH keys go with the user (ON DELETE CASCADE).
        let done = sqlx::query("DELETE FROM users WHERE id = ?")
            .bind(user_id)
            .execute(&self.pool)
            .await
            .map_err(sqlite_error)?;
        require_row(done)
    }

    async fn add_ssh_key(&self, user_id: i64, key: &NewSshKey) -> MetaResult<()> {
        let _writer = self.writer.lock().await;
        accounts::add_ssh_key(&self.pool, user_id, key).await
    }

    async fn ssh_keys(&self, user_id: i64) -> MetaResult<Vec<SshKey>> {
        let found = sqlx::query("SELECT * FROM ssh_keys WHERE user_id = ? ORDER BY id")
            .bind(user_id)
            .fetch_all(&self.pool)
            .await
            .map_err(sqlite_error)?;
        found.iter().map(rows::ssh_key).collect()
    }

    async fn add_api_token(&self, token: &ApiToken) -> MetaResult<ApiToken> {
        let _writer = self.writer.lock().await;
        let done = sqlx::query(
            "INSERT INTO api_tokens (user_id, token_id, secret_hash, created_ms, expires_ms) \
             VALUES (?, ?, ?, ?, ?)",
        )
        .bind(token.user_id)
        .bind(&token.token_id)
        .bind(&token.secret_hash)
        .bind(token.created_ms)
        .bind(token.expires_ms)
        .execute(&self.pool)
        .await
        .map_err(sqlite_error)?;
        Ok(ApiToken {
            id: done.last_insert_rowid(),
            ..token.clone()
        })
    }

    async fn api_token(&self, token_id: &str) -> MetaResult<ApiToken> {
        let row = sqlx::query("SELECT * FROM api_tokens WHERE token_id = ?")
            .bind(token_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(sqlite_error)?;
        rows::api_token(&row.ok_or(MetaError::NotFound)?)
    }

    async fn api_tokens(&self, user_id: i64) -> MetaResult<Vec<ApiToken>> {
        let found = sqlx::query("SELECT * FROM api_tokens WHERE user_id = ? ORDER BY id")
            .bind(user_id)
            .fetch_all(&self.pool)
            .await
            .map_err(sqlite_error)?;
        found.iter().map(rows::api_token).collect()
    }

    async fn delete_api_token(&self, user_id: i64, token_id: &str) -> MetaResult<()> {
        let _writer = self.writer.lock().await;
        let done = sqlx::query("DELETE FROM api_tokens WHERE user_id = ? AND token_id = ?")
            .bind(user_id)
            .bind(token_id)
            .execute(&self.pool)
            .await
            .map_err(sqlite_error)?;
        require_row(done)
    }

    async fn record_login_failure(
        &self,
        user_id: i64,
        now_ms: i64,
        threshold: u32,
        window_ms: i64,
        lock_ms: i64,
    ) -> MetaResult<Option<i64>> {
        let policy = LockoutPolicy {
            now_ms,
            threshold,
            window_ms,
            lock_ms,
        };
        let mut w = self.write().await?;
        let result = accounts::record_login_failure(w.conn(), user_id, &policy).await;
        w.finish(result).await
    }

    async fn clear_login_failures(&self, user_id: i64) -> MetaResult<()> {
        let _writer = self.writer.lock().await;
        let done = sqlx::query(
            "UPDATE users SET failed_count = 0, first_failure_ms = NULL, locked_until_ms = NULL \
             WHERE id = ?",
        )
        .bind(user_id)
        .execute(&self.pool)
        .await
        .map_err(sqlite_error)?;
        require_row(done)
    }

    async fn node(&self, tenant_id: i64, id: i64) -> MetaResult<Node> {
        namespace::node(&self.pool, tenant_id, id).await
    }

    async fn child(&self, tenant_id: i64, parent_id: i64, name_index: &[u8]) -> MetaResult<Node> {
        namespace::child(&self.pool, tenant_id, parent_id, name_index)
            .await?
            .ok_or(MetaError::NotFound)
    }

    async fn children(&self, tenant_id: i64, parent_id: i64) -> MetaResult<Vec<Node>> {
        namespace::children(&self.pool, tenant_id, parent_id).await
    }

    async fn create_dir(&self, dir: &NewDir) -> MetaResult<Node> {
        let mut w = self.write().await?;
        let result = namespace::create_dir(w.conn(), dir).await;
        w.finish(result).await
    }

    async fn commit_file(&self, file: &CommitFile) -> MetaResult<CommitOutcome> {
        let mut w = self.write().await?;
        let result = namespace::commit_file(w.conn(), file).await;
        w.finish(result).await
    }

    async fn remove(&self, tenant_id: i64, id: i64) -> MetaResult<()> {
        let mut w = self.write().await?;
        let result = namespace::remove(w.conn(), tenant_id, id, wall_clock_ms()).await;
        w.finish(result).await
    }

    async fn rename(&self, rename: &RenameNode) -> MetaResult<()> {
        let mut w = self.write().await?;
        let result = namespace::rename(w.conn(), rename).await;
        w.finish(result).await
    }

    async fn set_mtime(&self, tenant_id: i64, id: i64, mtime_ms: i64) -> MetaResult<()> {
        let _writer = self.writer.lock().await;
        let done = sqlx::query("UPDATE nodes SET mtime_ms = ? WHERE tenant_id = ? AND id = ?")
            .bind(mtime_ms)
            .bind(tenant_id)
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(sqlite_error)?;
        require_row(done)
    }

    async fn usage(&self, tenant_id: i64) -> MetaResult<Usage> {
        namespace::usage(&self.pool, tenant_id).await
    }

    async fn begin_upload(&self, upload: &NewUpload) -> MetaResult<i64> {
        let _writer = self.writer.lock().await;
        let done = sqlx::query(
            "INSERT INTO uploads (tenant_id, spool_name, object_key, node_name, started_ms) \
             VALUES (?, ?, ?, ?, ?)",
        )
        .bind(upload.tenant_id)
        .bind(&upload.spool_name)
        .bind(&upload.object_key)
        .bind(&upload.node_name)
        .bind(upload.now_ms)
        .execute(&self.bookkeeping)
        .await
        .map_err(sqlite_error)?;
        Ok(done.last_insert_rowid())
    }

    async fn end_upload(&self, upload_id: i64) -> MetaResult<()> {
        let _writer = self.writer.lock().await;
        namespace::delete_upload(&self.bookkeeping, upload_id).await
    }

    async fn uploads(&self) -> MetaResult<Vec<Upload>> {
        let found = sqlx::query("SELECT * FROM uploads ORDER BY started_ms, id")
            .fetch_all(&self.pool)
            .await
            .map_err(sqlite_error)?;
        found.iter().map(rows::upload).collect()
    }

    /// Jobs in the order they fall due: never-failed jobs oldest first, each failed job after
    /// its backoff, so one object that keeps failing does not hold up the rest.
    async fn pending_replication(&self, limit: u32) -> MetaResult<Vec<ReplicationJob>> {
        let found =
            sqlx::query("SELECT * FROM replication_outbox ORDER BY next_attempt_ms, id LIMIT ?")
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await
                .map_err(sqlite_error)?;
        found.iter().map(rows::replication_job).collect()
    }

    /// Idempotent: a job acknowledged twice is simply gone.
    async fn replication_done(&self, job_id: i64) -> MetaResult<()> {
        let _writer = self.writer.lock().await;
        sqlx::query("DELETE FROM replication_outbox WHERE id = ?")
            .bind(job_id)
            .execute(&self.bookkeeping)
            .await
            .map_err(sqlite_error)?;
        Ok(())
    }

    async fn replication_failed(&self, job_id: i64, error: &str, now_ms: i64) -> MetaResult<()> {
        let mut w = self.write().await?;
        let result = record_replication_failure(w.conn(), job_id, error, now_ms).await;
        w.finish(result).await
    }

    async fn garbage(&self, limit: u32) -> MetaResult<Vec<Garbage>> {
        let found = sqlx::query("SELECT * FROM garbage ORDER BY id LIMIT ?")
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(sqlite_error)?;
        found.iter().map(rows::garbage).collect()
    }

    /// Idempotent, like `replication_done`.
    async fn garbage_done(&self, id: i64) -> MetaResult<()> {
        let _writer = self.writer.lock().await;
        sqlx::query("DELETE FROM garbage WHERE id = ?")
            .bind(id)
            .execute(&self.bookkeeping)
            .await
            .map_err(sqlite_error)?;
        Ok(())
    }

    async fn audit(&self, records: &[AuditRecord]) -> MetaResult<()> {
        if records.is_empty() {
            return Ok(());
        }
        let _writer = self.writer.lock().await;
        crate::rows::audit_insert::<Sqlite>(records)
            .build()
            .execute(&self.bookkeeping)
            .await
            .map_err(sqlite_error)?;
        Ok(())
    }

    async fn recent_audit(&self, limit: u32) -> MetaResult<Vec<AuditRecord>> {
        let found = sqlx::query("SELECT * FROM audit ORDER BY at_ms DESC, id DESC LIMIT ?")
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(sqlite_error)?;
        found.iter().map(rows::audit).collect()
    }
}

/// Counts a failed attempt and pushes the job back by an exponential backoff.
async fn record_replication_failure(
    conn: &mut SqliteConnection,
    job_id: i64,
    error: &str,
    now_ms: i64,
) -> MetaResult<()> {
    let attempts: i64 = sqlx::query_scalar("SELECT attempts FROM replication_outbox WHERE id = ?")
        .bind(job_id)
        .fetch_optional(&mut *conn)
        .await
        .map_err(sqlite_error)?
        .ok_or(MetaError::NotFound)?;
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
    .await
    .map_err(sqlite_error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_and_locked_are_transient_constraint_errors_are_not() {
        assert!(is_transient(Some("5")));
        assert!(is_transient(Some("517"))); // SQLITE_BUSY_SNAPSHOT
        assert!(is_transient(Some("6")));
        assert!(!is_transient(Some("2067"))); // SQLITE_CONSTRAINT_UNIQUE
        assert!(!is_transient(None));
    }

    #[tokio::test]
    async fn children_query_uses_the_folder_index() {
        let store = SqliteStore::open_in_memory().await.unwrap();
        store.migrate().await.unwrap();
        let plan: Vec<(i64, i64, i64, String)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "EXPLAIN QUERY PLAN {}",
            namespace::CHILDREN
        )))
        .bind(1_i64)
        .bind(2_i64)
        .fetch_all(&store.pool)
        .await
        .unwrap();
        let detail: Vec<&str> = plan.iter().map(|row| row.3.as_str()).collect();
        assert!(
            detail.iter().any(|d| d.contains("USING INDEX")),
            "children() must be an indexed lookup, plan: {detail:?}"
        );
        assert!(
            !detail.iter().any(|d| d.starts_with("SCAN")),
            "plan: {detail:?}"
        );
    }

    #[tokio::test]
    async fn file_database_runs_wal_with_full_sync_and_foreign_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.db");
        let store = SqliteStore::open(path.to_str().unwrap()).await.unwrap();
        let mut conn = store.pool.acquire().await.unwrap();
        let journal: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        let synchronous: i64 = sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        let foreign_keys: i64 = sqlx::query_scalar("PRAGMA foreign_keys")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        assert_eq!(journal, "wal");
        assert_eq!(synchronous, 2, "synchronous must be FULL");
        assert_eq!(foreign_keys, 1);
    }
}
