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

use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags, Params};

use crate::rows::{Columns, corrupt};
use crate::{MetaError, MetaResult};

/// At most this many idle connections are kept (one per thread that reads at once).
const IDLE_MAX: usize = 8;
/// A read that finds the database locked (rare under WAL: a reader waits only while the
/// shared index is rebuilt) gives up after this and goes through the pool instead.
const BUSY_TIMEOUT: Duration = Duration::from_millis(50);

/// Read-only connections to one SQLite file, lent to one reader at a time.
pub(crate) struct InPlace {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    closed: AtomicBool,
    /// Reads answered here, for tests and diagnosis.
    served: AtomicU64,
}

impl std::fmt::Debug for InPlace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InPlace")
            .field("path", &self.path)
            .field("served", &self.served.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl InPlace {
    /// Reads of the database at `path`; no connection is opened until the first read.
    pub(crate) fn new(path: PathBuf) -> Self {
        Self {
            path,
            idle: Mutex::new(Vec::new()),
            closed: AtomicBool::new(false),
            served: AtomicU64::new(0),
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

    /// How many reads were answered here.
    pub(crate) fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }

    /// No read is made here after this; idle connections are closed.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        if let Ok(mut idle) = self.idle.lock() {
            idle.clear();
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
}

/// A row of an in-place read, handing out columns as the pool's rows do (see
/// [`Columns`]: the same decoding code serves both).
pub(crate) struct InPlaceRow<'a, 's>(&'a rusqlite::Row<'s>);

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
}
