//! Two Coffer nodes on one MariaDB and one pair of stores: what one node writes the other
//! serves; a database outage is a clear temporary error and both recover without a restart.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::harness::{
    Env, Server, bytes, canary_forms, contains, http_get, marker, sftp_password_batch, sha256,
};

const PASSWORD: &str = "correct horse battery";

/// A private MariaDB started by `integration/start-mariadb`; it stops when this test process exits.
struct MariaDb {
    dir: PathBuf,
    port: u16,
}

impl MariaDb {
    fn start() -> Option<Self> {
        if std::env::var_os("COFFER_SKIP_MYSQL").is_some() {
            println!("COFFER_SKIP_MYSQL is set: skipping the two-node MariaDB test");
            return None;
        }
        let dir = tempfile::tempdir().unwrap().keep().join("mariadb");
        let db = Self { dir, port: 0 };
        db.run_script(&["--owner-pid", &std::process::id().to_string()]);
        let port = std::fs::read_to_string(db.dir.join("port"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        Some(Self { port, ..db })
    }

    fn run_script(&self, args: &[&str]) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("start-mariadb");
        let out = Command::new(script)
            .arg(&self.dir)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "start-mariadb failed (install mariadb-server mariadb-client openssl, or set COFFER_SKIP_MYSQL=1): {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn stop(&self) {
        let pid = std::fs::read_to_string(self.dir.join("server.pid")).unwrap();
        let _ = Command::new("kill").arg(pid.trim()).status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
            assert!(Instant::now() < deadline, "mariadbd did not stop");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A full `mariadb-dump` of the coffer database, as an attacker holding a backup would see it.
    fn dump(&self) -> Vec<u8> {
        let password = std::fs::read_to_string(self.dir.join("password")).unwrap();
        let out = Command::new("mariadb-dump")
            .args([
                "-h",
                "127.0.0.1",
                "-P",
                &self.port.to_string(),
                "-u",
                "coffer",
            ])
            .arg(format!("--password={}", password.trim()))
            .arg(format!(
                "--ssl-ca={}",
                self.dir.join("tls/ca.pem").display()
            ))
            .args(["--single-transaction", "--hex-blob=0", "coffer"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mariadb-dump failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.stdout.len() > 1000,
            "the dump holds the schema and rows"
        );
        out.stdout
    }

    fn restart(&self) {
        self.run_script(&["--restart"]);
    }

    /// The `[metadata]` section every node uses: TLS verified against the test CA.
    fn metadata_toml(&self) -> String {
        format!(
            "[metadata]\nurl = \"mysql://coffer@127.0.0.1:{port}/coffer\"\npassword_file = \"{pw}\"\n\
             tls = \"verify-full\"\nca_file = \"{ca}\"\nconnect_timeout_secs = 2\nmax_retries = 1\n",
            port = self.port,
            pw = self.dir.join("password").display(),
            ca = self.dir.join("tls/ca.pem").display(),
        )
    }
}

/// Node B's config: the same database, and node A's stores and master keys.
fn shared_with(a: &Env, db: &MariaDb) -> String {
    let d = a.data_dir();
    format!(
        "{meta}[storage.primary]\nkind = \"local\"\npath = \"{p}\"\n[storage.replica]\nkind = \"local\"\npath = \"{r}\"\n\
         [keys.primary]\nkind = \"local\"\npath = \"{kp}\"\n[keys.replica]\nkind = \"local\"\npath = \"{kr}\"\n",
        meta = db.metadata_toml(),
        p = d.join("store/primary").display(),
        r = d.join("store/replica").display(),
        kp = d.join("keys/primary.key").display(),
        kr = d.join("keys/replica.key").display(),
    )
}

fn ready(server: &Server) -> u16 {
    http_get(server.admin, "/readyz")
        .map(|(code, _)| code)
        .unwrap_or(0)
}

fn wait_ready(server: &Server, want: u16, within: Duration) {
    let deadline = Instant::now() + within;
    while ready(server) != want {
        assert!(
            Instant::now() < deadline,
            "/readyz did not become {want}:\n{}",
            server.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn two_nodes_share_one_database_and_survive_a_database_restart() {
    let Some(db) = MariaDb::start() else { return };
    let a = Env::with_node("node-a", &db.metadata_toml());
    a.ok(&["migrate"], "");
    // Node A creates the key files and stores on its first command; B then shares them.
    a.add_user("acme", "alice", PASSWORD);
    let b = Env::with_node("node-b", &shared_with(&a, &db));
    let node_a = a.serve();
    let node_b = b.serve();
    assert_eq!((ready(&node_a), ready(&node_b)), (200, 200));

    // Written through A, listed and read through B.
    let data = bytes(5 * 1024 * 1024 + 3, 9);
    let local = a.dir.path().join("up.bin");
    std::fs::write(&local, &data).unwrap();
    a.ok(
        &[
            "files",
            "put",
            local.to_str().unwrap(),
            "/shared.bin",
            "--user",
            "alice",
        ],
        "",
    );
    let listing = b.ok(&["files", "ls", "/", "--user", "alice"], "");
    assert!(
        listing.contains("shared.bin") && listing.contains(&data.len().to_string()),
        "{listing}"
    );
    let out = b.dir.path().join("down.bin");
    b.ok(
        &[
            "files",
            "get",
            "/shared.bin",
            out.to_str().unwrap(),
            "--user",
            "alice",
        ],
        "",
    );
    assert_eq!(sha256(&std::fs::read(&out).unwrap()), sha256(&data));
    // A user added through B logs into the same namespace on A.
    b.add_user("acme", "bob", PASSWORD);
    assert!(a.ok(&["user", "list"], "").contains("bob"));

    // A password changed through A's CLI refuses the old one on B's HTTPS at once, though B
    // verified (and cached) it a moment ago.
    a.add_user("acme", "carol", PASSWORD);
    let list_on_b = |password: &str| -> String {
        let out = std::process::Command::new("curl")
            .args(["-sk", "-o", "/dev/null", "-w", "%{http_code}", "-u"])
            .arg(format!("carol:{password}"))
            .arg(format!("https://127.0.0.1:{}/api/v1/list/", b.ports.https))
            .output()
            .expect("curl is required: apt-get install curl");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(list_on_b(PASSWORD), "200");
    assert_eq!(list_on_b(PASSWORD), "200");
    a.ok(
        &["user", "passwd", "carol", "--password-stdin"],
        "carol's new passphrase\n",
    );
    assert_eq!(list_on_b(PASSWORD), "401", "B still takes the old password");
    assert_eq!(list_on_b("carol's new passphrase"), "200");

    // Through SFTP: names and content carrying a marker go in on A and are listed on B; a
    // full database dump holds none of them.
    let m = marker();
    let work = a.dir.path().join("sftp-work");
    std::fs::create_dir_all(&work).unwrap();
    std::fs::write(work.join(format!("file-{m}.txt")), format!("content {m}")).unwrap();
    let script = format!("mkdir dir-{m}\nput file-{m}.txt dir-{m}/file-{m}.txt\n");
    let up = sftp_password_batch(a.ports.sftp, "alice", PASSWORD, &script, &work);
    assert!(
        up.status.success(),
        "sftp upload on A: {}",
        String::from_utf8_lossy(&up.stderr)
    );
    let ls = sftp_password_batch(
        b.ports.sftp,
        "alice",
        PASSWORD,
        &format!("ls dir-{m}\n"),
        &work,
    );
    assert!(
        String::from_utf8_lossy(&ls.stdout).contains(&format!("file-{m}.txt")),
        "B lists what A stored"
    );
    let dump = db.dump();
    for form in canary_forms(&m) {
        assert!(
            !contains(&dump, &form),
            "the database dump holds a plaintext name or content"
        );
    }

    // Failed logins counted on A lock the account on B too (the counter is in the database).
    for _ in 0..5 {
        assert!(
            !sftp_password_batch(a.ports.sftp, "bob", "wrong password!", "ls\n", &work)
                .status
                .success()
        );
    }
    assert!(
        !sftp_password_batch(b.ports.sftp, "bob", PASSWORD, "ls\n", &work)
            .status
            .success(),
        "locked on B after failures on A"
    );
    assert!(
        node_a.logs().contains("locked out"),
        "the lockout is logged"
    );

    // The database goes away: readiness says so, commands fail with a temporary error.
    db.stop();
    wait_ready(&node_a, 503, Duration::from_secs(30));
    wait_ready(&node_b, 503, Duration::from_secs(30));
    let failed = b.coffer(&["files", "ls", "/", "--user", "alice"], "");
    assert!(!failed.status.success());
    assert!(!String::from_utf8_lossy(&failed.stderr).trim().is_empty());
    assert!(
        http_get(node_a.admin, "/healthz").is_some_and(|(c, _)| c == 200),
        "the process stays up"
    );

    // It comes back: both running nodes serve again without a restart.
    db.restart();
    wait_ready(&node_a, 200, Duration::from_secs(60));
    wait_ready(&node_b, 200, Duration::from_secs(60));
    let listing = a.ok(&["files", "ls", "/", "--user", "alice"], "");
    assert!(listing.contains("shared.bin"), "{listing}");
    let (ok_a, _) = node_a.stop();
    let (ok_b, _) = node_b.stop();
    assert!(ok_a && ok_b, "both nodes stop cleanly");
}
