//! `SqlStore`: the one metadata store, written once over a small [`Dialect`].
//!
//! Every query of the store is written here and in `sql/namespace.rs` and `sql/accounts.rs`,
//! once, over sqlx's generic [`Database`]. What really differs between the engines is the
//! dialect (`sqlite.rs`, `mysql.rs`): how a write transaction starts and whether writers are
//! serialised or take row locks, how errors are classified and which are retried, the few
//! SQL spellings that differ, and opening and migrating a database.
//!
//! Every write, even a single statement, is one transaction: on SQLite it holds this
//! process's writer lock and SQLite's own (`BEGIN IMMEDIATE`), so a read followed by a write
//! cannot be overtaken; on MySQL it takes row locks (see `sql/namespace.rs`) and transient
//! failures (deadlock, lock wait timeout, a connection lost before COMMIT was sent) are retried
//! a bounded number of times with a growing delay. A connection lost while COMMIT is in flight
//! is never retried: its outcome is unknown, so the caller hears `Unavailable` and decides.

mod accounts;
mod commit_in_place;
mod namespace;
mod rotation;

#[cfg(test)]
pub(crate) use namespace::CHILDREN;
use namespace::{CHILD_BY_INDEX, CHILD_WITH_OBJECT_BY_INDEX, NODE_BY_ID_PLAIN};

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use sqlx::{Connection, Database, Transaction};
use tokio::sync::{Mutex, OwnedMutexGuard};

use crate::conns::{Conns, DriverFailure};
use crate::in_place::{InPlace, InPlaceRow};
use crate::lockout::LockoutPolicy;
use crate::outbox::wall_clock_ms;
use crate::rows::{self, op_column};
use crate::{
    AccountStore, ApiToken, AuditRecord, AuditStore, CommitFile, CommitOutcome, Garbage,
    GarbageCut, KeyRotation, MetaError, MetaResult, NamespaceStore, NewDir, NewSshKey, NewTenant,
    NewUpload, NewUser, Node, RekeyOutcome, RekeyedNode, RenameNode, ReplicationJob, ReplicationOp,
    RotationCursor, SshKey, Tenant, TenantMasterKey, TenantStore, Upload, UploadStore, Usage,
    UsageCheck, User, WrappedTenantKey,
};

/// A user's row with its tenant's (one query: every request and session start reads both).
const USER_WITH_TENANT: &str = "SELECT u.*, t.name AS tenant_name, t.root_node_id AS tenant_root_node_id, \
     t.key_version AS tenant_key_version, t.quota_bytes AS tenant_quota_bytes, \
     t.created_ms AS tenant_created_ms \
     FROM users u JOIN tenants t ON t.id = u.tenant_id WHERE u.id = ?";

/// What one database engine brings to the shared store: the differences, and nothing else.
pub trait Dialect: Clone + Send + Sync + 'static {
    /// The sqlx driver.
    type Db: Database;
    /// The engine's name, for messages.
    const NAME: &'static str;
    /// The statement opening a write transaction; `None` for the driver's plain `BEGIN`.
    const BEGIN: Option<&'static str>;
    /// `true` if write transactions run one at a time (SQLite's single writer), so a row read
    /// inside one cannot change before it ends; `false` if writers run side by side and the
    /// store locks the rows it reads before it writes (`SELECT ... FOR UPDATE`).
    const SERIAL_WRITERS: bool;
    /// `true` if one prepared query may hold several statements (SQLite), which saves round
    /// trips on the commit path.
    const MULTI_STATEMENT: bool;
    /// Bytes and files of a tenant's committed files, as counted (columns `bytes`, `files`;
    /// one `?`, the tenant): the sum of the tenant's `tenant_usage` shards. MySQL's `SUM` of a
    /// BIGINT is a DECIMAL and must be cast back.
    const USAGE: &'static str;
    /// As [`Dialect::USAGE`], added up from the tenant's file rows (`fsck`'s recount).
    const COUNTED_USAGE: &'static str;
    /// Adds to the count of one shard of a tenant's usage, creating the shard's row if it has
    /// none (binds: tenant_id, shard, bytes, files): each engine's upsert.
    const ADD_USAGE: &'static str;
    /// The shards of each tenant's usage count: a file counts in shard `id % USAGE_SHARDS`.
    /// 1 where writers run one at a time; more where commits of one tenant on many nodes
    /// would otherwise all wait for one row.
    const USAGE_SHARDS: i64;
    /// Stores a wrapped tenant key, replacing the copy for the same version and region (binds:
    /// tenant_id, version, region, master_key_id, wrapped): each engine's upsert.
    const PUT_TENANT_KEY: &'static str;

    /// Maps a database error to the crate's error. Error texts never carry bound values.
    fn map_error(error: sqlx::Error) -> MetaError;
    /// Whether an error is worth another attempt of the whole transaction.
    fn is_transient(error: &sqlx::Error) -> bool;
    /// A description of an error that is safe to log (no bound values).
    fn describe(error: &sqlx::Error) -> String;
    /// Rows a statement matched.
    fn rows_affected(done: &<Self::Db as Database>::QueryResult) -> u64;
    /// The id an `INSERT` gave its row, if it fits an `i64`.
    fn last_insert_id(done: &<Self::Db as Database>::QueryResult) -> Option<i64>;
}

/// Wraps an `impl` block in the bounds the shared queries need of an engine: its connections
/// execute queries, its queries bind the column types the schema uses, and its rows decode
/// them ([`rows::Columns`]). Written once here instead of on every block.
macro_rules! sql_impl {
    ($(#[$attr:meta])* impl $trait:ident for $ty:ty { $($body:tt)* }) => {
        sql_impl!(@emit [$(#[$attr])*] [$trait for $ty] { $($body)* });
    };
    ($(#[$attr:meta])* impl $ty:ty { $($body:tt)* }) => {
        sql_impl!(@emit [$(#[$attr])*] [$ty] { $($body)* });
    };
    (@emit [$($attr:tt)*] [$($head:tt)*] { $($body:tt)* }) => {
        $($attr)*
        impl<D: Dialect> $($head)*
        where
            for<'c> &'c mut <D::Db as sqlx::Database>::Connection:
                sqlx::Executor<'c, Database = D::Db>,
            <D::Db as sqlx::Database>::Arguments: sqlx::IntoArguments<D::Db>,
            <D::Db as sqlx::Database>::Row: crate::rows::Columns,
            for<'t> i64: sqlx::Encode<'t, D::Db> + sqlx::Type<D::Db>,
            for<'t> Option<i64>: sqlx::Encode<'t, D::Db> + sqlx::Type<D::Db>,
            for<'t> bool: sqlx::Encode<'t, D::Db> + sqlx::Type<D::Db>,
            for<'t> &'t str: sqlx::Encode<'t, D::Db> + sqlx::Type<D::Db>,
            for<'t> Option<&'t str>: sqlx::Encode<'t, D::Db> + sqlx::Type<D::Db>,
            for<'t> &'t [u8]: sqlx::Encode<'t, D::Db> + sqlx::Type<D::Db>,
            for<'t> Option<&'t [u8]>: sqlx::Encode<'t, D::Db> + sqlx::Type<D::Db>,
        {
            $($body)*
        }
    };
}
pub(crate) use sql_impl;

/// A connection of the engine `D`.
pub(crate) type Conn<D> = <<D as Dialect>::Db as Database>::Connection;
/// A row of the engine `D`.
pub(crate) type Row<D> = <<D as Dialect>::Db as Database>::Row;
/// A query of the engine `D` with its values bound.
pub(crate) type Query<D> =
    sqlx::query::Query<'static, <D as Dialect>::Db, <<D as Dialect>::Db as Database>::Arguments>;

/// The metadata store on engine `D`: [`crate::SqliteStore`] or [`crate::MySqlStore`].
/// Cloning is cheap and shares the pools.
pub struct SqlStore<D: Dialect> {
    /// The connections of the main pool (see `conns.rs`: lent without a ping between uses).
    pub(crate) pool: Arc<Conns<D::Db>>,
    /// Where bookkeeping writes go (upload rows, outbox and garbage acknowledgements, audit).
    /// On SQLite one connection with `synchronous=NORMAL`: their commits do not wait for an
    /// fsync, and the next commit on `pool` (which does) makes them durable too, since both
    /// append to the same write-ahead log. A crash of the process loses none of them; a power
    /// cut can lose the last few, which costs at most a leaked object, a repeated replication
    /// copy or the last audit lines (docs/ARCHITECTURE.md, "Durability"). Elsewhere `pool`.
    pub(crate) bookkeeping: Arc<Conns<D::Db>>,
    /// Held for the whole of every write transaction of this process, if the engine has a
    /// single writer: concurrent requests queue here instead of spinning in a busy handler.
    pub(crate) writer: Option<Arc<Mutex<()>>>,
    /// How many times a transient failure is retried before the caller hears `Unavailable`.
    pub(crate) max_retries: u32,
    /// Where the database is, for messages: no user, no password.
    pub(crate) target: String,
    /// Point reads run on the calling thread (a SQLite file only; see `in_place.rs`).
    pub(crate) in_place: Option<Arc<InPlace>>,
    pub(crate) dialect: PhantomData<D>,
}

impl<D: Dialect> Clone for SqlStore<D> {
    fn clone(&self) -> Self {
        Self {
            pool: Arc::clone(&self.pool),
            bookkeeping: Arc::clone(&self.bookkeeping),
            writer: self.writer.clone(),
            max_retries: self.max_retries,
            target: self.target.clone(),
            in_place: self.in_place.clone(),
            dialect: PhantomData,
        }
    }
}

impl<D: Dialect> fmt::Debug for SqlStore<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqlStore")
            .field("engine", &D::NAME)
            .field("target", &self.target)
            .field("max_retries", &self.max_retries)
            .finish_non_exhaustive()
    }
}

/// How one attempt at a store operation failed.
#[derive(Debug)]
pub(crate) enum TxError {
    /// A decided outcome (not found, conflict, ...): returned as is.
    Meta(MetaError),
    /// A database error: retried if transient, else mapped by [`Dialect::map_error`].
    Sql(sqlx::Error),
    /// Another node won a race the row locks should have ordered (a unique violation on the
    /// insert of a new file, a row changed under its delete): the attempt is rolled back and
    /// retried.
    RaceLost,
}

/// The result of one attempt.
pub(crate) type TxResult<T> = Result<T, TxError>;

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
    fn is_retryable<D: Dialect>(&self) -> bool {
        match self {
            Self::Meta(_) => false,
            Self::RaceLost => true,
            Self::Sql(error) => D::is_transient(error),
        }
    }

    pub(crate) fn into_meta<D: Dialect>(self) -> MetaError {
        match self {
            Self::Meta(error) => error,
            Self::Sql(error) => D::map_error(error),
            Self::RaceLost => {
                MetaError::Unavailable("metadata transaction kept losing a race".into())
            }
        }
    }

    /// A short description for logs: codes, no values.
    fn summary<D: Dialect>(&self) -> String {
        match self {
            Self::Meta(meta) => meta.to_string(),
            Self::Sql(sql) => D::describe(sql),
            Self::RaceLost => "lost a race for a row".into(),
        }
    }
}

/// Rows per `INSERT` when a node publishes its open readers (well under every engine's limit
/// on bound values).
const PUBLISH_ROWS_PER_STATEMENT: usize = 256;

/// First delay before retrying a transient failure; doubles with each retry.
const RETRY_BASE_DELAY: Duration = Duration::from_millis(20);
/// Longest delay between two retries.
const RETRY_MAX_DELAY: Duration = Duration::from_secs(2);

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

/// Runs `$attempt` (an expression giving a fresh future each time, yielding a `TxResult`)
/// until it succeeds, fails for good, or has been retried `max_retries` times.
macro_rules! with_retry {
    ($store:expr, $attempt:expr) => {{
        let mut retries = 0_u32;
        loop {
            let outcome: TxResult<_> = $attempt.await;
            match outcome {
                Err(error) if retries < $store.max_retries && error.is_retryable::<D>() => {
                    retries += 1;
                    tracing::debug!(
                        retries,
                        error = %error.summary::<D>(),
                        "retrying metadata operation"
                    );
                    tokio::time::sleep(retry_delay(retries)).await;
                }
                other => break other.map_err(TxError::into_meta::<D>),
            }
        }
    }};
}

/// Runs `$body` (using the connection `$conn`) in a write transaction on `$target`, committing on
/// success, rolling back on failure, retrying transient failures.
macro_rules! transaction {
    ($store:expr, $target:expr, |$conn:ident| $body:expr) => {
        with_retry!($store, async {
            let _writer = $store.lock_writer().await;
            let mut held = $store.pool_for($target).acquire().await?;
            let tx = match D::BEGIN {
                Some(begin) => held.conn().begin_with(begin).await?,
                None => held.conn().begin().await?,
            };
            let mut tx = WriteTx { tx };
            let result = {
                let $conn: &mut Conn<D> = &mut tx.tx;
                $body.await
            };
            let (result, ended) = tx.finish::<D, _>(result).await;
            if ended {
                held.release();
            }
            result
        })
    };
}

/// Runs `$body` (using the connection `$conn`) as a read, retrying transient failures. The
/// connection is lent again without a ping unless the driver failed.
macro_rules! read {
    ($store:expr, |$conn:ident| $body:expr) => {
        with_retry!($store, async {
            let mut held = $store.pool.acquire().await?;
            let result: TxResult<_> = {
                let $conn: &mut Conn<D> = held.conn();
                $body.await
            };
            held.settle(&result);
            result
        })
    };
}

/// A write transaction on a lent connection; the writer lock (if any) is held around it.
pub(crate) struct WriteTx<'c, DB: Database> {
    tx: Transaction<'c, DB>,
}

impl<DB: Database> WriteTx<'_, DB> {
    /// Commits if `result` is a success, rolls back otherwise; returns `result`, and whether
    /// the transaction ended cleanly (its connection may be lent again). A failed COMMIT is
    /// reported as decided (never retried): the server may have applied it.
    async fn finish<D: Dialect<Db = DB>, T>(self, result: TxResult<T>) -> (TxResult<T>, bool) {
        match result {
            Ok(value) => match self.tx.commit().await {
                Ok(()) => (Ok(value), true),
                Err(error) => (
                    Err(TxError::Meta(match D::map_error(error) {
                        MetaError::Unavailable(why) => MetaError::Unavailable(format!(
                            "the database went away during COMMIT, the change may or may not \
                             be applied: {why}"
                        )),
                        other => other,
                    })),
                    false,
                ),
            },
            Err(error) => match self.tx.rollback().await {
                Ok(()) => (Err(error), true),
                Err(rollback) => {
                    tracing::debug!(error = %D::describe(&rollback), "metadata rollback failed");
                    (Err(error), false)
                }
            },
        }
    }
}

impl DriverFailure for TxError {
    fn is_driver_failure(&self) -> bool {
        matches!(self, Self::Sql(_))
    }
}

/// Fails with `NotFound` unless a statement matched a row.
fn require_row<D: Dialect>(done: &<D::Db as Database>::QueryResult) -> TxResult<()> {
    if D::rows_affected(done) == 0 {
        return Err(MetaError::NotFound.into());
    }
    Ok(())
}

/// The id of a row just inserted.
fn inserted_id<D: Dialect>(done: &<D::Db as Database>::QueryResult) -> TxResult<i64> {
    Ok(D::last_insert_id(done).ok_or_else(|| rows::corrupt("id"))?)
}

/// Where a write goes: most to the main pool, bookkeeping to [`SqlStore::bookkeeping`].
#[derive(Clone, Copy)]
enum Target {
    Main,
    Bookkeeping,
}

/// The shared queries, as functions of a connection: `sql/namespace.rs` and `sql/accounts.rs`.
/// Never built: it only names the engine the functions are for.
#[allow(dead_code)]
pub(crate) struct Sql<D>(PhantomData<D>);

impl<D: Dialect> SqlStore<D> {
    /// This process's writer lock, if the engine has a single writer.
    async fn lock_writer(&self) -> Option<OwnedMutexGuard<()>> {
        match &self.writer {
            Some(writer) => Some(Arc::clone(writer).lock_owned().await),
            None => None,
        }
    }

    fn pool_for(&self, target: Target) -> &Arc<Conns<D::Db>> {
        match target {
            Target::Main => &self.pool,
            Target::Bookkeeping => &self.bookkeeping,
        }
    }

    /// Runs `attempt` until it succeeds, fails for good, or has been retried `max_retries`
    /// times (for the engines' own queries, such as the schema version).
    pub(crate) async fn retrying<T, F, Fut>(&self, mut attempt: F) -> MetaResult<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = TxResult<T>>,
    {
        with_retry!(self, attempt())
    }

    /// The row `sql` finds with `params`, decoded, read in place on the calling thread when
    /// this store can (`NotFound` if there is none); `None` to read it through the pool.
    fn read_in_place<T>(
        &self,
        sql: &'static str,
        params: impl rusqlite::Params,
        decode: impl FnOnce(&InPlaceRow<'_, '_>) -> MetaResult<T>,
    ) -> Option<MetaResult<T>> {
        let found = self.in_place.as_ref()?.read_row(sql, params, decode)?;
        Some(found.and_then(|row| row.ok_or(MetaError::NotFound)))
    }

    /// How many reads this store answered in place (always 0 if it cannot).
    #[doc(hidden)]
    pub fn reads_in_place(&self) -> u64 {
        self.in_place.as_ref().map_or(0, |r| r.served())
    }

    /// How many commits this store made in place (always 0 if it cannot).
    #[doc(hidden)]
    pub fn writes_in_place(&self) -> u64 {
        self.in_place.as_ref().map_or(0, |r| r.written())
    }

    /// How many checkpoints this store's checkpoint thread made (always 0 if it has none).
    #[doc(hidden)]
    pub fn checkpoints_made(&self) -> u64 {
        self.in_place.as_ref().map_or(0, |r| r.checkpoints())
    }

    /// `host:port/database` (MySQL) or the file (SQLite), without credentials: for log lines.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// Closes every connection; later calls fail with `Unavailable`.
    pub async fn close(&self) {
        if let Some(in_place) = &self.in_place {
            in_place.close();
        }
        self.pool.close().await;
        self.bookkeeping.close().await;
    }
}

sql_impl! {
impl SqlStore<D> {
    /// The row `query` finds, decoded; `NotFound` if none.
    async fn read_one<T>(
        &self,
        query: impl Fn() -> Query<D> + Send + Sync,
        decode: fn(&Row<D>) -> MetaResult<T>,
    ) -> MetaResult<T> {
        read!(self, |conn| async {
            let row = query().fetch_optional(&mut *conn).await?;
            Ok(decode(&row.ok_or(MetaError::NotFound)?)?)
        })
    }

    /// Every row `query` finds, decoded.
    async fn read_all<T>(
        &self,
        query: impl Fn() -> Query<D> + Send + Sync,
        decode: fn(&Row<D>) -> MetaResult<T>,
    ) -> MetaResult<Vec<T>> {
        read!(self, |conn| async {
            let found = query().fetch_all(&mut *conn).await?;
            Ok(found.iter().map(decode).collect::<MetaResult<Vec<T>>>()?)
        })
    }

    /// Runs one statement; with `must_match`, `NotFound` unless it matched a row. A store
    /// that retries runs it in a transaction, so that a retry after a lost connection can never
    /// apply it twice; one that never retries (SQLite) runs it on its own under the writer
    /// lock, one round trip.
    async fn write_one(
        &self,
        target: Target,
        must_match: bool,
        query: impl Fn() -> Query<D> + Send + Sync,
    ) -> MetaResult<<D::Db as Database>::QueryResult> {
        if self.max_retries == 0 {
            let _writer = self.lock_writer().await;
            let mut held = self.pool_for(target).acquire().await.map_err(D::map_error)?;
            let done = query().execute(held.conn()).await;
            held.settle(&done);
            let done = done.map_err(D::map_error)?;
            if must_match {
                require_row::<D>(&done).map_err(TxError::into_meta::<D>)?;
            }
            return Ok(done);
        }
        transaction!(self, target, |conn| async {
            let done = query().execute(&mut *conn).await?;
            if must_match {
                require_row::<D>(&done)?;
            }
            Ok(done)
        })
    }
}
}

sql_impl! {
#[async_trait]
impl TenantStore for SqlStore<D> {
    async fn create_tenant(&self, tenant: &NewTenant) -> MetaResult<Tenant> {
        transaction!(self, Target::Main, |conn| Sql::<D>::create_tenant(conn, tenant))
    }

    async fn tenant_by_name(&self, name: &str) -> MetaResult<Tenant> {
        self.read_one(
            || sqlx::query("SELECT * FROM tenants WHERE name = ?").bind(name),
            rows::tenant,
        )
        .await
    }

    async fn tenant(&self, id: i64) -> MetaResult<Tenant> {
        self.read_one(
            || sqlx::query("SELECT * FROM tenants WHERE id = ?").bind(id),
            rows::tenant,
        )
        .await
    }

    async fn list_tenants(&self) -> MetaResult<Vec<Tenant>> {
        self.read_all(
            || sqlx::query("SELECT * FROM tenants ORDER BY name"),
            rows::tenant,
        )
        .await
    }

    async fn tenant_keys(&self, tenant_id: i64) -> MetaResult<Vec<WrappedTenantKey>> {
        self.read_all(
            || {
                sqlx::query("SELECT * FROM tenant_keys WHERE tenant_id = ? ORDER BY version, region")
                    .bind(tenant_id)
            },
            rows::tenant_key,
        )
        .await
    }

    /// An upsert, so two nodes storing the same key at once both succeed.
    async fn put_tenant_key(&self, key: &WrappedTenantKey) -> MetaResult<()> {
        self.write_one(Target::Main, false, || Sql::<D>::tenant_key_query(D::PUT_TENANT_KEY, key))
            .await?;
        Ok(())
    }

    async fn tenant_master_keys(&self, tenant_id: i64) -> MetaResult<Vec<TenantMasterKey>> {
        self.read_all(
            || {
                sqlx::query("SELECT * FROM tenant_master_keys WHERE tenant_id = ? ORDER BY region")
                    .bind(tenant_id)
            },
            rows::tenant_master_key,
        )
        .await
    }

    async fn set_tenant_master_keys(
        &self,
        tenant_id: i64,
        keys: &[TenantMasterKey],
        copies: &[WrappedTenantKey],
    ) -> MetaResult<()> {
        transaction!(self, Target::Main, |conn| Sql::<D>::set_tenant_master_keys(
            conn, tenant_id, keys, copies
        ))
    }

    async fn destroy_tenant_keys(&self, tenant_id: i64) -> MetaResult<u64> {
        let done = self
            .write_one(Target::Main, false, || {
                sqlx::query("DELETE FROM tenant_keys WHERE tenant_id = ?").bind(tenant_id)
            })
            .await?;
        Ok(D::rows_affected(&done))
    }

    async fn delete_tenant(&self, tenant_id: i64, now_ms: i64) -> MetaResult<u64> {
        transaction!(self, Target::Main, |conn| Sql::<D>::delete_tenant(
            conn, tenant_id, now_ms
        ))
    }

    async fn start_key_rotation(
        &self,
        tenant_id: i64,
        from_version: u32,
        to_version: u32,
        copies: &[WrappedTenantKey],
        now_ms: i64,
    ) -> MetaResult<KeyRotation> {
        transaction!(self, Target::Main, |conn| Sql::<D>::start_key_rotation(
            conn, tenant_id, from_version, to_version, copies, now_ms
        ))
    }

    async fn key_rotation(&self, tenant_id: i64) -> MetaResult<Option<KeyRotation>> {
        read!(self, |conn| async {
            Sql::<D>::key_rotation(&mut *conn, tenant_id).await
        })
    }

    async fn key_rotations(&self) -> MetaResult<Vec<KeyRotation>> {
        self.read_all(
            || sqlx::query("SELECT * FROM key_rotations ORDER BY started_ms, tenant_id"),
            rows::key_rotation,
        )
        .await
    }

    async fn nodes_under_key_version(
        &self,
        tenant_id: i64,
        version: u32,
        after_id: i64,
        limit: u32,
    ) -> MetaResult<Vec<Node>> {
        read!(self, |conn| async {
            Sql::<D>::nodes_under_key_version(&mut *conn, tenant_id, version, after_id, limit)
                .await
        })
    }

    async fn count_under_key_version(&self, tenant_id: i64, version: u32) -> MetaResult<i64> {
        read!(self, |conn| async {
            Sql::<D>::count_under_key_version(&mut *conn, tenant_id, version).await
        })
    }

    async fn rekey_nodes(
        &self,
        tenant_id: i64,
        nodes: &[RekeyedNode],
        cursor: RotationCursor,
        now_ms: i64,
    ) -> MetaResult<RekeyOutcome> {
        transaction!(self, Target::Main, |conn| Sql::<D>::rekey_nodes(
            conn, tenant_id, nodes, cursor, now_ms
        ))
    }

    async fn finish_key_rotation(&self, tenant_id: i64) -> MetaResult<Option<u64>> {
        transaction!(self, Target::Main, |conn| Sql::<D>::finish_key_rotation(conn, tenant_id))
    }
}
}

sql_impl! {
#[async_trait]
impl AccountStore for SqlStore<D> {
    async fn create_user(&self, user: &NewUser) -> MetaResult<User> {
        transaction!(self, Target::Main, |conn| Sql::<D>::create_user(conn, user))
    }

    async fn user_by_name(&self, name: &str) -> MetaResult<User> {
        self.read_one(
            || sqlx::query("SELECT * FROM users WHERE name = ?").bind(name),
            rows::user,
        )
        .await
    }

    async fn user(&self, id: i64) -> MetaResult<User> {
        self.read_one(
            || sqlx::query("SELECT * FROM users WHERE id = ?").bind(id),
            rows::user,
        )
        .await
    }

    async fn user_with_tenant(&self, id: i64) -> MetaResult<(User, Tenant)> {
        let decode = |row: &InPlaceRow<'_, '_>| rows::user_with_tenant(row);
        if let Some(read) = self.read_in_place(USER_WITH_TENANT, (id,), decode) {
            return read;
        }
        self.read_one(|| sqlx::query(USER_WITH_TENANT).bind(id), rows::user_with_tenant)
            .await
    }

    async fn list_users(&self, tenant_id: Option<i64>) -> MetaResult<Vec<User>> {
        self.read_all(
            || match tenant_id {
                Some(tenant_id) => {
                    sqlx::query("SELECT * FROM users WHERE tenant_id = ? ORDER BY name")
                        .bind(tenant_id)
                }
                None => sqlx::query("SELECT * FROM users ORDER BY name"),
            },
            rows::user,
        )
        .await
    }

    async fn set_password(&self, user_id: i64, password_hash: Option<&str>) -> MetaResult<()> {
        self.write_one(Target::Main, true, || {
            sqlx::query("UPDATE users SET password_hash = ? WHERE id = ?")
                .bind(password_hash)
                .bind(user_id)
        })
        .await?;
        Ok(())
    }

    async fn set_disabled(&self, user_id: i64, disabled: bool) -> MetaResult<()> {
        self.write_one(Target::Main, true, || {
            sqlx::query("UPDATE users SET disabled = ? WHERE id = ?")
                .bind(disabled)
                .bind(user_id)
        })
        .await?;
        Ok(())
    }

    async fn delete_user(&self, user_id: i64) -> MetaResult<()> {
        // SSH keys and tokens go with the user (ON DELETE CASCADE).
        self.write_one(Target::Main, true, || {
            sqlx::query("DELETE FROM users WHERE id = ?").bind(user_id)
        })
        .await?;
        Ok(())
    }

    /// `NotFound` if the user is gone, `AlreadyExists` for a known fingerprint.
    async fn add_ssh_key(&self, user_id: i64, key: &NewSshKey) -> MetaResult<()> {
        self.write_one(Target::Main, false, || {
            sqlx::query(
                "INSERT INTO ssh_keys (user_id, algorithm, key_base64, fingerprint, comment) \
                 VALUES (?, ?, ?, ?, ?)",
            )
            .bind(user_id)
            .bind(key.algorithm.as_str())
            .bind(key.key_base64.as_str())
            .bind(key.fingerprint.as_str())
            .bind(key.comment.as_str())
        })
        .await?;
        Ok(())
    }

    async fn ssh_keys(&self, user_id: i64) -> MetaResult<Vec<SshKey>> {
        self.read_all(
            || sqlx::query("SELECT * FROM ssh_keys WHERE user_id = ? ORDER BY id").bind(user_id),
            rows::ssh_key,
        )
        .await
    }

    async fn add_api_token(&self, token: &ApiToken) -> MetaResult<ApiToken> {
        let done = self
            .write_one(Target::Main, false, || {
                sqlx::query(
                    "INSERT INTO api_tokens (user_id, token_id, secret_hash, created_ms, \
                     expires_ms) VALUES (?, ?, ?, ?, ?)",
                )
                .bind(token.user_id)
                .bind(token.token_id.as_str())
                .bind(token.secret_hash.as_slice())
                .bind(token.created_ms)
                .bind(token.expires_ms)
            })
            .await?;
        Ok(ApiToken {
            id: inserted_id::<D>(&done).map_err(TxError::into_meta::<D>)?,
            ..token.clone()
        })
    }

    async fn api_token(&self, token_id: &str) -> MetaResult<ApiToken> {
        self.read_one(
            || sqlx::query("SELECT * FROM api_tokens WHERE token_id = ?").bind(token_id),
            rows::api_token,
        )
        .await
    }

    async fn api_tokens(&self, user_id: i64) -> MetaResult<Vec<ApiToken>> {
        self.read_all(
            || sqlx::query("SELECT * FROM api_tokens WHERE user_id = ? ORDER BY id").bind(user_id),
            rows::api_token,
        )
        .await
    }

    async fn delete_api_token(&self, user_id: i64, token_id: &str) -> MetaResult<()> {
        self.write_one(Target::Main, true, || {
            sqlx::query("DELETE FROM api_tokens WHERE user_id = ? AND token_id = ?")
                .bind(user_id)
                .bind(token_id)
        })
        .await?;
        Ok(())
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
        transaction!(self, Target::Main, |conn| Sql::<D>::record_login_failure(
            conn, user_id, &policy
        ))
    }

    async fn clear_login_failures(&self, user_id: i64) -> MetaResult<()> {
        self.write_one(Target::Main, true, || {
            sqlx::query(
                "UPDATE users SET failed_count = 0, first_failure_ms = NULL, \
                 locked_until_ms = NULL WHERE id = ?",
            )
            .bind(user_id)
        })
        .await?;
        Ok(())
    }
}
}

sql_impl! {
#[async_trait]
impl NamespaceStore for SqlStore<D> {
    async fn node(&self, tenant_id: i64, id: i64) -> MetaResult<Node> {
        let decode = |row: &InPlaceRow<'_, '_>| rows::node(row);
        if let Some(read) = self.read_in_place(NODE_BY_ID_PLAIN, (tenant_id, id), decode) {
            return read;
        }
        read!(self, |conn| async {
            Sql::<D>::node(&mut *conn, tenant_id, id).await
        })
    }

    async fn child(&self, tenant_id: i64, parent_id: i64, name_index: &[u8]) -> MetaResult<Node> {
        let params = (tenant_id, parent_id, name_index);
        let decode = |row: &InPlaceRow<'_, '_>| rows::node(row);
        if let Some(read) = self.read_in_place(CHILD_BY_INDEX, params, decode) {
            return read;
        }
        read!(self, |conn| async {
            Sql::<D>::child(&mut *conn, tenant_id, parent_id, name_index)
                .await?
                .ok_or(MetaError::NotFound.into())
        })
    }

    async fn child_with_object(
        &self,
        tenant_id: i64,
        parent_id: i64,
        name_index: &[u8],
    ) -> MetaResult<(Node, Option<Vec<u8>>)> {
        let params = (tenant_id, parent_id, name_index);
        let decode = |row: &InPlaceRow<'_, '_>| rows::node_with_inline(row);
        if let Some(read) = self.read_in_place(CHILD_WITH_OBJECT_BY_INDEX, params, decode) {
            return read;
        }
        read!(self, |conn| async {
            Sql::<D>::child_with_object(&mut *conn, tenant_id, parent_id, name_index)
                .await?
                .ok_or(MetaError::NotFound.into())
        })
    }

    async fn children(&self, tenant_id: i64, parent_id: i64) -> MetaResult<Vec<Node>> {
        read!(self, |conn| async {
            Sql::<D>::children(&mut *conn, tenant_id, parent_id).await
        })
    }

    async fn create_dir(&self, dir: &NewDir) -> MetaResult<Node> {
        transaction!(self, Target::Main, |conn| Sql::<D>::create_dir(conn, dir))
    }

    async fn commit_file(&self, file: &CommitFile) -> MetaResult<CommitOutcome> {
        if let Some(in_place) = &self.in_place
            && commit_in_place::handles(file)
        {
            let _writer = self.lock_writer().await;
            if let Some(done) = in_place.write(|tx| commit_in_place::commit_file(tx, file)) {
                return done;
            }
        }
        transaction!(self, Target::Main, |conn| Sql::<D>::commit_file(conn, file))
    }

    async fn remove(&self, tenant_id: i64, id: i64) -> MetaResult<()> {
        let now_ms = wall_clock_ms();
        transaction!(self, Target::Main, |conn| Sql::<D>::remove(conn, tenant_id, id, now_ms))
    }

    async fn rename(&self, rename: &RenameNode) -> MetaResult<()> {
        transaction!(self, Target::Main, |conn| Sql::<D>::rename(conn, rename))
    }

    async fn set_mtime(&self, tenant_id: i64, id: i64, mtime_ms: i64) -> MetaResult<()> {
        self.write_one(Target::Main, true, || {
            sqlx::query("UPDATE nodes SET mtime_ms = ? WHERE tenant_id = ? AND id = ?")
                .bind(mtime_ms)
                .bind(tenant_id)
                .bind(id)
        })
        .await?;
        Ok(())
    }

    async fn usage(&self, tenant_id: i64) -> MetaResult<Usage> {
        read!(self, |conn| async {
            Sql::<D>::usage(&mut *conn, tenant_id).await
        })
    }

    async fn check_usage(&self, tenant_id: i64, repair: bool) -> MetaResult<UsageCheck> {
        // A read first: fsck on a live server holds no writer lock (SQLite) or tenant row
        // (MySQL) for the recount unless there is something to repair.
        let check = read!(self, |conn| async {
            Sql::<D>::usage_against_recount(&mut *conn, tenant_id).await
        })?;
        if !repair || check.recorded == check.counted {
            return Ok(check);
        }
        transaction!(self, Target::Main, |conn| Sql::<D>::check_usage(
            conn, tenant_id, repair
        ))
    }

    async fn restore_inline_object(&self, object_key: &str, sealed: &[u8]) -> MetaResult<bool> {
        let done = self
            .write_one(Target::Main, false, || {
                sqlx::query(
                    "UPDATE nodes SET inline_object = ? \
                     WHERE object_key = ? AND inline_object IS NOT NULL",
                )
                .bind(sealed)
                .bind(object_key)
            })
            .await?;
        Ok(D::rows_affected(&done) == 1)
    }

    async fn inline_object(&self, object_key: &str) -> MetaResult<Option<Vec<u8>>> {
        read!(self, |conn| async {
            Sql::<D>::inline_object(&mut *conn, object_key).await
        })
    }
}
}

sql_impl! {
#[async_trait]
impl UploadStore for SqlStore<D> {
    async fn begin_upload(&self, upload: &NewUpload) -> MetaResult<i64> {
        let done = self
            .write_one(Target::Bookkeeping, false, || {
                sqlx::query(
                    "INSERT INTO uploads (tenant_id, spool_name, object_key, node_name, \
                     started_ms) VALUES (?, ?, ?, ?, ?)",
                )
                .bind(upload.tenant_id)
                .bind(upload.spool_name.as_str())
                .bind(upload.object_key.as_str())
                .bind(upload.node_name.as_str())
                .bind(upload.now_ms)
            })
            .await?;
        D::last_insert_id(&done)
            .ok_or_else(|| MetaError::Database("upload id out of range".into()))
    }

    /// Missing rows are fine.
    async fn end_upload(&self, upload_id: i64) -> MetaResult<()> {
        self.write_one(Target::Bookkeeping, false, || {
            sqlx::query("DELETE FROM uploads WHERE id = ?").bind(upload_id)
        })
        .await?;
        Ok(())
    }

    async fn uploads(&self) -> MetaResult<Vec<Upload>> {
        self.read_all(
            || sqlx::query("SELECT * FROM uploads ORDER BY started_ms, id"),
            rows::upload,
        )
        .await
    }

    /// Jobs in the order they fall due: never-failed jobs oldest first, each failed job after
    /// its backoff, so one object that keeps failing does not hold up the rest.
    async fn pending_replication(&self, limit: u32) -> MetaResult<Vec<ReplicationJob>> {
        self.read_all(
            || {
                sqlx::query(
                    "SELECT o.id, o.object_key, o.op, o.attempts, o.last_error, o.created_ms, \
                     n.inline_object FROM replication_outbox o \
                     LEFT JOIN nodes n ON o.op = ? AND n.object_key = o.object_key \
                     ORDER BY o.next_attempt_ms, o.id LIMIT ?",
                )
                .bind(op_column(ReplicationOp::Copy))
                .bind(i64::from(limit))
            },
            rows::replication_job,
        )
        .await
    }

    /// Idempotent: a job acknowledged twice is simply gone.
    async fn replication_done(&self, job_ids: &[i64]) -> MetaResult<()> {
        if job_ids.is_empty() {
            return Ok(());
        }
        let sql = format!(
            "DELETE FROM replication_outbox WHERE id IN ({})",
            vec!["?"; job_ids.len()].join(", ")
        );
        self.write_one(Target::Bookkeeping, false, || {
            job_ids
                .iter()
                .fold(sqlx::query(sqlx::AssertSqlSafe(sql.clone())), |query, id| {
                    query.bind(*id)
                })
        })
        .await?;
        Ok(())
    }

    async fn replication_failed(&self, job_id: i64, error: &str, now_ms: i64) -> MetaResult<()> {
        transaction!(self, Target::Main, |conn| Sql::<D>::record_replication_failure(
            conn, job_id, error, now_ms
        ))
    }

    async fn garbage(&self, limit: u32) -> MetaResult<Vec<Garbage>> {
        self.read_all(
            || sqlx::query("SELECT * FROM garbage ORDER BY id LIMIT ?").bind(i64::from(limit)),
            rows::garbage,
        )
        .await
    }

    /// Idempotent, like `replication_done`.
    async fn garbage_done(&self, id: i64) -> MetaResult<()> {
        self.write_one(Target::Bookkeeping, false, || {
            sqlx::query("DELETE FROM garbage WHERE id = ?").bind(id)
        })
        .await?;
        Ok(())
    }

    async fn collectable_garbage(
        &self,
        after_id: i64,
        limit: u32,
        cut: GarbageCut,
    ) -> MetaResult<Vec<Garbage>> {
        self.read_all(
            || {
                sqlx::query(
                    "SELECT g.id, g.object_key, g.created_ms FROM garbage g \
                     WHERE g.id > ? AND (g.created_ms <= ? OR (g.created_ms <= ? \
                     AND NOT EXISTS (SELECT 1 FROM open_readers r \
                          WHERE r.object_key = g.object_key AND r.seen_ms >= ?))) \
                     ORDER BY g.id LIMIT ?",
                )
                .bind(after_id)
                .bind(cut.abandoned_ms)
                .bind(cut.settled_ms)
                .bind(cut.readers_seen_ms)
                .bind(i64::from(limit))
            },
            rows::garbage,
        )
        .await
    }

    async fn publish_open_readers(
        &self,
        node_name: &str,
        object_keys: &[String],
        now_ms: i64,
    ) -> MetaResult<()> {
        let mut keys: Vec<&str> = object_keys.iter().map(String::as_str).collect();
        keys.sort_unstable();
        keys.dedup();
        transaction!(self, Target::Bookkeeping, |conn| async {
            sqlx::query("DELETE FROM open_readers WHERE node_name = ?")
                .bind(node_name)
                .execute(&mut *conn)
                .await?;
            for part in keys.chunks(PUBLISH_ROWS_PER_STATEMENT) {
                let mut insert = sqlx::QueryBuilder::<D::Db>::new(
                    "INSERT INTO open_readers (node_name, object_key, seen_ms) ",
                );
                insert.push_values(part, |mut row, key| {
                    row.push_bind(node_name).push_bind(*key).push_bind(now_ms);
                });
                insert.build().execute(&mut *conn).await?;
            }
            Ok(())
        })
    }

    async fn expire_open_readers(&self, before_ms: i64) -> MetaResult<u64> {
        let done = self
            .write_one(Target::Bookkeeping, false, || {
                sqlx::query("DELETE FROM open_readers WHERE seen_ms < ?").bind(before_ms)
            })
            .await?;
        Ok(D::rows_affected(&done))
    }

    async fn open_readers(&self, node_name: &str) -> MetaResult<Vec<String>> {
        self.read_all(
            || {
                sqlx::query(
                    "SELECT object_key FROM open_readers WHERE node_name = ? ORDER BY object_key",
                )
                .bind(node_name)
            },
            rows::object_key,
        )
        .await
    }
}
}

sql_impl! {
#[async_trait]
impl AuditStore for SqlStore<D> {
    async fn audit(&self, records: &[AuditRecord]) -> MetaResult<()> {
        if records.is_empty() {
            return Ok(());
        }
        if self.max_retries == 0 {
            // As in `write_one`: a statement never retried runs on its own.
            let _writer = self.lock_writer().await;
            let mut held = self.bookkeeping.acquire().await.map_err(D::map_error)?;
            let done = rows::audit_insert::<D::Db>(records)
                .build()
                .execute(held.conn())
                .await;
            held.settle(&done);
            done.map_err(D::map_error)?;
            return Ok(());
        }
        transaction!(self, Target::Bookkeeping, |conn| async {
            rows::audit_insert::<D::Db>(records)
                .build()
                .execute(&mut *conn)
                .await?;
            Ok(())
        })
    }

    async fn recent_audit(&self, limit: u32) -> MetaResult<Vec<AuditRecord>> {
        self.read_all(
            || {
                sqlx::query("SELECT * FROM audit ORDER BY at_ms DESC, id DESC LIMIT ?")
                    .bind(i64::from(limit))
            },
            rows::audit,
        )
        .await
    }
}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delay_grows_and_is_capped() {
        assert!(retry_delay(1) >= RETRY_BASE_DELAY);
        assert!(retry_delay(1) < RETRY_BASE_DELAY * 2);
        assert!(retry_delay(4) >= RETRY_BASE_DELAY * 8);
        assert!(retry_delay(u32::MAX) <= RETRY_MAX_DELAY + RETRY_MAX_DELAY / 2);
    }
}
