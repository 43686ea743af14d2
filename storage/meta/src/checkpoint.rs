//! Checkpoints of a SQLite file's write-ahead log, on a thread of their own.
//!
//! A commit appends its pages to the write-ahead log and syncs it; that is what makes it
//! durable. Now and then the log must be copied back into the database file (a checkpoint),
//! which writes those pages there and syncs the database file, so that the log can start
//! over from its beginning. By default SQLite does that in the commit that takes the log past
//! 1,000 pages, before that commit returns: one upload in about seventy (a small file's commit
//! writes about 14 pages) waited 5–30 ms for it (docs/PERFORMANCE.md, "Checkpoints off the
//! upload's path").
//!
//! Here a thread of the store's makes the checkpoints instead, on a connection of its own, a
//! `PASSIVE` checkpoint (it waits for no reader and no writer) after every [`EVERY`] commits
//! made in place, and once a second in any case, for the pool's commits, which it is not told
//! of (with nothing to copy, a checkpoint reads the log's header and returns). The writers'
//! own automatic checkpoint is kept as a backstop at [`WRITER_AUTOCHECKPOINT`] pages: a
//! passive checkpoint made while commits keep arriving leaves the pages of those commits
//! behind, and the log starts over only after a checkpoint that left nothing; under a steady
//! stream of commits the writer's own checkpoint gets there, and finds almost everything
//! already copied.
//!
//! A checkpoint moves pages that are already durable in the log: whether it runs here or in a
//! commit changes no commit's durability (invariant 2), only who waits for it.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

/// Commits between two checkpoints of the thread.
const EVERY: u32 = 64;
/// The thread checkpoints at least this often.
const INTERVAL: Duration = Duration::from_secs(1);
/// The log size, in pages, at which a writer checkpoints in its own commit
/// (`PRAGMA wal_autocheckpoint`; SQLite's default is 1,000).
pub(crate) const WRITER_AUTOCHECKPOINT: u32 = 4_000;

/// The checkpoint thread of one SQLite file; stopped and joined when dropped.
pub(crate) struct Checkpoints {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

struct Shared {
    path: PathBuf,
    state: Mutex<State>,
    wake: Condvar,
    /// Checkpoints made, for tests and diagnosis.
    made: AtomicU64,
}

#[derive(Default)]
struct State {
    commits: u32,
    stop: bool,
}

impl std::fmt::Debug for Checkpoints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpoints")
            .field("path", &self.shared.path)
            .field("made", &self.made())
            .finish_non_exhaustive()
    }
}

impl Checkpoints {
    /// Starts the thread for the database at `path`. Its connection is opened at its first
    /// checkpoint, so the file must exist (the pool creates and migrates it) by then.
    pub(crate) fn start(path: PathBuf) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            path,
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
            made: AtomicU64::new(0),
        });
        let thread = std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn({
                let shared = Arc::clone(&shared);
                move || shared.run()
            })?;
        Ok(Self {
            shared,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// A commit was made: every [`EVERY`] of them wakes the thread.
    pub(crate) fn committed(&self) {
        let Ok(mut state) = self.shared.state.lock() else {
            return;
        };
        state.commits += 1;
        if state.commits >= EVERY {
            self.shared.wake.notify_one();
        }
    }

    /// How many checkpoints the thread has made.
    pub(crate) fn made(&self) -> u64 {
        self.shared.made.load(Ordering::Relaxed)
    }

    /// Stops the thread after its current checkpoint, and waits for it (its connection is
    /// closed when this returns). Idempotent.
    pub(crate) fn stop(&self) {
        if let Ok(mut state) = self.shared.state.lock() {
            state.stop = true;
            self.shared.wake.notify_one();
        }
        let thread = self.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }
}

impl Drop for Checkpoints {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Shared {
    fn run(&self) {
        let mut conn: Option<Connection> = None;
        let mut failing = false;
        while self.next() {
            match self.checkpoint(&mut conn) {
                Ok((log, copied)) => {
                    self.made.fetch_add(1, Ordering::Relaxed);
                    if std::mem::take(&mut failing) {
                        tracing::info!(path = %self.path.display(), "sqlite checkpoints work again");
                    }
                    tracing::trace!(log, copied, "sqlite checkpoint");
                }
                Err(e) => {
                    // The writers' own checkpoint is the backstop; the next wake tries again
                    // on a fresh connection. Said once per spell of failures.
                    conn = None;
                    if !std::mem::replace(&mut failing, true) {
                        tracing::warn!(path = %self.path.display(), error = %e,
                            "sqlite checkpoint failed; the writers checkpoint until it works again");
                    }
                }
            }
        }
    }

    /// Waits until [`EVERY`] commits were made or [`INTERVAL`] passed; `false` once stopped.
    fn next(&self) -> bool {
        let Ok(mut state) = self.state.lock() else {
            return false;
        };
        while !state.stop && state.commits < EVERY {
            let Ok((next, waited)) = self.wake.wait_timeout(state, INTERVAL) else {
                return false;
            };
            state = next;
            if waited.timed_out() {
                break;
            }
        }
        state.commits = 0;
        !state.stop
    }

    /// One passive checkpoint: the log's size and how much of it is now in the database
    /// file, in pages.
    fn checkpoint(&self, conn: &mut Option<Connection>) -> rusqlite::Result<(i64, i64)> {
        let conn = match conn {
            Some(conn) => conn,
            None => conn.insert(self.connect()?),
        };
        conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
            Ok((row.get(1)?, row.get(2)?))
        })
    }

    /// The thread's connection. Its syncs are those of the writers' checkpoints: the database
    /// file is synced before the log may start over.
    fn connect(&self) -> rusqlite::Result<Connection> {
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.execute_batch("PRAGMA synchronous = FULL;")?;
        Ok(conn)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log_pages(conn: &Connection) -> (i64, i64) {
        // A checkpoint that copies nothing reports the log as it stands.
        conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
            Ok((row.get(1)?, row.get(2)?))
        })
        .unwrap()
    }

    #[test]
    fn the_thread_copies_the_log_into_the_database_file_after_enough_commits() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.db");
        let writer = Connection::open(&path).unwrap();
        writer
            .execute_batch(&format!(
                "PRAGMA journal_mode = WAL; PRAGMA wal_autocheckpoint = {WRITER_AUTOCHECKPOINT}; \
                 CREATE TABLE t (id INTEGER PRIMARY KEY, b BLOB);"
            ))
            .unwrap();
        let checkpoints = Checkpoints::start(path.clone()).unwrap();
        let before = std::fs::metadata(&path).unwrap().len();
        for i in 0..EVERY {
            writer
                .execute("INSERT INTO t VALUES (?, zeroblob(3000))", [i])
                .unwrap();
            checkpoints.committed();
        }
        // The EVERY-th commit woke the thread: it copies the log well before INTERVAL.
        let deadline = std::time::Instant::now() + INTERVAL / 2;
        while checkpoints.made() == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "no checkpoint after {EVERY} commits"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        let (log, copied) = log_pages(&writer);
        assert!(log > 0, "the commits wrote no log");
        assert_eq!(copied, log, "the checkpoint left pages in the log");
        assert!(
            std::fs::metadata(&path).unwrap().len() > before + u64::from(EVERY) * 3000,
            "the rows did not reach the database file"
        );
        // The log starts over at the next commit: it is not written past its old size.
        let wal = dir.path().join("meta.db-wal");
        let wal_size = std::fs::metadata(&wal).unwrap().len();
        writer
            .execute("INSERT INTO t VALUES (?, zeroblob(3000))", [EVERY])
            .unwrap();
        assert_eq!(std::fs::metadata(&wal).unwrap().len(), wal_size);
        assert!(log_pages(&writer).0 < 10, "the log did not start over");
        checkpoints.stop();
    }

    #[test]
    fn a_few_commits_are_checkpointed_within_the_interval_and_stop_is_prompt() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.db");
        let writer = Connection::open(&path).unwrap();
        writer
            .execute_batch(
                "PRAGMA journal_mode = WAL; CREATE TABLE t (id INTEGER PRIMARY KEY, b BLOB);",
            )
            .unwrap();
        let checkpoints = Checkpoints::start(path).unwrap();
        writer
            .execute("INSERT INTO t VALUES (1, zeroblob(100))", [])
            .unwrap();
        checkpoints.committed();
        let deadline = std::time::Instant::now() + INTERVAL * 3;
        while checkpoints.made() == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "one commit was never checkpointed"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let (log, copied) = log_pages(&writer);
        assert_eq!(copied, log);
        let asked = std::time::Instant::now();
        checkpoints.stop();
        assert!(
            asked.elapsed() < Duration::from_millis(500),
            "stop waited for the interval"
        );
        checkpoints.stop();
    }
}
