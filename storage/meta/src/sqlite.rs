//! The SQLite dialect: the embedded default metadata store, one SQLite file in WAL mode.
//!
//! Writers are serialised twice over: inside the process by an async mutex (so concurrent
//! requests queue instead of spinning in SQLite's busy handler), and across processes by
//! `BEGIN IMMEDIATE`, which takes SQLite's write lock before the first read of a
//! read-then-write transaction, so a snapshot can never go stale under it. Nothing is
//! retried: a busy database after the 5 s busy timeout is `Unavailable`.

use std::marker::PhantomData;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::Sqlite;
use sqlx::error::ErrorKind;
use sqlx::migrate::{MigrateError, Migrator};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteQueryResult,
    SqliteSynchronous,
};
use tokio::sync::Mutex;

use crate::conns::Conns;
use crate::in_place::InPlace;
use crate::sql::{Dialect, SqlStore};
use crate::{MetaError, MetaResult, SchemaStore};

/// The migrations this build knows, embedded at compile time.
static MIGRATOR: Migrator = sqlx::migrate!("./migrations/sqlite");

/// How long a connection waits for another process's write lock before `Unavailable`.
pub(crate) const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a request waits for a pooled connection before `Unavailable`.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections of a file database: readers run in parallel, writers take turns.
const FILE_POOL_SIZE: u32 = 8;

/// The SQLite dialect of [`SqlStore`].
#[derive(Clone, Copy, Debug)]
pub struct SqliteDialect;

/// The SQLite metadata store. Cloning is cheap and shares the pool.
pub type SqliteStore = SqlStore<SqliteDialect>;

impl Dialect for SqliteDialect {
    type Db = Sqlite;
    const NAME: &'static str = "sqlite";
    const BEGIN: Option<&'static str> = Some("BEGIN IMMEDIATE");
    const SERIAL_WRITERS: bool = true;
    const MULTI_STATEMENT: bool = true;
    const USAGE: &'static str = "SELECT COALESCE(SUM(bytes), 0) AS bytes, \
                                 COALESCE(SUM(files), 0) AS files \
                                 FROM tenant_usage WHERE tenant_id = ?";
    const COUNTED_USAGE: &'static str = "SELECT COALESCE(SUM(size), 0) AS bytes, \
                                         COUNT(*) AS files \
                                         FROM nodes WHERE tenant_id = ? AND kind = 'f'";
    const ADD_USAGE: &'static str = "INSERT INTO tenant_usage (tenant_id, shard, bytes, files) \
         VALUES (?, ?, ?, ?) ON CONFLICT (tenant_id, shard) \
         DO UPDATE SET bytes = bytes + excluded.bytes, files = files + excluded.files;";
    const USAGE_SHARDS: i64 = 1;
    const PUT_TENANT_KEY: &'static str = "INSERT INTO tenant_keys (tenant_id, version, region, master_key_id, wrapped, created_ms) \
         VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (tenant_id, version, region) \
         DO UPDATE SET master_key_id = excluded.master_key_id, wrapped = excluded.wrapped";

    fn map_error(error: sqlx::Error) -> MetaError {
        sqlite_error(error)
    }

    /// Never retried: the busy timeout has already waited for the write lock.
    fn is_transient(_error: &sqlx::Error) -> bool {
        false
    }

    fn describe(error: &sqlx::Error) -> String {
        match error {
            sqlx::Error::Database(db) => format!("sqlite: {}", db.message()),
            other => other.to_string(),
        }
    }

    fn rows_affected(done: &SqliteQueryResult) -> u64 {
        done.rows_affected()
    }

    fn last_insert_id(done: &SqliteQueryResult) -> Option<i64> {
        Some(done.last_insert_rowid())
    }
}

impl SqliteStore {
    /// Opens (creating the file if missing) a SQLite database at a `sqlite://PATH` URL or plain
    /// path: WAL journal, `synchronous=FULL` (a commit is on disk before the caller hears of
    /// it) except for bookkeeping writes (see [`SqlStore`]), foreign keys on, a 5 s busy
    /// timeout. Call [`SqliteStore::migrate`] next. Point reads by a unique key run on the
    /// calling thread through read-only connections of their own, and an upload's commit
    /// through a read-write one with these settings (`in_place.rs`).
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
            .busy_timeout(BUSY_TIMEOUT)
            // The checkpoint thread copies the log back (`checkpoint.rs`); this is the backstop.
            .pragma(
                "wal_autocheckpoint",
                crate::checkpoint::WRITER_AUTOCHECKPOINT.to_string(),
            );
        let target = options.get_filename().display().to_string();
        // A file only: an in-memory database is private to its own connections.
        let file = options.get_filename();
        let in_place = (file != Path::new(":memory:") && !target.is_empty())
            .then(|| Arc::new(InPlace::new(file.to_owned())));
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
        Ok(Self::serial(
            Conns::new(pool),
            Conns::new(bookkeeping),
            target,
            in_place,
        ))
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
        // One pool for both: one set of lent connections, or each would wait for the other's.
        let conns = Conns::new(pool);
        Ok(Self::serial(
            Arc::clone(&conns),
            conns,
            ":memory:".into(),
            None,
        ))
    }

    fn serial(
        pool: Arc<Conns<sqlx::Sqlite>>,
        bookkeeping: Arc<Conns<sqlx::Sqlite>>,
        target: String,
        in_place: Option<Arc<InPlace>>,
    ) -> Self {
        Self {
            pool,
            bookkeeping,
            writer: Some(Arc::new(Mutex::new(()))),
            max_retries: 0,
            target,
            in_place,
            dialect: PhantomData,
        }
    }

    /// The newest schema version this build can run on.
    pub fn supported_schema_version() -> i64 {
        MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0)
    }

    /// The newest migration applied to the database, `None` for a fresh database.
    pub async fn schema_version(&self) -> MetaResult<Option<i64>> {
        let mut held = self.pool.acquire().await.map_err(sqlite_error)?;
        let version = Self::schema_version_on(held.conn()).await;
        held.settle(&version);
        version.map_err(sqlite_error)
    }

    async fn schema_version_on(
        conn: &mut sqlx::SqliteConnection,
    ) -> Result<Option<i64>, sqlx::Error> {
        let tables: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
        )
        .fetch_one(&mut *conn)
        .await?;
        if tables == 0 {
            return Ok(None);
        }
        sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations")
            .fetch_one(&mut *conn)
            .await
    }

    /// Applies pending migrations; refuses a schema newer than this build knows.
    pub async fn migrate(&self) -> MetaResult<()> {
        let _writer = match &self.writer {
            Some(writer) => Some(writer.lock().await),
            None => None,
        };
        let supported = Self::supported_schema_version();
        if let Some(found) = self.schema_version().await?
            && found > supported
        {
            return Err(MetaError::SchemaTooNew { found, supported });
        }
        let mut held = self.pool.acquire().await.map_err(sqlite_error)?;
        let done = MIGRATOR.run_direct(None, held.conn(), false).await;
        if done.is_ok() {
            held.release();
        }
        done.map_err(migrate_error)
    }
}

#[async_trait]
impl SchemaStore for SqliteStore {
    async fn migrate(&self) -> MetaResult<()> {
        SqliteStore::migrate(self).await
    }
}

/// Maps a sqlx error to the crate's error. SQLite's own messages name tables, columns and
/// constraints, never bound values, so they are safe to pass on.
fn sqlite_error(error: sqlx::Error) -> MetaError {
    match error {
        sqlx::Error::RowNotFound => MetaError::NotFound,
        sqlx::Error::Database(db) => match db.kind() {
            ErrorKind::UniqueViolation => MetaError::AlreadyExists,
            // Every foreign key points at a row the caller named: it is missing.
            ErrorKind::ForeignKeyViolation => MetaError::NotFound,
            _ if is_transient_code(db.code().as_deref()) => {
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
fn is_transient_code(code: Option<&str>) -> bool {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_and_locked_are_transient_constraint_errors_are_not() {
        assert!(is_transient_code(Some("5")));
        assert!(is_transient_code(Some("517"))); // SQLITE_BUSY_SNAPSHOT
        assert!(is_transient_code(Some("6")));
        assert!(!is_transient_code(Some("2067"))); // SQLITE_CONSTRAINT_UNIQUE
        assert!(!is_transient_code(None));
    }

    #[tokio::test]
    async fn children_query_uses_the_folder_index() {
        let store = SqliteStore::open_in_memory().await.unwrap();
        store.migrate().await.unwrap();
        let plan: Vec<(i64, i64, i64, String)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "EXPLAIN QUERY PLAN {}",
            crate::sql::CHILDREN
        )))
        .bind(1_i64)
        .bind(2_i64)
        .fetch_all(store.pool.acquire().await.unwrap().conn())
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
        let mut held = store.pool.acquire().await.unwrap();
        let conn = held.conn();
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
        // The checkpoint thread copies the log back; a writer only past the backstop.
        let autocheckpoint: i64 = sqlx::query_scalar("PRAGMA wal_autocheckpoint")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        assert_eq!(journal, "wal");
        assert_eq!(synchronous, 2, "synchronous must be FULL");
        assert_eq!(foreign_keys, 1);
        assert_eq!(
            autocheckpoint,
            i64::from(crate::checkpoint::WRITER_AUTOCHECKPOINT)
        );
    }
}
