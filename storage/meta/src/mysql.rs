//! `MySqlStore`: the metadata store on MySQL 8, MariaDB 10.11 or RDS, shared by many nodes.
//!
//! Every write, even a single statement, is one InnoDB transaction at READ COMMITTED. Where
//! the SQLite store relies on its single writer, this one takes row locks (see
//! `mysql/namespace.rs`). Deadlocks, lock wait timeouts and connections lost before a commit
//! was sent are retried inside the store, a bounded number of times with a growing delay;
//! whatever still fails reaches the caller as [`MetaError::Unavailable`]. A connection lost while a COMMIT is in flight is never retried:
//! its outcome is unknown, so the caller hears `Unavailable` and decides. The pool checks each
//! connection before handing it out, so after a database restart or an RDS failover the store
//! recovers by itself.
//!
//! Error texts carry MySQL error numbers and SQLSTATEs, never the server's message (MySQL
//! quotes bound values in some of them, e.g. duplicate-key errors) and never the URL.

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

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use sqlx::migrate::{MigrateError, Migrator};
use sqlx::mysql::{MySqlConnectOptions, MySqlPool, MySqlPoolOptions, MySqlSslMode};
use sqlx::{Executor, MySql, MySqlConnection, Transaction};
use zeroize::Zeroizing;

use crate::lockout::LockoutPolicy;
use crate::outbox::{replication_backoff_ms, truncate_error, wall_clock_ms};
use crate::{
    ApiToken, AuditRecord, CommitFile, CommitOutcome, Garbage, MetaError, MetaResult,
    MetadataStore, NewDir, NewSshKey, NewTenant, NewUpload, NewUser, Node, RenameNode,
    ReplicationJob, SshKey, Tenant, Upload, Usage, User, WrappedTenantKey,
};

/// The migrations this build knows, embedded at compile time.
static MIGRATOR: Migrator = sqlx::migrate!("./migrations/mysql");

/// How long a statement waits for another transaction's row lock before it is retried.
const LOCK_WAIT_TIMEOUT_SECS: u32 = 10;
/// First delay before retrying a transient failure; doubles with each retry.
const RETRY_BASE_DELAY: Duration = Duration::from_millis(20);
/// Longest delay between two retries.
const RETRY_MAX_DELAY: Duration = Duration::from_secs(2);

/// How the connection to the database is protected.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum MySqlTls {
    /// Plain TCP. Only for a database on the same host or a private test network.
    Disable,
    /// TLS, without checking the server's certificate.
    Require,
    /// TLS with a server certificate signed by the configured CA bundle.
    VerifyCa,
    /// As `VerifyCa`, and the certificate must name the host in the URL.
    #[default]
    VerifyFull,
}

/// What [`MySqlStore::open`] needs. The password is wiped from memory when dropped and never
/// printed: `Debug` shows neither it nor the URL's user info.
pub struct MySqlOptions {
    /// `mysql://USER[:PASSWORD]@HOST[:PORT]/DATABASE`.
    pub url: String,
    /// Overrides any password in `url` (read from `password_file` or the environment).
    pub password: Option<Zeroizing<String>>,
    /// TLS mode.
    pub tls: MySqlTls,
    /// PEM CA bundle for `VerifyCa` / `VerifyFull` (e.g. the RDS bundle); `None` uses the
    /// built-in web roots.
    pub ca_file: Option<PathBuf>,
    /// Most connections this node keeps open.
    pub pool_size: u32,
    /// How long to wait for a connection (TCP + TLS + login, or a free pooled one).
    pub connect_timeout: Duration,
    /// How many times a transient failure (deadlock, lock wait timeout, lost connection before
    /// commit) is retried before the caller hears `Unavailable`.
    pub max_retries: u32,
}

impl MySqlOptions {
    /// Options for `url` with the defaults: `verify-full`, 10 connections, 10 s, 5 retries.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            password: None,
            tls: MySqlTls::default(),
            ca_file: None,
            pool_size: 10,
            connect_timeout: Duration::from_secs(10),
            max_retries: 5,
        }
    }

    /// Sets the password (a zeroizing copy of `password`).
    pub fn set_password(&mut self, password: &str) {
        self.password = Some(Zeroizing::new(password.to_owned()));
    }

    fn connect_options(&self) -> MetaResult<MySqlConnectOptions> {
        // sqlx's parse errors describe the problem, not the URL, so the password stays out.
        let mut options = MySqlConnectOptions::from_str(&self.url)
            .map_err(|e| MetaError::Database(format!("invalid MySQL URL: {e}")))?;
        if let Some(password) = &self.password {
            options = options.password(password);
        }
        let mode = match self.tls {
            MySqlTls::Disable => MySqlSslMode::Disabled,
            MySqlTls::Require => MySqlSslMode::Required,
            MySqlTls::VerifyCa => MySqlSslMode::VerifyCa,
            MySqlTls::VerifyFull => MySqlSslMode::VerifyIdentity,
        };
        options = options.ssl_mode(mode);
        if let Some(ca_file) = &self.ca_file {
            options = options.ssl_ca(ca_file);
        }
        Ok(options)
    }
}

impl fmt::Debug for MySqlOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MySqlOptions")
            .field("url", &"<redacted>")
            .field("tls", &self.tls)
            .field("ca_file", &self.ca_file)
            .field("pool_size", &self.pool_size)
            .field("connect_timeout", &self.connect_timeout)
            .field("max_retries", &self.max_retries)
            .finish_non_exhaustive()
    }
}

/// The MySQL / MariaDB metadata store. Cloning is cheap and shares the pool.
#[derive(Clone)]
pub struct MySqlStore {
    pool: MySqlPool,
    /// `host:port/database`, for messages; no user, no password.
    target: String,
    max_retries: u32,
}

impl fmt::Debug for MySqlStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MySqlStore")
            .field("target", &self.target)
            .field("max_retries", &self.max_retries)
            .finish_non_exhaustive()
    }
}

/// How one attempt at a store operation failed.
#[derive(Debug)]
enum TxError {
    /// A decided outcome (not found, conflict, ...): returned as is.
    Meta(MetaError),
    /// A database error: retried if transient, else mapped by [`mysql_error`].
    Sql(sqlx::Error),
    /// Another node won a race the row locks should have ordered (a unique violation on the
    /// insert of a new file): the attempt is rolled back and retried.
    RaceLost,
}

type TxResult<T> = Result<T, TxError>;

impl From<sqlx::Error> for TxError {
    fn from(error: sqlx::Error) -> Self {
        Self::Sql(error)
    }
}

impl From<MetaError> for TxError {
    fn from(error: MetaError) -> Self {
        Self::Meta(error)
    }
}

impl TxError {
    /// Worth another attempt: nothing of this attempt was committed, and trying again may work.
    fn is_retryable(&self) -> bool {
        match self {
            Self::Meta(_) => false,
            Self::RaceLost => true,
            Self::Sql(error) => is_transient(error),
        }
    }

    fn into_meta(self) -> MetaError {
        match self {
            Self::Meta(error) => error,
            Self::Sql(error) => mysql_error(error),
            Self::RaceLost => {
                MetaError::Unavailable("metadata transaction kept losing a race".into())
            }
        }
    }
}

/// Runs `$attempt` (an expression giving a fresh future each time, yielding a `TxResult`)
/// until it succeeds, fails for good, or has been retried `max_retries` times.
macro_rules! with_retry {
    ($store:expr, $attempt:expr) => {{
        let mut retries = 0_u32;
        loop {
            let outcome: TxResult<_> = $attempt.await;
            match outcome {
                Err(error) if retries < $store.max_retries && error.is_retryable() => {
                    retries += 1;
                    tracing::debug!(retries, error = %summary(&error), "retrying metadata operation");
                    tokio::time::sleep(retry_delay(retries)).await;
                }
                other => break other.map_err(TxError::into_meta),
            }
        }
    }};
}

/// Runs `$body` (using the connection `$conn`) in a transaction, committing on success, rolling
/// back on failure, retrying transient failures.
macro_rules! transaction {
    ($store:expr, |$conn:ident| $body:expr) => {
        with_retry!($store, async {
            let mut tx = $store.pool.begin().await?;
            let result = {
                let $conn: &mut MySqlConnection = &mut tx;
                $body.await
            };
            finish(tx, result).await
        })
    };
}

/// Commits if `result` is a success, rolls back otherwise; returns `result`. A failed COMMIT
/// is reported as decided (never retried): the server may have applied it.
async fn finish<T>(tx: Transaction<'static, MySql>, result: TxResult<T>) -> TxResult<T> {
    match result {
        Ok(value) => match tx.commit().await {
            Ok(()) => Ok(value),
            Err(error) => Err(TxError::Meta(match mysql_error(error) {
                MetaError::Unavailable(why) => MetaError::Unavailable(format!(
                    "the database went away during COMMIT, the change may or may not be \
                     applied: {why}"
                )),
                other => other,
            })),
        },
        Err(error) => {
            if let Err(rollback) = tx.rollback().await {
                tracing::debug!(error = %mysql_error(rollback), "metadata rollback failed");
            }
            Err(error)
        }
    }
}

/// A short description of an attempt's failure for logs: codes, no values.
fn summary(error: &TxError) -> String {
    match error {
        TxError::Meta(meta) => meta.to_string(),
        TxError::Sql(sql) => describe(sql),
        TxError::RaceLost => "lost a race on insert".into(),
    }
}

/// MySQL server error numbers that say "try again": the transaction was rolled back, or the
/// server is going away or read-only for a moment (an RDS failover).
mod transient_code {
    pub const TOO_MANY_CONNECTIONS: u16 = 1040;
    pub const SERVER_SHUTDOWN: u16 = 1053;
    pub const LOCK_WAIT_TIMEOUT: u16 = 1205;
    pub const DEADLOCK: u16 = 1213;
    pub const READ_ONLY: u16 = 1290;
    pub const READ_ONLY_TRANSACTION: u16 = 1792;
    pub const READ_ONLY_MODE: u16 = 1836;
    pub const CONNECTION_KILLED: u16 = 1927;
    pub const CLIENT_INTERACTION_TIMEOUT: u16 = 4031;
}

fn server_error_number(error: &sqlx::Error) -> Option<u16> {
    error
        .as_database_error()
        .and_then(|db| db.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>())
        .map(sqlx::mysql::MySqlDatabaseError::number)
}

fn is_transient_number(number: u16) -> bool {
    use transient_code::*;
    matches!(
        number,
        TOO_MANY_CONNECTIONS
            | SERVER_SHUTDOWN
            | LOCK_WAIT_TIMEOUT
            | DEADLOCK
            | READ_ONLY
            | READ_ONLY_TRANSACTION
            | READ_ONLY_MODE
            | CONNECTION_KILLED
            | CLIENT_INTERACTION_TIMEOUT
    )
}

/// Errors worth retrying: transient server errors and connections lost on the way. A pool
/// timeout is not retried: the caller has already waited `connect_timeout`.
fn is_transient(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(_) => server_error_number(error).is_some_and(is_transient_number),
        sqlx::Error::Io(io) => !is_certificate_refusal(io),
        sqlx::Error::WorkerCrashed => true,
        _ => false,
    }
}

/// sqlx reports a refused server certificate (rustls: "invalid peer certificate: …") as an
/// I/O error of kind `InvalidData`; that is a configuration problem, not an outage.
fn is_certificate_refusal(error: &std::io::Error) -> bool {
    error.kind() == std::io::ErrorKind::InvalidData
        && error.to_string().to_lowercase().contains("certificate")
}

/// A description of a sqlx error that is safe to log: the MySQL error number and SQLSTATE
/// for server errors (whose messages may quote bound values), sqlx's own text otherwise.
fn describe(error: &sqlx::Error) -> String {
    match error {
        sqlx::Error::Database(db) => format!(
            "mysql error {} (SQLSTATE {})",
            server_error_number(error).unwrap_or_default(),
            db.code().as_deref().unwrap_or("?")
        ),
        other => other.to_string(),
    }
}

/// Maps a sqlx error to the crate's error.
fn mysql_error(error: sqlx::Error) -> MetaError {
    use sqlx::error::ErrorKind;
    if let Some(db) = error.as_database_error() {
        match db.kind() {
            ErrorKind::UniqueViolation => return MetaError::AlreadyExists,
            // Every foreign key points at a row the caller named: it is missing.
            ErrorKind::ForeignKeyViolation => return MetaError::NotFound,
            _ => {}
        }
    }
    match error {
        sqlx::Error::RowNotFound => MetaError::NotFound,
        sqlx::Error::Tls(why) => tls_error(&why.to_string()),
        sqlx::Error::Io(ref io) if is_certificate_refusal(io) => tls_error(&io.to_string()),
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => {
            MetaError::Unavailable(format!("mysql: {}", describe(&error)))
        }
        ref db @ sqlx::Error::Database(_) if is_transient(db) => {
            MetaError::Unavailable(format!("mysql: {}", describe(db)))
        }
        other => MetaError::Database(format!("mysql: {}", describe(&other))),
    }
}

fn tls_error(why: &str) -> MetaError {
    MetaError::Tls(format!(
        "{why} (check metadata.tls and metadata.ca_file against the server's certificate)"
    ))
}

fn migrate_error(error: MigrateError) -> MetaError {
    match error {
        MigrateError::Execute(e) => mysql_error(e),
        // Our own migration SQL, no bound values: the message is safe and useful.
        MigrateError::ExecuteMigration(e, version) => MetaError::Database(format!(
            "migration {version} failed: {}",
            e.as_database_error()
                .map_or_else(|| e.to_string(), |db| db.message().to_owned())
        )),
        other => MetaError::Database(format!("migration failed: {other}")),
    }
}

/// Delay before retry number `retries` (1-based): doubling from [`RETRY_BASE_DELAY`], capped,
/// with up to half of it added at random so that nodes that collided do not collide again.
fn retry_delay(retries: u32) -> Duration {
    let doubled = RETRY_BASE_DELAY.saturating_mul(1_u32 << retries.saturating_sub(1).min(16));
    let capped = doubled.min(RETRY_MAX_DELAY);
    let jitter_ms = u64::from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos()),
    ) % (u64::try_from(capped.as_millis() / 2).unwrap_or(1).max(1));
    capped + Duration::from_millis(jitter_ms)
}

/// Fails with `NotFound` unless a statement matched a row (sqlx asks MySQL for found rows,
/// not changed rows, so an update to the same value still counts).
fn require_row(result: sqlx::mysql::MySqlQueryResult) -> TxResult<()> {
    if result.rows_affected() == 0 {
        return Err(MetaError::NotFound.into());
    }
    Ok(())
}

/// Decodes every row with `decode`.
fn decode_all<T>(
    found: &[sqlx::mysql::MySqlRow],
    decode: fn(&sqlx::mysql::MySqlRow) -> MetaResult<T>,
) -> TxResult<Vec<T>> {
    Ok(found.iter().map(decode).collect::<MetaResult<_>>()?)
}

/// Runs one statement that must match a row, in a transaction so that a retry after a lost
/// connection can never apply it twice.
macro_rules! update_one {
    ($store:expr, $query:expr) => {
        transaction!($store, |conn| async {
            require_row($query.execute(&mut *conn).await?)
        })
    };
}

/// Runs one statement whose row count does not matter, in a transaction (see `update_one!`).
macro_rules! execute {
    ($store:expr, $query:expr) => {
        transaction!($store, |conn| async {
            $query.execute(&mut *conn).await?;
            Ok(())
        })
    };
}

impl MySqlStore {
    /// Connects (one connection now, up to `pool_size` later). Fails with `Unavailable` if the
    /// server cannot be reached, `Tls` if its certificate is refused. Call
    /// [`MetadataStore::migrate`] or [`MySqlStore::check_schema`] next.
    pub async fn open(options: &MySqlOptions) -> MetaResult<Self> {
        let connect = options.connect_options()?;
        let target = format!(
            "{}:{}/{}",
            connect.get_host(),
            connect.get_port(),
            connect.get_database().unwrap_or_default()
        );
        let pool = MySqlPoolOptions::new()
            .max_connections(options.pool_size.max(1))
            .acquire_timeout(options.connect_timeout)
            .test_before_acquire(true)
            .after_connect(|conn, _| Box::pin(async move { prepare_session(conn).await }))
            .connect_with(connect)
            .await
            .map_err(mysql_error)?;
        Ok(Self {
            pool,
            target,
            max_retries: options.max_retries,
        })
    }

    /// The newest schema version this build can run on.
    pub fn supported_schema_version() -> i64 {
        MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0)
    }

    /// The newest migration applied to the database, `None` for a fresh database.
    pub async fn schema_version(&self) -> MetaResult<Option<i64>> {
        with_retry!(self, async {
            let tables: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM information_schema.tables \
                 WHERE table_schema = DATABASE() AND table_name = '_sqlx_migrations'",
            )
            .fetch_one(&self.pool)
            .await?;
            if tables == 0 {
                return Ok(None);
            }
            let version: Option<i64> =
                sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations WHERE success")
                    .fetch_one(&self.pool)
                    .await?;
            Ok(version)
        })
    }

    /// For a node that does not migrate on start: succeeds only if the database holds exactly
    /// the schema this build knows (`SchemaTooNew` / `SchemaTooOld` otherwise).
    pub async fn check_schema(&self) -> MetaResult<()> {
        let supported = Self::supported_schema_version();
        match self.schema_version().await?.unwrap_or(0) {
            found if found > supported => Err(MetaError::SchemaTooNew { found, supported }),
            found if found < supported => Err(MetaError::SchemaTooOld { found, supported }),
            _ => Ok(()),
        }
    }

    /// `host:port/database` of the server, without credentials: for log lines and messages.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// Closes every connection; later calls fail with `Unavailable`.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

impl MySqlStore {
    /// The body of [`MetadataStore::migrate`], on the connection holding the migration lock.
    async fn migrate_locked(&self, conn: &mut MySqlConnection) -> MetaResult<()> {
        let supported = Self::supported_schema_version();
        if let Some(found) = self.schema_version().await?
            && found > supported
        {
            return Err(MetaError::SchemaTooNew { found, supported });
        }
        // `run_direct` is `run` on a borrowed connection (the one holding the lock); sqlx keeps
        // it public for callers that hit `run`'s "Acquire is not general enough" error.
        MIGRATOR
            .run_direct(None, conn, false)
            .await
            .map_err(migrate_error)
    }
}

/// Takes the server-wide named lock that serialises migrations of one database.
const MIGRATION_LOCK: &str = "SELECT GET_LOCK(LEFT(CONCAT('coffer-migrate:', DATABASE()), 64), ?)";
/// Releases [`MIGRATION_LOCK`].
const MIGRATION_UNLOCK: &str =
    "SELECT RELEASE_LOCK(LEFT(CONCAT('coffer-migrate:', DATABASE()), 64))";
/// How long a starting node waits for another node's migration.
const MIGRATION_LOCK_WAIT_SECS: i64 = 300;

/// Session settings every pooled connection gets: READ COMMITTED (each statement sees the
/// newest committed rows, so a read after taking a row lock is never stale) and a short lock
/// wait, so a stuck transaction becomes a retry rather than a hung request.
async fn prepare_session(conn: &mut MySqlConnection) -> Result<(), sqlx::Error> {
    conn.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
        .await?;
    conn.execute(sqlx::AssertSqlSafe(format!(
        "SET SESSION innodb_lock_wait_timeout = {LOCK_WAIT_TIMEOUT_SECS}"
    )))
    .await?;
    Ok(())
}

#[async_trait]
impl MetadataStore for MySqlStore {
    /// Applies pending migrations while holding a named lock of the database server, so
    /// nodes starting together migrate one after another (sqlx's own lock asks MariaDB for an
    /// infinite wait with a negative timeout, which MariaDB does not honour).
    async fn migrate(&self) -> MetaResult<()> {
        let mut conn = self.pool.acquire().await.map_err(mysql_error)?;
        let locked: Option<i64> = sqlx::query_scalar(MIGRATION_LOCK)
            .bind(MIGRATION_LOCK_WAIT_SECS)
            .fetch_one(&mut *conn)
            .await
            .map_err(mysql_error)?;
        if locked != Some(1) {
            return Err(MetaError::Unavailable(
                "another node is still migrating the metadata schema".into(),
            ));
        }
        let result = self.migrate_locked(&mut conn).await;
        if let Err(error) = sqlx::query(MIGRATION_UNLOCK).execute(&mut *conn).await {
            // The lock goes with the connection; drop it rather than return it to the pool.
            tracing::debug!(error = %describe(&error), "releasing the migration lock failed");
            conn.detach();
        }
        result
    }

    async fn create_tenant(&self, tenant: &NewTenant) -> MetaResult<Tenant> {
        transaction!(self, |conn| accounts::create_tenant(conn, tenant))
    }

    async fn tenant_by_name(&self, name: &str) -> MetaResult<Tenant> {
        with_retry!(self, async {
            let row = sqlx::query("SELECT * FROM tenants WHERE name = ?")
                .bind(name)
                .fetch_optional(&self.pool)
                .await?;
            Ok(rows::tenant(&row.ok_or(MetaError::NotFound)?)?)
        })
    }

    async fn tenant(&self, id: i64) -> MetaResult<Tenant> {
        with_retry!(self, async {
            let row = sqlx::query("SELECT * FROM tenants WHERE id = ?")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
            Ok(rows::tenant(&row.ok_or(MetaError::NotFound)?)?)
        })
    }

    async fn list_tenants(&self) -> MetaResult<Vec<Tenant>> {
        with_retry!(self, async {
            let found = sqlx::query("SELECT * FROM tenants ORDER BY name")
                .fetch_all(&self.pool)
                .await?;
            decode_all(&found, rows::tenant)
        })
    }

    async fn tenant_keys(&self, tenant_id: i64) -> MetaResult<Vec<WrappedTenantKey>> {
        with_retry!(self, async {
            let found = sqlx::query(
                "SELECT * FROM tenant_keys WHERE tenant_id = ? ORDER BY version, region",
            )
            .bind(tenant_id)
            .fetch_all(&self.pool)
            .await?;
            decode_all(&found, rows::tenant_key)
        })
    }

    async fn put_tenant_key(&self, key: &WrappedTenantKey) -> MetaResult<()> {
        transaction!(self, |conn| accounts::put_tenant_key(&mut *conn, key))
    }

    async fn create_user(&self, user: &NewUser) -> MetaResult<User> {
        transaction!(self, |conn| accounts::create_user(conn, user))
    }

    async fn user_by_name(&self, name: &str) -> MetaResult<User> {
        with_retry!(self, async {
            let row = sqlx::query("SELECT * FROM users WHERE name = ?")
                .bind(name)
                .fetch_optional(&self.pool)
                .await?;
            Ok(rows::user(&row.ok_or(MetaError::NotFound)?)?)
        })
    }

    async fn user(&self, id: i64) -> MetaResult<User> {
        with_retry!(self, async {
            let row = sqlx::query("SELECT * FROM users WHERE id = ?")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
            Ok(rows::user(&row.ok_or(MetaError::NotFound)?)?)
        })
    }

    async fn list_users(&self, tenant_id: Option<i64>) -> MetaResult<Vec<User>> {
        with_retry!(self, async {
            let query = match tenant_id {
                Some(tenant_id) => {
                    sqlx::query("SELECT * FROM users WHERE tenant_id = ? ORDER BY name")
                        .bind(tenant_id)
                }
                None => sqlx::query("SELECT * FROM users ORDER BY name"),
            };
            let found = query.fetch_all(&self.pool).await?;
            decode_all(&found, rows::user)
        })
    }

    async fn set_password(&self, user_id: i64, password_hash: Option<&str>) -> MetaResult<()> {
        update_one!(
            self,
            sqlx::query("UPDATE users SET password_hash = ? WHERE id = ?")
                .bind(password_hash)
                .bind(user_id)
        )
    }

    async fn set_disabled(&self, user_id: i64, disabled: bool) -> MetaResult<()> {
        update_one!(
            self,
            sqlx::query("UPDATE users SET disabled = ? WHERE id = ?")
                .bind(disabled)
                .bind(user_id)
        )
    }

    async fn delete_user(&self, user_id: i64) -> MetaResult<()> {
        // SSH keys go with the user (ON DELETE CASCADE).
        update_one!(
            self,
            sqlx::query("DELETE FROM users WHERE id = ?").bind(user_id)
        )
    }

    async fn add_ssh_key(&self, user_id: i64, key: &NewSshKey) -> MetaResult<()> {
        transaction!(self, |conn| accounts::add_ssh_key(&mut *conn, user_id, key))
    }

    async fn ssh_keys(&self, user_id: i64) -> MetaResult<Vec<SshKey>> {
        with_retry!(self, async {
            let found = sqlx::query("SELECT * FROM ssh_keys WHERE user_id = ? ORDER BY id")
                .bind(user_id)
                .fetch_all(&self.pool)
                .await?;
            decode_all(&found, rows::ssh_key)
        })
    }

    async fn add_api_token(&self, token: &ApiToken) -> MetaResult<ApiToken> {
        transaction!(self, |conn| async {
            let done = sqlx::query(
                "INSERT INTO api_tokens (user_id, token_id, secret_hash, created_ms, expires_ms) \
                 VALUES (?, ?, ?, ?, ?)",
            )
            .bind(token.user_id)
            .bind(&token.token_id)
            .bind(&token.secret_hash)
            .bind(token.created_ms)
            .bind(token.expires_ms)
            .execute(&mut *conn)
            .await?;
            Ok(ApiToken {
                id: i64::try_from(done.last_insert_id()).map_err(|_| rows::corrupt("id"))?,
                ..token.clone()
            })
        })
    }

    async fn api_token(&self, token_id: &str) -> MetaResult<ApiToken> {
        with_retry!(self, async {
            let row = sqlx::query("SELECT * FROM api_tokens WHERE token_id = ?")
                .bind(token_id)
                .fetch_optional(&self.pool)
                .await?;
            Ok(rows::api_token(&row.ok_or(MetaError::NotFound)?)?)
        })
    }

    async fn api_tokens(&self, user_id: i64) -> MetaResult<Vec<ApiToken>> {
        with_retry!(self, async {
            let found = sqlx::query("SELECT * FROM api_tokens WHERE user_id = ? ORDER BY id")
                .bind(user_id)
                .fetch_all(&self.pool)
                .await?;
            decode_all(&found, rows::api_token)
        })
    }

    async fn delete_api_token(&self, user_id: i64, token_id: &str) -> MetaResult<()> {
        update_one!(
            self,
            sqlx::query("DELETE FROM api_tokens WHERE user_id = ? AND token_id = ?")
                .bind(user_id)
                .bind(token_id)
        )
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
        transaction!(self, |conn| accounts::record_login_failure(
            conn, user_id, &policy
        ))
    }

    async fn clear_login_failures(&self, user_id: i64) -> MetaResult<()> {
        update_one!(
            self,
            sqlx::query(
                "UPDATE users SET failed_count = 0, first_failure_ms = NULL, \
                 locked_until_ms = NULL WHERE id = ?",
            )
            .bind(user_id)
        )
    }

    async fn node(&self, tenant_id: i64, id: i64) -> MetaResult<Node> {
        with_retry!(self, namespace::node(&self.pool, tenant_id, id))
    }

    async fn child(&self, tenant_id: i64, parent_id: i64, name_index: &[u8]) -> MetaResult<Node> {
        with_retry!(self, async {
            namespace::child(&self.pool, tenant_id, parent_id, name_index)
                .await?
                .ok_or(MetaError::NotFound.into())
        })
    }

    async fn children(&self, tenant_id: i64, parent_id: i64) -> MetaResult<Vec<Node>> {
        with_retry!(self, namespace::children(&self.pool, tenant_id, parent_id))
    }

    async fn create_dir(&self, dir: &NewDir) -> MetaResult<Node> {
        transaction!(self, |conn| namespace::create_dir(conn, dir))
    }

    async fn commit_file(&self, file: &CommitFile) -> MetaResult<CommitOutcome> {
        transaction!(self, |conn| namespace::commit_file(conn, file))
    }

    async fn remove(&self, tenant_id: i64, id: i64) -> MetaResult<()> {
        let now_ms = wall_clock_ms();
        transaction!(self, |conn| namespace::remove(conn, tenant_id, id, now_ms))
    }

    async fn rename(&self, rename: &RenameNode) -> MetaResult<()> {
        transaction!(self, |conn| namespace::rename(conn, rename))
    }

    async fn set_mtime(&self, tenant_id: i64, id: i64, mtime_ms: i64) -> MetaResult<()> {
        update_one!(
            self,
            sqlx::query("UPDATE nodes SET mtime_ms = ? WHERE tenant_id = ? AND id = ?")
                .bind(mtime_ms)
                .bind(tenant_id)
                .bind(id)
        )
    }

    async fn usage(&self, tenant_id: i64) -> MetaResult<Usage> {
        with_retry!(self, namespace::usage(&self.pool, tenant_id))
    }

    async fn begin_upload(&self, upload: &NewUpload) -> MetaResult<i64> {
        let id = transaction!(self, |conn| async {
            let done = sqlx::query(
                "INSERT INTO uploads (tenant_id, spool_name, object_key, node_name, started_ms) \
                 VALUES (?, ?, ?, ?, ?)",
            )
            .bind(upload.tenant_id)
            .bind(&upload.spool_name)
            .bind(&upload.object_key)
            .bind(&upload.node_name)
            .bind(upload.now_ms)
            .execute(&mut *conn)
            .await?;
            Ok(done.last_insert_id())
        })?;
        i64::try_from(id).map_err(|_| MetaError::Database("upload id out of range".into()))
    }

    async fn end_upload(&self, upload_id: i64) -> MetaResult<()> {
        transaction!(self, |conn| namespace::delete_upload(&mut *conn, upload_id))
    }

    async fn uploads(&self) -> MetaResult<Vec<Upload>> {
        with_retry!(self, async {
            let found = sqlx::query("SELECT * FROM uploads ORDER BY started_ms, id")
                .fetch_all(&self.pool)
                .await?;
            decode_all(&found, rows::upload)
        })
    }

    /// Jobs in the order they fall due: never-failed jobs oldest first, each failed job after
    /// its backoff, so one object that keeps failing does not hold up the rest.
    async fn pending_replication(&self, limit: u32) -> MetaResult<Vec<ReplicationJob>> {
        with_retry!(self, async {
            let found = sqlx::query(
                "SELECT * FROM replication_outbox ORDER BY next_attempt_ms, id LIMIT ?",
            )
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
            decode_all(&found, rows::replication_job)
        })
    }

    /// Idempotent: a job acknowledged twice is simply gone.
    async fn replication_done(&self, job_id: i64) -> MetaResult<()> {
        execute!(
            self,
            sqlx::query("DELETE FROM replication_outbox WHERE id = ?").bind(job_id)
        )
    }

    async fn replication_failed(&self, job_id: i64, error: &str, now_ms: i64) -> MetaResult<()> {
        transaction!(self, |conn| record_replication_failure(
            conn, job_id, error, now_ms
        ))
    }

    async fn garbage(&self, limit: u32) -> MetaResult<Vec<Garbage>> {
        with_retry!(self, async {
            let found = sqlx::query("SELECT * FROM garbage ORDER BY id LIMIT ?")
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?;
            decode_all(&found, rows::garbage)
        })
    }

    /// Idempotent, like `replication_done`.
    async fn garbage_done(&self, id: i64) -> MetaResult<()> {
        execute!(
            self,
            sqlx::query("DELETE FROM garbage WHERE id = ?").bind(id)
        )
    }

    async fn audit(&self, records: &[AuditRecord]) -> MetaResult<()> {
        if records.is_empty() {
            return Ok(());
        }
        transaction!(self, |conn| async {
            crate::rows::audit_insert::<MySql>(records)
                .build()
                .execute(&mut *conn)
                .await?;
            Ok(())
        })
    }

    async fn recent_audit(&self, limit: u32) -> MetaResult<Vec<AuditRecord>> {
        with_retry!(self, async {
            let found = sqlx::query("SELECT * FROM audit ORDER BY at_ms DESC, id DESC LIMIT ?")
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?;
            decode_all(&found, rows::audit)
        })
    }
}

/// Counts a failed attempt and pushes the job back by an exponential backoff.
async fn record_replication_failure(
    conn: &mut MySqlConnection,
    job_id: i64,
    error: &str,
    now_ms: i64,
) -> TxResult<()> {
    let attempts: i64 =
        sqlx::query_scalar("SELECT attempts FROM replication_outbox WHERE id = ? FOR UPDATE")
            .bind(job_id)
            .fetch_optional(&mut *conn)
            .await?
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
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlock_lock_wait_and_failover_codes_are_transient_constraint_codes_are_not() {
        assert!(is_transient_number(1213));
        assert!(is_transient_number(1205));
        assert!(is_transient_number(1290));
        assert!(!is_transient_number(1062), "duplicate key is decided");
        assert!(!is_transient_number(1452), "foreign key is decided");
    }

    #[test]
    fn lost_connection_is_retried_pool_timeout_is_not() {
        let lost = sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert!(is_transient(&lost));
        assert!(!is_transient(&sqlx::Error::PoolTimedOut));
        assert!(matches!(
            mysql_error(sqlx::Error::PoolTimedOut),
            MetaError::Unavailable(_)
        ));
        assert!(matches!(mysql_error(lost), MetaError::Unavailable(_)));
    }

    #[test]
    fn refused_certificate_is_a_tls_error_not_an_outage() {
        let refused = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "invalid peer certificate: UnknownIssuer",
        );
        let refused = sqlx::Error::Io(refused);
        assert!(!is_transient(&refused));
        assert!(matches!(mysql_error(refused), MetaError::Tls(_)));
    }

    #[test]
    fn retry_delay_grows_and_is_capped() {
        assert!(retry_delay(1) >= RETRY_BASE_DELAY);
        assert!(retry_delay(1) < RETRY_BASE_DELAY * 2);
        assert!(retry_delay(4) >= RETRY_BASE_DELAY * 8);
        assert!(retry_delay(u32::MAX) <= RETRY_MAX_DELAY + RETRY_MAX_DELAY / 2);
    }

    #[test]
    fn options_debug_hides_url_and_password() {
        let mut options = MySqlOptions::new("mysql://coffer:hunter2-url@db.example/coffer");
        options.password = Some(Zeroizing::new("hunter2-file".into()));
        let shown = format!("{options:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(!shown.contains("db.example"), "{shown}");
    }

    #[test]
    fn invalid_url_error_does_not_echo_the_password() {
        let options = MySqlOptions::new("mysql://coffer:hunter2@db.example:notaport/coffer");
        let error = options.connect_options().err().map(|e| e.to_string());
        assert!(error.is_some());
        assert!(!error.unwrap_or_default().contains("hunter2"));
    }
}
