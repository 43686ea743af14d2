//! The MySQL dialect: the metadata store on MySQL 8, MariaDB 10.11 or RDS, shared by many
//! nodes.
//!
//! Every write, even a single statement, is one InnoDB transaction at READ COMMITTED. Where
//! the SQLite dialect relies on its single writer, this one takes row locks (see
//! `sql/namespace.rs`). Deadlocks, lock wait timeouts and connections lost before a commit
//! was sent are retried by the store, a bounded number of times with a growing delay;
//! whatever still fails reaches the caller as [`MetaError::Unavailable`]. The pool checks each
//! connection before handing it out, so after a database restart or an RDS failover the store
//! recovers by itself.
//!
//! Error texts carry MySQL error numbers and SQLSTATEs, never the server's message (MySQL
//! quotes bound values in some of them, e.g. duplicate-key errors) and never the URL.

use std::fmt;
use std::marker::PhantomData;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::migrate::{MigrateError, Migrator};
use sqlx::mysql::{MySqlConnectOptions, MySqlPoolOptions, MySqlQueryResult, MySqlSslMode};
use sqlx::{Executor, MySql, MySqlConnection};
use zeroize::Zeroizing;

use crate::conns::Conns;
use crate::sql::{Dialect, SqlStore};
use crate::{MetaError, MetaResult, SchemaStore};

/// The migrations this build knows, embedded at compile time.
static MIGRATOR: Migrator = sqlx::migrate!("./migrations/mysql");

/// How long a statement waits for another transaction's row lock before it is retried.
const LOCK_WAIT_TIMEOUT_SECS: u32 = 10;

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

/// The MySQL / MariaDB dialect of [`SqlStore`].
#[derive(Clone, Copy, Debug)]
pub struct MySqlDialect;

/// The MySQL / MariaDB metadata store. Cloning is cheap and shares the pool.
pub type MySqlStore = SqlStore<MySqlDialect>;

impl Dialect for MySqlDialect {
    type Db = MySql;
    const NAME: &'static str = "mysql";
    const BEGIN: Option<&'static str> = None;
    const SERIAL_WRITERS: bool = false;
    const MULTI_STATEMENT: bool = false;
    /// `SUM` of a BIGINT is a DECIMAL in MySQL: cast it back.
    const USAGE: &'static str = "SELECT CAST(COALESCE(SUM(bytes), 0) AS SIGNED) AS bytes, \
                                 CAST(COALESCE(SUM(files), 0) AS SIGNED) AS files \
                                 FROM tenant_usage WHERE tenant_id = ?";
    const COUNTED_USAGE: &'static str = "SELECT CAST(COALESCE(SUM(size), 0) AS SIGNED) AS bytes, \
         COUNT(*) AS files FROM nodes WHERE tenant_id = ? AND kind = 'f'";
    const ADD_USAGE: &'static str = "INSERT INTO tenant_usage (tenant_id, shard, bytes, files) \
         VALUES (?, ?, ?, ?) \
         ON DUPLICATE KEY UPDATE bytes = bytes + VALUES(bytes), files = files + VALUES(files);";
    const USAGE_SHARDS: i64 = 16;
    const PUT_TENANT_KEY: &'static str = "INSERT INTO tenant_keys (tenant_id, version, region, master_key_id, wrapped, created_ms) \
         VALUES (?, ?, ?, ?, ?, ?) \
         ON DUPLICATE KEY UPDATE master_key_id = VALUES(master_key_id), wrapped = VALUES(wrapped)";

    fn map_error(error: sqlx::Error) -> MetaError {
        mysql_error(error)
    }

    fn is_transient(error: &sqlx::Error) -> bool {
        is_transient(error)
    }

    fn describe(error: &sqlx::Error) -> String {
        describe(error)
    }

    /// sqlx asks MySQL for found rows, not changed rows, so an update to the same value
    /// still counts.
    fn rows_affected(done: &MySqlQueryResult) -> u64 {
        done.rows_affected()
    }

    fn last_insert_id(done: &MySqlQueryResult) -> Option<i64> {
        i64::try_from(done.last_insert_id()).ok()
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

impl MySqlStore {
    /// Connects (one connection now, up to `pool_size` later). Fails with `Unavailable` if the
    /// server cannot be reached, `Tls` if its certificate is refused. Call
    /// [`MySqlStore::migrate`] or [`MySqlStore::check_schema`] next.
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
        let conns = Conns::new(pool);
        Ok(Self {
            bookkeeping: Arc::clone(&conns),
            pool: conns,
            writer: None,
            in_place: None,
            max_retries: options.max_retries,
            target,
            dialect: PhantomData,
        })
    }

    /// The newest schema version this build can run on.
    pub fn supported_schema_version() -> i64 {
        MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0)
    }

    /// The newest migration applied to the database, `None` for a fresh database.
    pub async fn schema_version(&self) -> MetaResult<Option<i64>> {
        self.retrying(|| async {
            let mut held = self.pool.acquire().await?;
            let version = Self::schema_version_on(held.conn()).await;
            held.settle(&version);
            Ok(version?)
        })
        .await
    }

    async fn schema_version_on(conn: &mut MySqlConnection) -> Result<Option<i64>, sqlx::Error> {
        let tables: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM information_schema.tables \
             WHERE table_schema = DATABASE() AND table_name = '_sqlx_migrations'",
        )
        .fetch_one(&mut *conn)
        .await?;
        if tables == 0 {
            return Ok(None);
        }
        sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations WHERE success")
            .fetch_one(&mut *conn)
            .await
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

    /// The body of [`MySqlStore::migrate`], on the connection holding the migration lock.
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

impl MySqlStore {
    /// Applies pending migrations while holding a named lock of the database server, so
    /// nodes starting together migrate one after another (sqlx's own lock asks MariaDB for an
    /// infinite wait with a negative timeout, which MariaDB does not honour).
    pub async fn migrate(&self) -> MetaResult<()> {
        let mut held = self.pool.acquire().await.map_err(mysql_error)?;
        let conn = held.conn();
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
        let result = self.migrate_locked(conn).await;
        match sqlx::query(MIGRATION_UNLOCK).execute(&mut *conn).await {
            Ok(_) => held.release(),
            Err(error) => {
                // The lock goes with the connection; close it rather than return it to the pool.
                tracing::debug!(error = %describe(&error), "releasing the migration lock failed");
                held.detach();
            }
        }
        result
    }
}

#[async_trait]
impl SchemaStore for MySqlStore {
    async fn migrate(&self) -> MetaResult<()> {
        MySqlStore::migrate(self).await
    }
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
