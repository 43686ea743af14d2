//! Test harness: starts `coffer serve` in a temp data directory with free loopback ports,
//! runs `coffer` subcommands against the same config, collects the server's log.
#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The `coffer` binary: `COFFER_BIN`, else next to this test binary's `deps/` folder.
pub fn coffer_bin() -> PathBuf {
    if let Ok(p) = std::env::var("COFFER_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let bin = dir.join("coffer");
    assert!(
        bin.exists(),
        "{} missing: run `cargo build -p coffer` first (or set COFFER_BIN)",
        bin.display()
    );
    bin
}

/// A `coffer` command with none of this process's `COFFER_*` variables: the binary refuses
/// unknown ones, and a test must not depend on the caller's environment.
pub fn coffer_command() -> Command {
    let mut cmd = Command::new(coffer_bin());
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("COFFER_") {
            cmd.env_remove(key);
        }
    }
    cmd
}

/// Ports handed out by this test process, counted from a per-process start.
static NEXT_PORT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// The first of `len` consecutive ports on 127.0.0.1 that were free when checked. They come
/// from 12000..32000, below Linux's ephemeral range (32768..), so the client sockets tests open
/// by the hundred never take a port a server is about to bind, and one process never hands
/// out the same port twice.
fn free_ports(len: u32) -> u16 {
    let base = (std::process::id() % 40) * 500;
    loop {
        let n = NEXT_PORT.fetch_add(len, std::sync::atomic::Ordering::Relaxed);
        let first = 12000 + (base + n) % (20000 - len);
        if (first..first + len).all(|q| TcpListener::bind(("127.0.0.1", q as u16)).is_ok()) {
            return first as u16;
        }
    }
}

/// A free TCP port on 127.0.0.1 (bound and released; fine for tests).
pub fn free_port() -> u16 {
    free_ports(1)
}

/// Ports of one server instance.
#[derive(Clone, Copy, Debug)]
pub struct Ports {
    pub admin: u16,
    pub sftp: u16,
    pub ftp: u16,
    pub https: u16,
    pub passive_start: u16,
}

impl Ports {
    /// Four distinct free ports and a passive range of 20 free ports that overlaps none of them.
    pub fn pick() -> Self {
        let mut taken = std::collections::BTreeSet::new();
        let mut distinct = || loop {
            let p = free_port();
            if taken.insert(p) {
                break p;
            }
        };
        let (admin, sftp, ftp, https) = (distinct(), distinct(), distinct(), distinct());
        let passive_start = free_ports(20);
        Self {
            admin,
            sftp,
            ftp,
            https,
            passive_start,
        }
    }
}

/// A data directory with a config file, usable with or without a running server.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub ports: Ports,
    pub config: PathBuf,
}

impl Env {
    /// A fresh data directory and config. `extra` is appended to the generated TOML.
    pub fn new(extra: &str) -> Self {
        Self::with_node("test-node", extra)
    }

    /// As [`Env::new`], for a node of a cluster: nodes sharing a database need distinct names.
    pub fn with_node(node_name: &str, extra: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ports = Ports::pick();
        let data = dir.path().join("data");
        let config = dir.path().join("coffer.toml");
        let toml = format!(
            r#"data_dir = "{data}"
node_name = "{node_name}"

[log]
level = "info,coffer=debug,coffer_storage=debug,coffer_protocol=debug"

[admin]
listen = "127.0.0.1:{admin}"

[sftp]
listen = "127.0.0.1:{sftp}"

[ftp]
listen = "127.0.0.1:{ftp}"
passive_ports = "{p0}-{p1}"

[https]
listen = "127.0.0.1:{https}"

[storage]
chunk_size = 65536

[auth]
max_failures = 5
failure_window_secs = 600
lockout_secs = 600
{extra}
"#,
            data = data.display(),
            node_name = node_name,
            admin = ports.admin,
            sftp = ports.sftp,
            ftp = ports.ftp,
            https = ports.https,
            p0 = ports.passive_start,
            p1 = ports.passive_start + 19,
        );
        std::fs::write(&config, toml).unwrap();
        Self { dir, ports, config }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Runs `coffer ARGS` with this config; stdin is given text.
    pub fn coffer(&self, args: &[&str], stdin: &str) -> Output {
        use std::io::Write;
        let mut child = coffer_command()
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    }

    /// Runs `coffer ARGS` and panics with its stderr unless it succeeded; returns stdout.
    pub fn ok(&self, args: &[&str], stdin: &str) -> String {
        let out = self.coffer(args, stdin);
        assert!(
            out.status.success(),
            "coffer {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Creates a user with a password in `tenant` (created if missing).
    pub fn add_user(&self, tenant: &str, name: &str, password: &str) {
        self.ok(
            &["user", "add", name, "--tenant", tenant, "--password-stdin"],
            &format!("{password}\n"),
        );
    }

    /// Every file under the data directory.
    pub fn all_files(&self) -> Vec<PathBuf> {
        walk(&self.data_dir())
    }

    /// Starts `coffer serve` and waits until /healthz answers.
    pub fn serve(&self) -> Server {
        self.serve_with_env(&[])
    }

    /// As [`Env::serve`], with extra environment variables for the server process (for
    /// example glibc's `MALLOC_ARENA_MAX`, as the Dockerfile sets it).
    pub fn serve_with_env(&self, vars: &[(&str, &str)]) -> Server {
        let log = self.dir.path().join("server.log");
        let err = std::fs::File::create(&log).unwrap();
        let child = coffer_command()
            .envs(vars.iter().copied())
            .arg("--config")
            .arg(&self.config)
            .arg("serve")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .unwrap();
        let mut s = Server {
            child: Some(child),
            log,
            admin: SocketAddr::from(([127, 0, 0, 1], self.ports.admin)),
        };
        s.wait_healthy();
        s
    }
}

pub fn walk(p: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            let path = e.path();
            if path.is_dir() {
                out.extend(walk(&path));
            } else {
                out.push(path);
            }
        }
    }
    out
}

/// A running `coffer serve`; stopped (SIGTERM, then SIGKILL) when dropped.
pub struct Server {
    child: Option<Child>,
    pub log: PathBuf,
    pub admin: SocketAddr,
}

impl Server {
    fn wait_healthy(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("coffer serve exited with {status}:\n{}", self.logs());
            }
            if http_get(self.admin, "/healthz").is_some_and(|(code, _)| code == 200) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("coffer serve did not become healthy:\n{}", self.logs());
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM and wait; returns the exit status's success and the log.
    pub fn stop(mut self) -> (bool, String) {
        let ok = self.terminate();
        (ok, self.logs())
    }

    /// SIGKILL: a crash.
    pub fn kill(mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn terminate(&mut self) -> bool {
        let Some(mut c) = self.child.take() else {
            return false;
        };
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = c.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = c.kill();
        let _ = c.wait();
        false
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.terminate();
    }
}

/// A minimal HTTP/1.1 GET over loopback: (status code, body).
pub fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let code = buf.split_whitespace().nth(1)?.parse().ok()?;
    let body = buf.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
    Some((code, body))
}

/// `true` if `needle` occurs in `hay`.
pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && memchr::memmem::find(hay, needle).is_some()
}

/// Deterministic pseudo-random bytes.
pub fn bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Hex SHA-256 of a byte string.
pub fn sha256(data: &[u8]) -> String {
    hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data))
}

/// A random marker string for canary scans.
pub fn marker() -> String {
    let mut b = [0u8; 10];
    aws_lc_rs::rand::fill(&mut b).unwrap();
    format!("CANARY{}", hex::encode(b))
}

/// The marker and the encodings a canary scan looks for: UTF-8, UTF-16 LE/BE, base64 at all alignments.
pub fn canary_forms(marker: &str) -> Vec<Vec<u8>> {
    use base64::Engine;
    let e = &base64::engine::general_purpose::STANDARD;
    let mut forms = vec![
        marker.as_bytes().to_vec(),
        marker.encode_utf16().flat_map(u16::to_le_bytes).collect(),
        marker.encode_utf16().flat_map(u16::to_be_bytes).collect(),
    ];
    for pad in 0..3 {
        let mut v = vec![b'x'; pad];
        v.extend_from_slice(marker.as_bytes());
        let enc = e.encode(&v);
        forms.push(enc.as_bytes()[4..enc.len() - 4].to_vec());
    }
    forms
}

/// Panics if any canary form is in any file under `dir` or in `extra` (e.g. logs).
pub fn assert_no_canary(dir: &Path, extra: &[(&str, &[u8])], marker: &str) {
    let files = walk(dir);
    assert!(!files.is_empty(), "nothing to scan under {}", dir.display());
    let forms = canary_forms(marker);
    for f in &files {
        let data = std::fs::read(f).unwrap_or_default();
        for form in &forms {
            assert!(
                !contains(&data, form),
                "{} contains the canary",
                f.display()
            );
        }
        assert!(
            !f.to_string_lossy().contains(marker),
            "a file path contains the canary"
        );
    }
    for (what, data) in extra {
        for form in &forms {
            assert!(!contains(data, form), "{what} contains the canary");
        }
    }
}

/// Runs an OpenSSH `sftp` batch against 127.0.0.1:`port`, logging in as `user` with a
/// password given through SSH_ASKPASS (no key, one prompt). Files are relative to `cwd`.
pub fn sftp_password_batch(
    port: u16,
    user: &str,
    password: &str,
    script: &str,
    cwd: &Path,
) -> Output {
    sftp_password_batch_from(port, user, password, script, cwd, None)
}

/// As [`sftp_password_batch`], with the client bound to the source address `bind` (OpenSSH
/// `BindAddress`), e.g. `127.0.0.9` for a user apart from a flood coming from 127.0.0.1.
pub fn sftp_password_batch_from(
    port: u16,
    user: &str,
    password: &str,
    script: &str,
    cwd: &Path,
    bind: Option<&str>,
) -> Output {
    use std::os::unix::fs::PermissionsExt;
    let askpass = cwd.join(".askpass.sh");
    std::fs::write(&askpass, format!("#!/bin/sh\necho '{password}'\n")).unwrap();
    std::fs::set_permissions(&askpass, std::fs::Permissions::from_mode(0o700)).unwrap();
    let batch = cwd.join(".password-batch");
    std::fs::write(&batch, script).unwrap();
    Command::new("sftp")
        .current_dir(cwd)
        // Before -b, so it wins over the BatchMode=yes that -b adds: askpass must be asked.
        .args([
            "-o",
            "BatchMode=no",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
        ])
        .args([
            "-o",
            "LogLevel=ERROR",
            "-o",
            "PreferredAuthentications=password",
            "-o",
            "PubkeyAuthentication=no",
        ])
        .args([
            "-o",
            "NumberOfPasswordPrompts=1",
            "-o",
            &format!("BindAddress={}", bind.unwrap_or("127.0.0.1")),
            "-P",
            &port.to_string(),
            "-b",
        ])
        .arg(&batch)
        .arg(format!("{user}@127.0.0.1"))
        .env("SSH_ASKPASS", &askpass)
        .env("SSH_ASKPASS_REQUIRE", "force")
        .env("DISPLAY", ":0")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// Whether a test whose client is missing may be skipped: only when `COFFER_SKIP_<NAME>=1` is set
/// on purpose. Otherwise the test fails with a message naming the install step, so a CI run
/// cannot pass without running it.
pub fn missing_client(skip_name: &str, what: &str, install: &str) -> bool {
    let var = format!("COFFER_SKIP_{skip_name}");
    if std::env::var(&var).is_ok_and(|v| v == "1") {
        println!("SKIPPED on purpose ({var}=1): {what} is missing");
        return true;
    }
    panic!("{what} is missing: {install} (or set {var}=1 to skip this test on purpose)");
}

/// `(VmRSS, VmHWM)` of a process in KiB: its resident memory now and at its peak.
pub fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing from /proc/{pid}/status"))
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// How many file descriptors a process holds open.
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// Raises this process's soft open-file limit to its hard limit (tests that hold thousands of
/// sockets); fails when the hard limit is below `needed`, naming the fix.
pub fn raise_nofile_limit(needed: u64) -> u64 {
    let limit = rlimit::increase_nofile_limit(u64::MAX).unwrap();
    assert!(
        limit >= needed,
        "this test holds {needed} sockets but the open-file limit is {limit}: raise the hard limit (ulimit -Hn)"
    );
    limit
}

/// Waits (at most 30 s) until 127.0.0.1:`port` accepts connections.
pub fn wait_for_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "port {port} did not open");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Generates an unencrypted Ed25519 key pair at `path` (and `path.pub`) with OpenSSH.
pub fn ssh_keygen(path: &Path) {
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path)
        .status()
        .expect("OpenSSH (ssh-keygen) is required: apt-get install openssh-client");
    assert!(st.success(), "ssh-keygen failed");
}
