//! S3 end to end: the real binary with a primary and a replica bucket on two real S3 servers
//! (s3s-fs, which checks SigV4 signatures), driven through the CLI while `serve` replicates.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{self, Env, assert_no_canary, bytes, contains, marker, sha256};

const ACCESS_KEY: &str = "coffer-e2e-access";
const SECRET_KEY: &str = "coffer-e2e-secret-0123456789";
const PASSWORD: &str = "correct horse battery";

/// One s3s-fs process with its data root and request log; killed on drop, and its root and
/// log removed then unless the test failed (a 1 GiB test's two buckets hold over 2 GiB, and
/// every run used to leave them in the temporary directory).
struct S3Server {
    child: Option<Child>,
    port: u16,
    root: PathBuf,
    log: PathBuf,
}

fn s3s_fs_binary() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("s3s-fs"))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    let home = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo/bin/s3s-fs"));
    on_path.into_iter().chain(home).find(|p| p.is_file())
}

impl S3Server {
    /// Starts s3s-fs on `port` (0: a free one) serving `root`, which holds `bucket`.
    fn start(root: &Path, bucket: &str, port: u16) -> Self {
        std::fs::create_dir_all(root.join(bucket)).unwrap();
        let port = if port == 0 {
            harness::free_port()
        } else {
            port
        };
        let mut server = Self {
            child: None,
            port,
            root: root.to_owned(),
            log: root.with_extension("log"),
        };
        server.restart();
        server
    }

    /// Runs s3s-fs (again) on this server's root and port, and waits until it listens.
    fn restart(&mut self) {
        self.stop();
        let binary = s3s_fs_binary().unwrap_or_else(|| {
            panic!(
                "s3s-fs is not installed: run integration/start-s3 once (or set COFFER_SKIP_S3=1)"
            )
        });
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let port = self.port;
        let child = Command::new(binary)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
            .arg(&self.root)
            .env("RUST_LOG", "s3s=debug,s3s_fs=debug,info")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "s3s-fs did not listen on {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The S3 operations this server resolved, from its debug log.
    fn operations(&self) -> Vec<String> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.lines()
            .filter_map(|l| l.split("op: ").nth(1))
            .map(|op| {
                op.split(|c: char| !c.is_ascii_alphanumeric())
                    .next()
                    .unwrap_or("")
                    .to_owned()
            })
            .filter(|op| !op.is_empty())
            .collect()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!("kept for diagnosis: {}", self.root.display());
            return;
        }
        let _ = std::fs::remove_dir_all(&self.root);
        let _ = std::fs::remove_file(&self.log);
        // The directory both servers of a test share goes with the second one.
        if let Some(parent) = self.root.parent() {
            let _ = std::fs::remove_dir(parent);
        }
    }
}

fn store_toml(name: &str, bucket: &str, port: u16) -> String {
    format!(
        "[storage.{name}]\nkind = \"s3\"\nbucket = \"{bucket}\"\nregion = \"us-east-1\"\n\
         endpoint = \"http://127.0.0.1:{port}\"\npath_style = true\n\
         access_key_id = \"{ACCESS_KEY}\"\nsecret_access_key = \"{SECRET_KEY}\"\n"
    )
}

struct Setup {
    env: Env,
    primary: S3Server,
    replica: S3Server,
}

/// Two S3 servers, a config using them, and a user; `None` when COFFER_SKIP_S3=1.
fn setup() -> Option<Setup> {
    if std::env::var_os("COFFER_SKIP_S3").is_some() {
        println!("COFFER_SKIP_S3 is set: skipping the S3 end-to-end test");
        return None;
    }
    let roots = tempfile::tempdir().unwrap().keep();
    let primary = S3Server::start(&roots.join("primary"), "coffer-primary", 0);
    let replica = S3Server::start(&roots.join("replica"), "coffer-replica", 0);
    let extra = store_toml("primary", "coffer-primary", primary.port)
        + &store_toml("replica", "coffer-replica", replica.port);
    let env = Env::new(&extra);
    env.add_user("acme", "alice", PASSWORD);
    Some(Setup {
        env,
        primary,
        replica,
    })
}

fn put(env: &Env, local: &Path, remote: &str) {
    env.ok(
        &[
            "files",
            "put",
            local.to_str().unwrap(),
            remote,
            "--user",
            "alice",
        ],
        "",
    );
}

fn get(env: &Env, remote: &str) -> Vec<u8> {
    let out = env.dir.path().join("got.bin");
    let _ = std::fs::remove_file(&out);
    env.ok(
        &[
            "files",
            "get",
            remote,
            out.to_str().unwrap(),
            "--user",
            "alice",
        ],
        "",
    );
    std::fs::read(out).unwrap()
}

fn pending(env: &Env) -> u64 {
    let status = env.ok(&["replication", "status"], "");
    status
        .lines()
        .find_map(|l| l.strip_prefix("pending: "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no pending count in: {status}"))
}

fn wait_replicated(env: &Env, within: Duration) {
    let deadline = Instant::now() + within;
    while pending(env) > 0 {
        assert!(Instant::now() < deadline, "replication did not catch up");
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn write_local(env: &Env, name: &str, data: &[u8]) -> PathBuf {
    let p = env.dir.path().join(name);
    std::fs::write(&p, data).unwrap();
    p
}

#[test]
fn both_buckets_hold_only_ciphertext_under_random_keys_and_fsck_deep_is_clean() {
    let Some(s) = setup() else { return };
    let server = s.env.serve();
    let m = marker();
    let mut small = bytes(300_000, 1);
    small[1000..1000 + m.len()].copy_from_slice(m.as_bytes());
    let big = bytes(20 * 1024 * 1024 + 5, 2); // several multipart parts
    let small_path = write_local(&s.env, "small.bin", &small);
    let big_path = write_local(&s.env, "big.bin", &big);
    s.env.ok(
        &["files", "mkdir", &format!("/dir-{m}"), "--user", "alice"],
        "",
    );
    put(&s.env, &small_path, &format!("/dir-{m}/file-{m}.txt"));
    put(&s.env, &big_path, "/big.bin");
    wait_replicated(&s.env, Duration::from_secs(60));

    assert_eq!(
        get(&s.env, &format!("/dir-{m}/file-{m}.txt")),
        small,
        "the marker is readable"
    );
    assert_eq!(sha256(&get(&s.env, "/big.bin")), sha256(&big));
    let fsck = s.env.ok(&["fsck", "--deep"], "");
    assert!(fsck.contains("2 files, 0 problems"), "{fsck}");

    // Object names in both buckets are 32 random hex digits, and both hold the same set.
    let names = |root: &Path| -> Vec<String> {
        let mut v: Vec<String> = harness::walk(root)
            .into_iter()
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .filter(|n| !n.starts_with('.'))
            .collect();
        v.sort();
        v
    };
    let (p_names, r_names) = (names(&s.primary.root), names(&s.replica.root));
    assert_eq!(p_names.len(), 2, "{p_names:?}");
    assert_eq!(p_names, r_names);
    assert!(
        p_names
            .iter()
            .all(|n| n.len() == 32 && n.bytes().all(|b| b.is_ascii_hexdigit()))
    );

    let (stopped, log) = server.stop();
    assert!(stopped);
    assert_no_canary(&s.primary.root, &[("server log", log.as_bytes())], &m);
    assert_no_canary(&s.replica.root, &[], &m);
    assert_no_canary(&s.env.data_dir(), &[], &m);
    for (name, srv) in [("primary", &s.primary), ("replica", &s.replica)] {
        let ops = srv.operations();
        assert!(
            ops.iter()
                .any(|o| o.starts_with("Put") || o.contains("Multipart")),
            "{name}: {ops:?}"
        );
        let bad: Vec<_> = ops
            .iter()
            .filter(|o| o.starts_with("List") || o.starts_with("Delete"))
            .collect();
        assert!(
            bad.is_empty(),
            "{name} saw List/Delete calls in normal operation: {bad:?}"
        );
        assert!(!contains(&std::fs::read(&srv.log).unwrap(), m.as_bytes()));
    }
}

#[test]
fn downloads_are_served_from_the_replica_while_the_primary_is_down() {
    let Some(mut s) = setup() else { return };
    let server = s.env.serve();
    let data = bytes(3 * 1024 * 1024 + 17, 3);
    let local = write_local(&s.env, "f.bin", &data);
    put(&s.env, &local, "/f.bin");
    wait_replicated(&s.env, Duration::from_secs(60));
    s.primary.stop();
    assert_eq!(sha256(&get(&s.env, "/f.bin")), sha256(&data));
    drop(server);
}

#[test]
fn uploads_succeed_while_the_replica_is_down_and_replication_catches_up() {
    let Some(mut s) = setup() else { return };
    let server = s.env.serve();
    s.replica.stop();
    let data = bytes(2 * 1024 * 1024, 4);
    let local = write_local(&s.env, "g.bin", &data);
    put(&s.env, &local, "/g.bin");
    assert_eq!(get(&s.env, "/g.bin"), data, "the primary serves it at once");
    std::thread::sleep(Duration::from_secs(3));
    assert!(pending(&s.env) >= 1, "the copy waits for the replica");
    s.replica.restart();
    wait_replicated(&s.env, Duration::from_secs(90));
    let fsck = s.env.ok(&["fsck", "--deep"], "");
    assert!(fsck.contains("0 problems"), "{fsck}");
    drop(server);
}

/// A `files put` reading from a FIFO, so the test decides when the upload is mid-way.
struct PutFromFifo {
    child: std::process::Child,
    fifo: Option<std::fs::File>,
}

impl PutFromFifo {
    fn start(env: &Env, remote: &str) -> Self {
        let fifo_path = env.dir.path().join("upload.fifo");
        let _ = std::fs::remove_file(&fifo_path);
        assert!(
            Command::new("mkfifo")
                .arg(&fifo_path)
                .status()
                .unwrap()
                .success()
        );
        let child = harness::coffer_command()
            .arg("--config")
            .arg(&env.config)
            .args([
                "files",
                "put",
                fifo_path.to_str().unwrap(),
                remote,
                "--user",
                "alice",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Opening for writing waits until the command opened the FIFO for reading.
        let fifo = std::fs::OpenOptions::new()
            .write(true)
            .open(&fifo_path)
            .unwrap();
        Self {
            child,
            fifo: Some(fifo),
        }
    }

    fn send(&mut self, data: &[u8]) {
        use std::io::Write;
        self.fifo.as_mut().unwrap().write_all(data).unwrap();
    }

    /// Closes the FIFO (end of file) and waits: (success, stderr).
    fn finish(mut self) -> (bool, String) {
        self.fifo = None;
        let out = self.child.wait_with_output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

fn listing(env: &Env) -> String {
    env.ok(&["files", "ls", "/", "--user", "alice"], "")
}

#[test]
fn primary_stopped_mid_upload_fails_the_upload_and_commits_nothing() {
    let Some(mut s) = setup() else { return };
    let mut put = PutFromFifo::start(&s.env, "/half.bin");
    put.send(&bytes(40 * 1024 * 1024, 5)); // more than two multipart parts are on their way
    s.primary.stop();
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        put.send(&bytes(8 << 20, 6))
    }));
    let (ok, stderr) = put.finish();
    assert!(!ok, "the upload must fail when the primary store is gone");
    assert!(!stderr.trim().is_empty());
    s.primary.restart();
    assert!(
        !listing(&s.env).contains("half.bin"),
        "no half file is visible"
    );
    let fsck = s.env.ok(&["fsck"], "");
    assert!(fsck.contains("0 files, 0 problems"), "{fsck}");
}

#[test]
fn a_killed_upload_leaves_no_visible_file_and_the_next_start_cleans_its_spool() {
    let Some(s) = setup() else { return };
    let mut put = PutFromFifo::start(&s.env, "/killed.bin");
    put.send(&bytes(24 * 1024 * 1024, 7));
    let spool = s.env.data_dir().join("spool");
    let cli_spools = || -> Vec<PathBuf> {
        std::fs::read_dir(&spool)
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.path())
                    .filter(|p| p.is_dir())
                    .collect()
            })
            .unwrap_or_default()
    };
    assert_eq!(cli_spools().len(), 1, "the command spools its upload");
    let _ = put.child.kill(); // SIGKILL, mid-upload
    let _ = put.child.wait();
    put.fifo = None;
    assert!(!listing(&s.env).contains("killed.bin"));
    let server = s.env.serve(); // recovery at start
    assert!(
        cli_spools().is_empty(),
        "recovery removed the dead command's spool"
    );
    let fsck = s.env.ok(&["fsck"], "");
    assert!(fsck.contains("0 files, 0 problems"), "{fsck}");
    drop(server);
}

#[test]
fn sftp_uploads_onto_s3_leave_only_ciphertext_in_both_buckets_and_pass_fsck_deep() {
    if std::env::var_os("COFFER_SKIP_S3").is_some() {
        println!("COFFER_SKIP_S3 is set: skipping");
        return;
    }
    let roots = tempfile::tempdir().unwrap().keep();
    let primary = S3Server::start(&roots.join("primary"), "coffer-primary", 0);
    let replica = S3Server::start(&roots.join("replica"), "coffer-replica", 0);
    let extra = store_toml("primary", "coffer-primary", primary.port)
        + &store_toml("replica", "coffer-replica", replica.port);
    let site = crate::sftp::Site::with_config("", &extra);
    let m = marker();
    let big = bytes(1 << 30, 11);
    site.write_local("big.bin", &big);
    let mut script = format!("put big.bin\nmkdir dir-{m}\n");
    for i in 0..500 {
        let name = format!("f-{m}-{i} &+é.txt");
        site.write_local(&name, format!("{m} small file {i}").as_bytes());
        script.push_str(&format!("put \"{name}\" \"dir-{m}/{name}\"\n"));
    }
    site.sftp_ok(&script);
    site.sftp_ok("get big.bin big.back\n");
    assert_eq!(
        sha256(&std::fs::read(site.path("big.back")).unwrap()),
        sha256(&big)
    );
    wait_replicated(&site.env, Duration::from_secs(300));
    let fsck = site.env.ok(&["fsck", "--deep"], "");
    assert!(fsck.contains("501 files, 0 problems"), "{fsck}");
    let log = site.server().logs();
    // Every name carries the marker, so the scan covers every file and folder name.
    assert_no_canary(&primary.root, &[("server log", log.as_bytes())], &m);
    assert_no_canary(&replica.root, &[], &m);
    assert_no_canary(&site.env.data_dir(), &[], &m);
}

#[test]
fn serve_killed_mid_upload_leaves_no_file_and_restarts_clean() {
    if std::env::var_os("COFFER_SKIP_S3").is_some() {
        println!("COFFER_SKIP_S3 is set: skipping");
        return;
    }
    let roots = tempfile::tempdir().unwrap().keep();
    let primary = S3Server::start(&roots.join("primary"), "coffer-primary", 0);
    let replica = S3Server::start(&roots.join("replica"), "coffer-replica", 0);
    let extra = store_toml("primary", "coffer-primary", primary.port)
        + &store_toml("replica", "coffer-replica", replica.port);
    let mut site = crate::sftp::Site::with_config("", &extra);
    site.write_local("big.bin", &bytes(1 << 30, 12));
    let script = site.path(".kill-batch");
    std::fs::write(&script, "put big.bin\n").unwrap();
    let mut upload = site
        .sftp_cmd(&[])
        .arg("-b")
        .arg(&script)
        .arg(format!("{}@127.0.0.1", site.user))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the upload is spooling (sealed chunks on disk, parts going to S3), then crash.
    let spool = site.env.data_dir().join("spool");
    let deadline = Instant::now() + Duration::from_secs(30);
    let spooled = || {
        harness::walk(&spool).iter().any(|p| {
            p.extension().is_some_and(|e| e == "spool")
                && std::fs::metadata(p).is_ok_and(|m| m.len() > 20 << 20)
        })
    };
    while !spooled() {
        assert!(
            Instant::now() < deadline,
            "the upload never reached the spool"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    site.server.take().unwrap().kill();
    let _ = upload.wait();
    assert!(
        harness::walk(&spool)
            .iter()
            .any(|p| p.extension().is_some_and(|e| e == "spool")),
        "the crash left a spool file"
    );

    let server = site.env.serve();
    assert!(
        !harness::walk(&spool)
            .iter()
            .any(|p| p.extension().is_some_and(|e| e == "spool")),
        "recovery at start removed the spool file"
    );
    let listing = site.env.ok(&["files", "ls", "/", "--user", "alice"], "");
    assert!(
        !listing.contains("big.bin"),
        "no half file is visible: {listing}"
    );
    let fsck = site.env.ok(&["fsck"], "");
    assert!(fsck.contains("0 files, 0 problems"), "{fsck}");
    drop(server);
}

/// Small files inline in their rows on an S3 deployment: an SFTP upload of a small file makes
/// no request to the primary bucket, which ends up holding only the large file's object,
/// while the replica bucket gets a verified copy of every file.
#[test]
fn small_sftp_uploads_onto_s3_make_no_primary_object_and_are_replicated() {
    if std::env::var_os("COFFER_SKIP_S3").is_some() {
        println!("COFFER_SKIP_S3 is set: skipping");
        return;
    }
    let roots = tempfile::tempdir().unwrap().keep();
    let primary = S3Server::start(&roots.join("primary"), "coffer-primary", 0);
    let replica = S3Server::start(&roots.join("replica"), "coffer-replica", 0);
    let extra = store_toml("primary", "coffer-primary", primary.port)
        + &store_toml("replica", "coffer-replica", replica.port)
        + "[uploads]\ninline_max_bytes = 16384\n";
    let site = crate::sftp::Site::with_config("", &extra);
    let large = bytes(3 * 1024 * 1024 + 1, 7);
    site.write_local("large.bin", &large);
    site.sftp_ok("put large.bin\n");
    // Writes only: the replicator may still be reading the large file's object.
    let writes = |ops: Vec<String>| -> Vec<String> {
        ops.into_iter()
            .filter(|o| o.starts_with("Put") || o.contains("Multipart"))
            .collect()
    };
    let puts_before = writes(primary.operations()).len();
    let mut script = String::new();
    let mut back = String::new();
    for i in 0..10u64 {
        site.write_local(&format!("s{i}"), &bytes(4_096, i));
        script.push_str(&format!("put s{i}\n"));
        back.push_str(&format!("get s{i} s{i}.back\n"));
    }
    site.sftp_ok(&script);
    let small_ops = writes(primary.operations())[puts_before..].to_vec();
    assert!(
        small_ops.is_empty(),
        "small uploads made requests to the primary bucket: {small_ops:?}"
    );
    site.sftp_ok(&back);
    for i in 0..10u64 {
        assert_eq!(
            std::fs::read(site.path(&format!("s{i}.back"))).unwrap(),
            bytes(4_096, i)
        );
    }
    wait_replicated(&site.env, Duration::from_secs(120));
    let names = |root: &Path| -> usize {
        harness::walk(root)
            .into_iter()
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .filter(|n| n.len() == 32 && n.bytes().all(|b| b.is_ascii_hexdigit()))
            .count()
    };
    assert_eq!(
        names(&primary.root),
        1,
        "only the large file is in the primary bucket"
    );
    assert_eq!(
        names(&replica.root),
        11,
        "every file is in the replica bucket"
    );
    let fsck = site.env.ok(&["fsck", "--deep"], "");
    assert!(fsck.contains("11 files, 0 problems"), "{fsck}");
}
