//! A MariaDB server for tests: the one named by `COFFER_TEST_MYSQL_URL`, or a private one.
//!
//! Without `COFFER_TEST_MYSQL_URL`, the first test that asks starts a private server with
//! `integration/start-mariadb` in a temporary directory, on a free loopback port, with TLS and
//! a `coffer` user that logs in with a password; the server stops and its directory goes when
//! the test binary exits. If MariaDB is not installed the tests fail and say what to install —
//! unless `COFFER_SKIP_MYSQL=1`, which skips them.
//!
//! Shared with `coffer-storage`'s tests through `#[path]`.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::Connection;

/// Names the server the tests use instead of starting their own.
pub const URL_VAR: &str = "COFFER_TEST_MYSQL_URL";
/// Set to 1 to skip the MySQL tests on a machine without MariaDB.
pub const SKIP_VAR: &str = "COFFER_SKIP_MYSQL";

/// A running server.
#[derive(Debug)]
pub struct MariaDb {
    /// `mysql://coffer:PASSWORD@127.0.0.1:PORT/coffer`.
    pub url: String,
    /// The directory of a private server (data, socket, TLS material), `None` for an external one.
    pub dir: Option<PathBuf>,
}

/// `true` (and a note on stderr) if MySQL tests are to be skipped.
pub fn skipped() -> bool {
    let skip = std::env::var(SKIP_VAR).is_ok_and(|v| v == "1");
    if skip {
        eprintln!("{SKIP_VAR}=1: skipping a MariaDB test");
    }
    skip
}

/// The server shared by every test of this binary; `None` if skipped.
pub fn shared() -> Option<&'static MariaDb> {
    static SHARED: OnceLock<MariaDb> = OnceLock::new();
    if skipped() {
        return None;
    }
    Some(SHARED.get_or_init(|| match std::env::var(URL_VAR) {
        Ok(url) if !url.is_empty() => MariaDb { url, dir: None },
        _ => start_private(),
    }))
}

/// A server of the caller's own (for tests that stop it or need its TLS material); `None`
/// if skipped. It stops when the test binary exits.
pub fn private() -> Option<MariaDb> {
    if skipped() {
        return None;
    }
    Some(start_private())
}

fn unique_suffix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "{}_{}_{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// `integration/start-mariadb`, found by walking up from this crate.
fn start_script() -> PathBuf {
    let mut dir = Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf();
    loop {
        let candidate = dir.join("integration/start-mariadb");
        if candidate.exists() {
            return candidate;
        }
        assert!(
            dir.pop(),
            "integration/start-mariadb not found above the crate"
        );
    }
}

fn mariadb_installed() -> bool {
    [
        "/usr/sbin/mariadbd",
        "/usr/bin/mariadbd",
        "/usr/local/bin/mariadbd",
    ]
    .iter()
    .any(|p| Path::new(p).exists())
        || Command::new("mariadbd").arg("--version").output().is_ok()
}

fn start_private() -> MariaDb {
    assert!(
        mariadb_installed(),
        "MariaDB tests need a server: install one (apt-get install -y mariadb-server \
         mariadb-client openssl), or point {URL_VAR} at one, or set {SKIP_VAR}=1 to skip them"
    );
    let dir = std::env::temp_dir().join(format!("coffer-mariadb-{}", unique_suffix()));
    run_script(&dir, &["--owner-pid", &std::process::id().to_string()]);
    let url = std::fs::read_to_string(dir.join("url"))
        .unwrap()
        .trim()
        .to_owned();
    MariaDb {
        url,
        dir: Some(dir),
    }
}

fn run_script(dir: &Path, extra: &[&str]) {
    let output = Command::new("bash")
        .arg(start_script())
        .arg(dir)
        .args(extra)
        .output()
        .expect("cannot run integration/start-mariadb");
    assert!(
        output.status.success(),
        "integration/start-mariadb failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

impl MariaDb {
    /// Creates a new empty database `coffer_…` and returns its URL (the `coffer` user may
    /// create databases whose names start with `coffer`).
    pub async fn fresh_database(&self) -> String {
        let name = format!("coffer_t{}", unique_suffix());
        let mut conn = sqlx::MySqlConnection::connect(&self.url).await.unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
        )))
        .execute(&mut conn)
        .await
        .unwrap();
        let (base, _) = self.url.rsplit_once('/').unwrap();
        format!("{base}/{name}")
    }

    /// The private server's directory; panics for an external server.
    fn private_dir(&self) -> &Path {
        self.dir
            .as_deref()
            .expect("only a private server has a directory")
    }

    /// The CA that signed the private server's certificate.
    pub fn ca_file(&self) -> PathBuf {
        self.private_dir().join("tls/ca.pem")
    }

    /// A CA that did not sign it.
    pub fn other_ca_file(&self) -> PathBuf {
        self.private_dir().join("tls/other-ca.pem")
    }

    /// The `coffer` user's password.
    pub fn password(&self) -> String {
        std::fs::read_to_string(self.private_dir().join("password"))
            .unwrap()
            .trim()
            .to_owned()
    }

    /// The TCP port of the private server.
    pub fn port(&self) -> u16 {
        std::fs::read_to_string(self.private_dir().join("port"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    /// Runs SQL as the private server's root user, over its socket.
    pub fn root_sql(&self, sql: &str) {
        let socket = self.private_dir().join("sock");
        let output = Command::new("mariadb")
            .arg("--no-defaults")
            .arg(format!("--socket={}", socket.display()))
            .args(["-uroot", "-e", sql])
            .output()
            .expect("cannot run the mariadb client");
        assert!(
            output.status.success(),
            "{sql}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// Stops the private server (SIGTERM by PID) and waits until it has exited.
    pub fn stop(&self) {
        let pid = std::fs::read_to_string(self.private_dir().join("mariadbd.pid"))
            .unwrap()
            .trim()
            .to_owned();
        Command::new("kill").arg(&pid).status().unwrap();
        let proc_dir = PathBuf::from(format!("/proc/{pid}"));
        for _ in 0..400 {
            if !proc_dir.exists() {
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("mariadbd {pid} did not stop");
    }

    /// Starts the stopped private server again, same port, data and password.
    pub fn restart(&self) {
        run_script(self.private_dir(), &["--restart"]);
    }
}
