//! Point reads of the SQLite store run in place, on the calling thread.
//!
//! sqlx runs every SQLite statement on a thread of its own per connection: the caller sends
//! the statement over a channel, that thread wakes, steps it and sends the rows back, and
//! the caller's task wakes again. For the two reads every small download makes (the user and
//! tenant of the request, and the file's row with its inline bytes) those thread switches
//! were most of the server's CPU per request (docs/PERFORMANCE.md, "Reads in place"). An
//! indexed point read on a warm page cache takes microseconds, so these two run here, on a
//! read-only connection of this module, where the caller is.
//!
//! Only reads by a unique key go this way. Anything SQLite refuses (busy, I/O, a connection
//! that cannot be opened) makes [`InPlace::read_row`] return `None`, and the caller runs the
//! same statement through the pool as before: a fault costs a fallback, never a failed
//! request. The rows are decoded by the same code as the pool's (`rows.rs`, through
//! [`Columns`]), and the conformance suite runs every read of the SQLite store through here.
//!
//! The commit of a file (the write every upload ends in) runs in place too, for the same
//! reason: through the pool it was four trips to the worker thread (`BEGIN IMMEDIATE`, the
//! row, the queued jobs with the quota, `COMMIT`). [`InPlace::write`] runs a whole
//! transaction on one read-write connection of this module, with the settings of the pool's
//! (`synchronous=FULL`: the commit is on disk before the caller hears of it, foreign keys on,
//! the same busy timeout). The caller holds the store's writer lock around it, so this
//! connection and the pool's never write at once. The transaction's sync would block the
//! thread it runs on, so on a multi-threaded runtime it runs under
//! [`tokio::task::block_in_place`]: the runtime hands this thread's other tasks to another
//! thread meanwhile. A write that cannot be made here (the connection cannot be opened, SQLite
//! refuses a statement before the commit, the work asks for it) is rolled back and left to the
//! pool; only a failed `COMMIT` is an answer, since it may have reached the disk.

use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags, Params, Transaction, TransactionBehavior};

use crate::checkpoint::{Checkpoints, WRITER_AUTOCHECKPOINT};
use crate::rows::{Columns, corrupt};
use crate::{MetaError, MetaResult};

/// At most this many idle connections are kept (one per thread that reads at once).
const IDLE_MAX: usize = 8;
/// A read that finds the database locked (rare under WAL: a reader waits only while the
/// shared index is rebuilt) gives up after this and goes through the pool instead.
const BUSY_TIMEOUT: Duration = Duration::from_millis(50);

/// How a transaction of [`InPlace::write`] ended.
enum Ended<T> {
    Committed(T),
    Refused(MetaError),
    Elsewhere,
    CommitFailed(rusqlite::Error),
}

/// Read-only connections to one SQLite file, lent to one reader at a time, and one
/// read-write connection for commits.
pub(crate) struct InPlace {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    /// The connection of [`InPlace::write`], opened at the first write.
    writer: Mutex<Option<Connection>>,
    /// The file's checkpoints, off the commits' path (`checkpoint.rs`); `None` if its thread
    /// could not be started (the writers then checkpoint in their commits, as SQLite does by
    /// default).
    checkpoints: Option<Checkpoints>,
    closed: AtomicBool,
    /// Reads answered here, for tests and diagnosis.
    served: AtomicU64,
    /// Transactions committed here, for tests and diagnosis.
    written: AtomicU64,
}

/// What the work of an [`InPlace::write`] decided.
pub(crate) enum Written<T> {
    /// Commit, and answer `T`.
    Commit(T),
    /// Roll back, and answer this (a decided refusal, such as a quota exceeded).
    Refuse(MetaError),
    /// Roll back, and let the pool's path run the same operation (it knows every case).
    Elsewhere,
}

impl std::fmt::Debug for InPlace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InPlace")
            .field("path", &self.path)
            .field("served", &self.served.load(Ordering::Relaxed))
            .field("written", &self.written.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl InPlace {
    /// Reads and commits of the database at `path`, and its checkpoint thread; no
    /// connection is opened until the first read, write or checkpoint.
    pub(crate) fn new(path: PathBuf) -> Self {
        let checkpoints = Checkpoints::start(path.clone())
            .inspect_err(|e| {
                tracing::warn!(error = %e, "no checkpoint thread; SQLite's commits checkpoint");
            })
            .ok();
        Self {
            path,
            idle: Mutex::new(Vec::new()),
            writer: Mutex::new(None),
            checkpoints,
            closed: AtomicBool::new(false),
            served: AtomicU64::new(0),
            written: AtomicU64::new(0),
        }
    }

    /// The one row `sql` finds with `params`, decoded, `Ok(None)` if there is none;
    /// `None` if the read could not be made here (the caller runs it through the pool).
    pub(crate) fn read_row<T>(
        &self,
        sql: &'static str,
        params: impl Params,
        decode: impl FnOnce(&InPlaceRow<'_, '_>) -> MetaResult<T>,
    ) -> Option<MetaResult<Option<T>>> {
        if self.closed.load(Ordering::Acquire) {
            return None;
        }
        let conn = self.borrow()?;
        let read = (|| -> rusqlite::Result<Option<MetaResult<T>>> {
            let mut statement = conn.prepare_cached(sql)?;
            let mut rows = statement.query(params)?;
            Ok(rows.next()?.map(|row| decode(&InPlaceRow(row))))
        })();
        match read {
            Ok(found) => {
                self.give_back(conn);
                self.served.fetch_add(1, Ordering::Relaxed);
                Some(found.transpose())
            }
            Err(e) => {
                // The connection is dropped, not kept: the next read opens a fresh one.
                tracing::debug!(error = %e, "in-place read refused; reading through the pool");
                None
            }
        }
    }

    /// Runs `work` in one write transaction (`BEGIN IMMEDIATE`) and commits or rolls back as
    /// it decides. `None` if the write was not made here: rolled back, for the pool to make.
    /// The caller must hold the store's writer lock.
    pub(crate) fn write<T>(
        &self,
        work: impl FnOnce(&Transaction<'_>) -> rusqlite::Result<Written<T>>,
    ) -> Option<MetaResult<T>> {
        if self.closed.load(Ordering::Acquire) {
            return None;
        }
        let mut slot = self.writer.lock().ok()?;
        if slot.is_none() {
            match self.connect_writer() {
                Ok(conn) => *slot = Some(conn),
                Err(e) => {
                    tracing::debug!(error = %e, "in-place writer not opened; writing through the pool");
                    return None;
                }
            }
        }
        let conn = slot.as_mut()?;
        let outcome = off_the_runtime(|| -> rusqlite::Result<Ended<T>> {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            Ok(match work(&tx)? {
                Written::Commit(value) => match tx.commit() {
                    Ok(()) => Ended::Committed(value),
                    Err(e) => Ended::CommitFailed(e),
                },
                Written::Refuse(refusal) => {
                    tx.rollback()?;
                    Ended::Refused(refusal)
                }
                Written::Elsewhere => {
                    tx.rollback()?;
                    Ended::Elsewhere
                }
            })
        });
        match outcome {
            Ok(Ended::Committed(value)) => {
                self.written.fetch_add(1, Ordering::Relaxed);
                if let Some(checkpoints) = &self.checkpoints {
                    checkpoints.committed();
                }
                Some(Ok(value))
            }
            Ok(Ended::Refused(refusal)) => Some(Err(refusal)),
            Ok(Ended::Elsewhere) => None,
            Ok(Ended::CommitFailed(e)) => {
                // The transaction's fate is in SQLite's hands now: the connection is closed
                // (which rolls back whatever did not commit) and the caller hears of it.
                *slot = None;
                Some(Err(MetaError::Unavailable(format!(
                    "the metadata commit failed, the change may or may not be applied: {e}"
                ))))
            }
            Err(e) => {
                // Nothing was committed; the dropped transaction rolled back. The connection
                // is closed too, and the next write opens a fresh one.
                *slot = None;
                tracing::debug!(error = %e, "in-place write refused; writing through the pool");
                None
            }
        }
    }

    /// How many reads were answered here.
    pub(crate) fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }

    /// How many transactions were committed here.
    pub(crate) fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    /// How many checkpoints the checkpoint thread has made.
    pub(crate) fn checkpoints(&self) -> u64 {
        self.checkpoints.as_ref().map_or(0, Checkpoints::made)
    }

    /// No read, write or checkpoint is made here after this; the connections are closed.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        if let Some(checkpoints) = &self.checkpoints {
            checkpoints.stop();
        }
        if let Ok(mut idle) = self.idle.lock() {
            idle.clear();
        }
        if let Ok(mut writer) = self.writer.lock() {
            *writer = None;
        }
    }

    fn borrow(&self) -> Option<Connection> {
        let idle = self.idle.lock().ok().and_then(|mut idle| idle.pop());
        if let Some(conn) = idle {
            return Some(conn);
        }
        match self.connect() {
            Ok(conn) => Some(conn),
            Err(e) => {
                tracing::debug!(error = %e, "in-place read connection not opened");
                None
            }
        }
    }

    fn give_back(&self, conn: Connection) {
        if let Ok(mut idle) = self.idle.lock()
            && idle.len() < IDLE_MAX
            && !self.closed.load(Ordering::Acquire)
        {
            idle.push(conn);
        }
    }

    fn connect(&self) -> rusqlite::Result<Connection> {
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        Ok(conn)
    }

    /// The connection commits run on, set up as the pool's writers are (`sqlite.rs`). It never
    /// creates the file: the pool opened and migrated it.
    fn connect_writer(&self) -> rusqlite::Result<Connection> {
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        // As long as the pool's writers wait for another process's write lock; within this
        // process the writer lock has already ordered it.
        conn.busy_timeout(crate::sqlite::BUSY_TIMEOUT)?;
        conn.execute_batch(&format!(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; \
             PRAGMA wal_autocheckpoint = {WRITER_AUTOCHECKPOINT};"
        ))?;
        Ok(conn)
    }
}

/// Runs `work`, which may block on the disk, without holding up the other tasks of a
/// multi-threaded runtime (they move to another thread meanwhile); on any other thread, or a
/// single-threaded runtime (tests), it simply runs.
fn off_the_runtime<R>(work: impl FnOnce() -> R) -> R {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(RuntimeFlavor::MultiThread) => tokio::task::block_in_place(work),
        _ => work(),
    }
}

/// A row of an in-place read, handing out columns as the pool's rows do (see
/// [`Columns`]: the same decoding code serves both).
pub(crate) struct InPlaceRow<'a, 's>(pub(crate) &'a rusqlite::Row<'s>);

impl InPlaceRow<'_, '_> {
    fn value(&self, name: &'static str) -> MetaResult<ValueRef<'_>> {
        self.0
            .get_ref(name)
            .map_err(|e| MetaError::Database(format!("stored row has an invalid {name}: {e}")))
    }

    fn bytes(&self, name: &'static str) -> MetaResult<Option<Vec<u8>>> {
        match self.value(name)? {
            ValueRef::Null => Ok(None),
            ValueRef::Blob(b) | ValueRef::Text(b) => Ok(Some(b.to_vec())),
            ValueRef::Integer(_) | ValueRef::Real(_) => Err(corrupt(name)),
        }
    }
}

impl Columns for InPlaceRow<'_, '_> {
    fn int(&self, name: &'static str) -> MetaResult<i64> {
        self.opt_int(name)?.ok_or_else(|| corrupt(name))
    }
    fn opt_int(&self, name: &'static str) -> MetaResult<Option<i64>> {
        match self.value(name)? {
            ValueRef::Null => Ok(None),
            ValueRef::Integer(v) => Ok(Some(v)),
            _ => Err(corrupt(name)),
        }
    }
    fn flag(&self, name: &'static str) -> MetaResult<bool> {
        Ok(self.int(name)? != 0)
    }
    fn blob(&self, name: &'static str) -> MetaResult<Vec<u8>> {
        self.bytes(name)?.ok_or_else(|| corrupt(name))
    }
    fn opt_blob(&self, name: &'static str) -> MetaResult<Option<Vec<u8>>> {
        self.bytes(name)
    }
    fn ident(&self, name: &'static str) -> MetaResult<String> {
        String::from_utf8(self.blob(name)?).map_err(|_| corrupt(name))
    }
    fn opt_text(&self, name: &'static str) -> MetaResult<Option<String>> {
        self.bytes(name)?
            .map(|b| String::from_utf8(b).map_err(|_| corrupt(name)))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn database() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.db");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; \
             CREATE TABLE t (id INTEGER PRIMARY KEY, n INTEGER, b BLOB, s TEXT, f INTEGER); \
             INSERT INTO t VALUES (1, NULL, x'00ff', 'kind', 1), (2, 7, NULL, NULL, 0), \
                                  (3, 'seven', x'ff', x'ff', 2);",
        )
        .unwrap();
        (dir, path)
    }

    const ROW: &str = "SELECT n, b, s, f FROM t WHERE id = ?";

    #[test]
    fn rows_are_decoded_as_the_pools_rows_are() {
        let (_dir, path) = database();
        let reads = InPlace::new(path);
        let one = reads
            .read_row(ROW, (1,), |r| {
                Ok((r.opt_int("n")?, r.blob("b")?, r.ident("s")?, r.flag("f")?))
            })
            .unwrap()
            .unwrap();
        assert_eq!(one, Some((None, vec![0, 0xff], "kind".into(), true)));
        let two = reads
            .read_row(ROW, (2,), |r| {
                Ok((
                    r.int("n")?,
                    r.opt_blob("b")?,
                    r.opt_text("s")?,
                    r.flag("f")?,
                ))
            })
            .unwrap()
            .unwrap();
        assert_eq!(two, Some((7, None, None, false)));
        // No such row, and a column that does not exist.
        assert_eq!(
            reads.read_row(ROW, (9,), |r| r.int("n")).unwrap().unwrap(),
            None
        );
        assert!(matches!(
            reads.read_row(ROW, (1,), |r| r.int("missing")).unwrap(),
            Err(MetaError::Database(m)) if m.contains("missing")
        ));
        assert_eq!(reads.served(), 4);
    }

    #[test]
    fn a_column_of_the_wrong_type_is_a_corrupt_row() {
        let (_dir, path) = database();
        let reads = InPlace::new(path);
        for decode in [
            (|r: &InPlaceRow<'_, '_>| r.int("n").map(drop)) as fn(&InPlaceRow<'_, '_>) -> _,
            |r| r.int("b").map(drop),
            |r| r.ident("s").map(drop),
            |r| r.opt_text("s").map(drop),
        ] {
            let got = reads.read_row(ROW, (3,), decode).unwrap();
            assert!(matches!(got, Err(MetaError::Database(_))), "{got:?}");
        }
        // A null where a value must be.
        assert!(reads.read_row(ROW, (2,), |r| r.blob("b")).unwrap().is_err());
    }

    #[test]
    fn a_read_that_cannot_be_made_here_is_left_to_the_pool() {
        let dir = tempfile::tempdir().unwrap();
        // No such file: read-only connections never create one.
        let reads = InPlace::new(dir.path().join("missing.db"));
        assert!(reads.read_row(ROW, (1,), |r| r.int("n")).is_none());
        assert!(!dir.path().join("missing.db").exists());
        // A statement SQLite refuses.
        let (_dir, path) = database();
        let reads = InPlace::new(path);
        assert!(
            reads
                .read_row("SELECT nope FROM t", (), |r| r.int("nope"))
                .is_none()
        );
        // Closed: nothing is read here any more.
        assert!(reads.read_row(ROW, (1,), |r| r.opt_int("n")).is_some());
        reads.close();
        assert!(reads.read_row(ROW, (1,), |r| r.opt_int("n")).is_none());
        assert_eq!(reads.served(), 1);
    }

    fn count(path: &std::path::Path) -> i64 {
        Connection::open(path)
            .unwrap()
            .query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn a_write_commits_refuses_or_leaves_the_work_to_the_pool_as_told() {
        let (_dir, path) = database();
        let store = InPlace::new(path.clone());
        let insert =
            |tx: &Transaction<'_>, id: i64| tx.execute("INSERT INTO t (id, n) VALUES (?, 1)", [id]);
        // Committed: on disk, counted; the connection commits as the pool's writers do.
        let settings = store.write(|tx| {
            insert(tx, 10)?;
            let sync: i64 = tx.query_row("PRAGMA synchronous", [], |r| r.get(0))?;
            let fks: i64 = tx.query_row("PRAGMA foreign_keys", [], |r| r.get(0))?;
            let journal: String = tx.query_row("PRAGMA journal_mode", [], |r| r.get(0))?;
            let pages: u32 = tx.query_row("PRAGMA wal_autocheckpoint", [], |r| r.get(0))?;
            Ok(Written::Commit((sync, fks, journal, pages)))
        });
        assert_eq!(
            settings.unwrap().unwrap(),
            (2, 1, "wal".to_string(), WRITER_AUTOCHECKPOINT),
            "FULL, on, WAL, the checkpoint thread's backstop"
        );
        assert_eq!(count(&path), 4);
        // Refused: rolled back, the refusal is the answer.
        let refused = store.write(|tx| {
            insert(tx, 11)?;
            Ok(Written::<()>::Refuse(MetaError::QuotaExceeded))
        });
        assert!(matches!(refused, Some(Err(MetaError::QuotaExceeded))));
        // Left to the pool, or a statement SQLite refuses: rolled back, `None`.
        assert!(
            store
                .write(|tx| {
                    insert(tx, 12)?;
                    Ok(Written::<()>::Elsewhere)
                })
                .is_none()
        );
        assert!(
            store
                .write(|tx| {
                    insert(tx, 13)?;
                    insert(tx, 1)?;
                    Ok(Written::Commit(()))
                })
                .is_none()
        );
        assert_eq!(count(&path), 4, "only the committed row is there");
        assert_eq!(store.written(), 1);
        // The connection is opened again after a refused statement, and works.
        assert!(matches!(
            store.write(|tx| insert(tx, 14).map(Written::Commit)),
            Some(Ok(1))
        ));
        assert_eq!(count(&path), 5);
        // Closed: nothing is written here any more.
        store.close();
        assert!(
            store
                .write(|tx| insert(tx, 15).map(Written::Commit))
                .is_none()
        );
        assert_eq!(count(&path), 5);
    }

    #[test]
    fn a_write_that_cannot_be_made_here_is_left_to_the_pool() {
        let dir = tempfile::tempdir().unwrap();
        // No such file: the writer never creates one (the pool creates and migrates it).
        let store = InPlace::new(dir.path().join("missing.db"));
        assert!(store.write(|_| Ok(Written::Commit(()))).is_none());
        assert!(!dir.path().join("missing.db").exists());
    }

    /// On a multi-threaded runtime the transaction runs off the runtime's worker (its sync
    /// would hold up the worker's other tasks); the write still lands.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_write_on_a_multi_threaded_runtime_lands() {
        let (_dir, path) = database();
        let store = InPlace::new(path.clone());
        let on_worker = store.write(|tx| {
            tx.execute("INSERT INTO t (id) VALUES (20)", [])?;
            Ok(Written::Commit(()))
        });
        assert!(matches!(on_worker, Some(Ok(()))));
        assert_eq!(count(&path), 4);
    }
}
