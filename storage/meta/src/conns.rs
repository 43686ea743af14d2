//! Connections the store keeps checked out of sqlx's pool between statements.
//!
//! sqlx hands a connection back to its pool through a spawned task that pings it first, and
//! the MySQL pool also pings one before handing it out. On SQLite a ping is one more round
//! trip to the connection's worker thread (two thread wake-ups), on MySQL one more round trip
//! to the server: as many as the statement itself. A small-file download makes three or four
//! short reads, so those pings were most of its metadata cost (docs/PERFORMANCE.md, "Pings
//! between statements").
//!
//! [`Conns`] keeps connections that ended cleanly and lends them again without a ping. What
//! sqlx's checks are for still holds:
//! - a connection whose last use failed, or whose user was cancelled mid-statement, is never
//!   kept: it goes back to sqlx, which pings it (and rolls back what was left open) or closes it;
//! - a connection is kept for at most [`REUSE_FOR`] from the moment it left sqlx's pool; after
//!   that it goes back through sqlx's checks (its lifetime and idle limits, and on MySQL a
//!   server that restarted or failed over);
//! - a permit per pooled connection bounds how many are lent at once, so a task waiting for a
//!   connection is woken by one handed back here as well as by sqlx's pool.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::pool::PoolConnection;
use sqlx::{Database, Pool};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How long a connection is lent again without going back through sqlx's pool.
pub(crate) const REUSE_FOR: Duration = Duration::from_secs(30);

/// The connections of one sqlx pool, lent without a ping while they stay clean.
pub(crate) struct Conns<DB: Database> {
    pool: Pool<DB>,
    idle: Mutex<Idle<DB>>,
    permits: Arc<Semaphore>,
    wait: Duration,
}

struct Idle<DB: Database> {
    closed: bool,
    /// Most recently used last: the next borrower takes the warmest one.
    kept: Vec<(PoolConnection<DB>, Instant)>,
}

impl<DB: Database> Conns<DB> {
    /// Lends the connections of `pool`: as many at once as it may open.
    pub(crate) fn new(pool: Pool<DB>) -> Arc<Self> {
        let max = pool.options().get_max_connections().max(1) as usize;
        let wait = pool.options().get_acquire_timeout();
        Arc::new(Self {
            pool,
            idle: Mutex::new(Idle {
                closed: false,
                kept: Vec::new(),
            }),
            permits: Arc::new(Semaphore::new(max)),
            wait,
        })
    }

    /// A connection: a kept one if there is one young enough, else one from the pool. Waits
    /// at most the pool's acquire timeout.
    pub(crate) async fn acquire(self: &Arc<Self>) -> Result<Held<DB>, sqlx::Error> {
        let permit = tokio::time::timeout(self.wait, Arc::clone(&self.permits).acquire_owned())
            .await
            .map_err(|_| sqlx::Error::PoolTimedOut)?
            .map_err(|_| sqlx::Error::PoolClosed)?;
        loop {
            let next = self.idle.lock().ok().and_then(|mut idle| idle.kept.pop());
            match next {
                Some((conn, since)) if since.elapsed() < REUSE_FOR => {
                    return Ok(Held::new(conn, since, self, permit));
                }
                // Too old: back to sqlx, whose checks it then goes through.
                Some(old) => drop(old),
                None => break,
            }
        }
        let conn = self.pool.acquire().await?;
        Ok(Held::new(conn, Instant::now(), self, permit))
    }

    /// Stops lending, hands every kept connection back and closes the pool (waiting for the
    /// ones still lent).
    pub(crate) async fn close(&self) {
        self.permits.close();
        let kept = match self.idle.lock() {
            Ok(mut idle) => {
                idle.closed = true;
                std::mem::take(&mut idle.kept)
            }
            Err(_) => Vec::new(),
        };
        drop(kept);
        self.pool.close().await;
    }

    fn keep(&self, conn: PoolConnection<DB>, since: Instant) {
        let refused = match self.idle.lock() {
            Ok(mut idle) if !idle.closed => {
                idle.kept.push((conn, since));
                None
            }
            _ => Some(conn),
        };
        // Dropped outside the lock: sqlx spawns its return to the pool.
        drop(refused);
    }
}

/// A lent connection. It is kept for the next borrower only if [`Held::release`] was called;
/// dropped otherwise (a failure, a cancelled future), it goes back to sqlx and its checks.
pub(crate) struct Held<DB: Database> {
    conn: Option<PoolConnection<DB>>,
    since: Instant,
    home: Arc<Conns<DB>>,
    clean: bool,
    // Dropped after `drop` has put the connection back, so a woken waiter finds it.
    _permit: OwnedSemaphorePermit,
}

impl<DB: Database> Held<DB> {
    fn new(
        conn: PoolConnection<DB>,
        since: Instant,
        home: &Arc<Conns<DB>>,
        permit: OwnedSemaphorePermit,
    ) -> Self {
        Self {
            conn: Some(conn),
            since,
            home: Arc::clone(home),
            clean: false,
            _permit: permit,
        }
    }

    /// The connection.
    pub(crate) fn conn(&mut self) -> &mut DB::Connection {
        match self.conn.as_mut() {
            Some(conn) => conn,
            // Only `drop` takes it out.
            None => unreachable!("a held connection is present until dropped"),
        }
    }

    /// Marks the connection as ended cleanly (no statement or transaction left open): it is
    /// lent again without a ping.
    pub(crate) fn release(mut self) {
        self.clean = true;
    }

    /// Takes the connection out of the pool for good and closes it (for a connection holding
    /// session state that must not outlive this use, such as a named lock).
    pub(crate) fn detach(mut self) {
        if let Some(conn) = self.conn.take() {
            drop(conn.detach());
        }
    }

    /// [`Held::release`] if `outcome` did not fail in the database driver.
    pub(crate) fn settle<T, E: DriverFailure>(self, outcome: &Result<T, E>) {
        match outcome {
            Err(e) if e.is_driver_failure() => {}
            _ => self.release(),
        }
    }
}

/// Errors that may leave a connection in an unknown state.
pub(crate) trait DriverFailure {
    /// `true` if the database driver failed (the connection may be broken or mid-statement).
    fn is_driver_failure(&self) -> bool;
}

impl DriverFailure for sqlx::Error {
    fn is_driver_failure(&self) -> bool {
        true
    }
}

impl<DB: Database> Drop for Held<DB> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take()
            && self.clean
            && self.since.elapsed() < REUSE_FOR
        {
            self.home.keep(conn, self.since);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::sqlite::SqlitePoolOptions;

    async fn one_connection_pool() -> Pool<sqlx::Sqlite> {
        SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_millis(500))
            .connect("sqlite::memory:")
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn a_released_connection_is_lent_again_and_a_failed_one_is_not() {
        let conns = Conns::new(one_connection_pool().await);
        let mut held = conns.acquire().await.unwrap();
        sqlx::query("CREATE TEMP TABLE t (x INTEGER)")
            .execute(held.conn())
            .await
            .unwrap();
        held.release();
        // The same connection (a temp table lives in its connection only).
        let mut held = conns.acquire().await.unwrap();
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM t")
            .fetch_one(held.conn())
            .await
            .unwrap();
        assert_eq!(n, 0);
        let failed: Result<(), sqlx::Error> = Err(sqlx::Error::RowNotFound);
        held.settle(&failed);
        assert!(conns.idle.lock().unwrap().kept.is_empty());
        // The pool still lends one (through sqlx, after its ping).
        let held = conns.acquire().await.unwrap();
        held.release();
        assert_eq!(conns.idle.lock().unwrap().kept.len(), 1);
    }

    #[tokio::test]
    async fn a_waiting_borrower_gets_the_connection_handed_back() {
        let conns = Conns::new(one_connection_pool().await);
        let held = conns.acquire().await.unwrap();
        let waiter = {
            let conns = Arc::clone(&conns);
            tokio::spawn(async move { conns.acquire().await.map(Held::release) })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        held.release();
        waiter.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn borrowers_beyond_the_pool_size_time_out_and_close_ends_lending() {
        let conns = Conns::new(one_connection_pool().await);
        let held = conns.acquire().await.unwrap();
        assert!(matches!(
            conns.acquire().await.err(),
            Some(sqlx::Error::PoolTimedOut)
        ));
        held.release();
        conns.close().await;
        assert!(matches!(
            conns.acquire().await.err(),
            Some(sqlx::Error::PoolClosed)
        ));
    }
}
