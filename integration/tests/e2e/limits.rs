//! Holding up under load and attack (issue 14), end to end with real clients: floods of
//! connections that never log in (banner-only SSH, idle FTP) cannot keep real users out on any
//! of the three protocols, are bounded per address and in all, and are closed after the login
//! grace time; 200 concurrent OpenSSH `sftp` sessions each move 1 MiB up and down intact while
//! the server's memory stays within the bound docs/PERFORMANCE.md states.

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Barrier, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;

use crate::harness::{self, Env, Server, bytes, sha256};

const PASSWORD: &str = "correct horse battery";
/// `limits.pre_auth_per_address` and `limits.pre_auth_connections` as shipped (docs/CONFIG.md):
/// the flood test runs with the defaults, only the grace time is shortened.
const PER_ADDRESS: usize = 32;
const TOTAL: usize = 256;
/// The login grace time the flood test configures (`limits.login_grace_secs`).
const GRACE: Duration = Duration::from_secs(4);
/// "At once": a refused connection is closed well within this.
const AT_ONCE: Duration = Duration::from_secs(1);
/// A real login from another address must finish within this while a flood is held.
const LOGIN_BOUND: Duration = Duration::from_secs(2);

/// A server with user bob (tenant acme, password and SSH key) and every port open.
struct Site {
    env: Env,
    server: Server,
    key: PathBuf,
    local: PathBuf,
}

impl Site {
    fn start(extra: &str, server_env: &[(&str, &str)]) -> Self {
        let env = Env::new(extra);
        let key = env.dir.path().join("id_ed25519");
        harness::ssh_keygen(&key);
        let pubkey = format!("{}.pub", key.display());
        env.ok(
            &[
                "user",
                "add",
                "bob",
                "--tenant",
                "acme",
                "--password-stdin",
                "--ssh-key",
                &pubkey,
            ],
            &format!("{PASSWORD}\n"),
        );
        let local = env.dir.path().join("local");
        std::fs::create_dir_all(&local).unwrap();
        let server = env.serve_with_env(server_env);
        for port in [env.ports.sftp, env.ports.ftp, env.ports.https] {
            harness::wait_for_port(port);
        }
        Self {
            env,
            server,
            key,
            local,
        }
    }

    fn pid(&self) -> u32 {
        self.server.pid()
    }

    /// One curl request as bob from `bind` to `url`; panics unless it succeeds.
    fn curl_ok(&self, url: &str, bind: &str) {
        let mut cmd = Command::new("curl");
        if url.starts_with("ftp:") {
            cmd.arg("--ssl-reqd");
        }
        let out = cmd
            .args(["-s", "-S", "-k", "--fail", "--max-time", "20"])
            .args(["--interface", bind, "-u", &format!("bob:{PASSWORD}")])
            .arg(url)
            .output()
            .expect("curl is required: apt-get install curl");
        assert!(
            out.status.success(),
            "curl {url} from {bind}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// An OpenSSH password login from `bind` listing the home: its success and time.
    fn sftp_login(&self, bind: &str) -> (bool, Duration, String) {
        let dir = self.env.dir.path().join(format!("login-{bind}"));
        std::fs::create_dir_all(&dir).unwrap();
        let t = Instant::now();
        let out = harness::sftp_password_batch_from(
            self.env.ports.sftp,
            "bob",
            PASSWORD,
            "ls\n",
            &dir,
            Some(bind),
        );
        (
            out.status.success(),
            t.elapsed(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Logs bob in from `bind` over SFTP, FTPES and HTTPS at the same time; returns each
    /// protocol's time, and panics if one fails.
    fn logins_from(&self, bind: &str) -> Vec<(&'static str, Duration)> {
        let ftp = format!("ftp://127.0.0.1:{}/", self.env.ports.ftp);
        let https = format!("https://127.0.0.1:{}/api/v1/list", self.env.ports.https);
        std::thread::scope(|s| {
            let sftp = s.spawn(|| {
                let (ok, took, err) = self.sftp_login(bind);
                assert!(ok, "sftp login from {bind}: {err}");
                ("sftp", took)
            });
            let ftp = s.spawn(|| {
                let t = Instant::now();
                self.curl_ok(&ftp, bind);
                ("ftpes", t.elapsed())
            });
            let https = s.spawn(|| {
                let t = Instant::now();
                self.curl_ok(&https, bind);
                ("https", t.elapsed())
            });
            vec![
                sftp.join().unwrap(),
                ftp.join().unwrap(),
                https.join().unwrap(),
            ]
        })
    }
}

/// What one connection of a flood saw.
#[derive(Debug)]
struct Held {
    /// The bytes the server sent.
    got: Vec<u8>,
    /// How long after the connect the server closed it; `None`: still open at the deadline.
    closed_after: Option<Duration>,
}

impl Held {
    fn starts_with(&self, prefix: &str) -> bool {
        self.got.starts_with(prefix.as_bytes())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.got).into_owned()
    }
}

/// Opens `n` connections from `source` to 127.0.0.1:`port` one after another (so the server
/// admits them in order), each sending `hello(i)` if any and then nothing; returns the tasks
/// reading what the server sends until it closes the connection (or `limit` passes).
async fn flood(
    port: u16,
    source: Ipv4Addr,
    n: usize,
    hello: fn(usize) -> Option<&'static [u8]>,
    limit: Duration,
) -> Vec<JoinHandle<Held>> {
    let target = SocketAddr::from(([127, 0, 0, 1], port));
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::from((source, 0))).unwrap();
        let stream = socket.connect(target).await.unwrap();
        let started = Instant::now();
        tasks.push(tokio::spawn(hold(stream, hello(i), started, limit)));
    }
    tasks
}

async fn hold(
    mut stream: tokio::net::TcpStream,
    hello: Option<&'static [u8]>,
    started: Instant,
    limit: Duration,
) -> Held {
    if let Some(line) = hello {
        // A refused connection may already be closed: that is what the test looks at.
        let _ = stream.write_all(line).await;
    }
    let deadline = tokio::time::Instant::from_std(started + limit);
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let closed_after = loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => break None,
            Ok(Ok(0) | Err(_)) => break Some(started.elapsed()),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    };
    Held { got, closed_after }
}

/// Half the SSH flood says its banner and then nothing, the other half says nothing at all.
fn ssh_banner_or_nothing(i: usize) -> Option<&'static [u8]> {
    i.is_multiple_of(2)
        .then_some(b"SSH-2.0-OpenSSH_9.2 banner-only\r\n".as_slice())
}

fn silent(_: usize) -> Option<&'static [u8]> {
    None
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

/// Splits a flood's outcomes into the admitted ones (greeted with `admitted`) and the others,
/// checking that the others were closed at once and the admitted ones after the grace time.
fn admitted_and_refused(what: &str, held: &[Held], admitted: &str) -> (usize, usize) {
    let (mut ok, mut refused) = (0, 0);
    for (i, h) in held.iter().enumerate() {
        let closed = h
            .closed_after
            .unwrap_or_else(|| panic!("{what} #{i} was never closed: {:?}", h.text()));
        if h.starts_with(admitted) {
            assert!(
                closed >= GRACE - Duration::from_millis(300) && closed <= GRACE + AT_ONCE * 2,
                "{what} #{i}, admitted, was closed after {closed:?}, not after the grace time ({GRACE:?})"
            );
            ok += 1;
        } else {
            assert!(
                closed < AT_ONCE,
                "{what} #{i}, refused, was closed only after {closed:?}: {:?}",
                h.text()
            );
            refused += 1;
        }
    }
    (ok, refused)
}

/// Issue 14: 600 banner-only SSH connections and 2,000 idle FTP connections from one address
/// keep no real user out: logins from 127.0.0.9 on SFTP, FTPES and HTTPS succeed within 2 s
/// while they are held. Only `pre_auth_per_address` (32) of each flood are admitted, the rest
/// closed at once (FTP: `421`), so the server holds a bounded number of descriptors; the
/// admitted ones are closed after the login grace time. Then floods from 9 addresses fill
/// `pre_auth_connections` (256): the 257th stranger, a real user too, is refused at once —
/// the documented limit of a per-node pool — until the grace time empties it.
#[test]
fn banner_only_ssh_and_idle_ftp_floods_keep_no_user_out_and_are_closed_after_the_grace_time() {
    harness::raise_nofile_limit(4096);
    let site = Site::start(
        &format!("[limits]\nlogin_grace_secs = {}\n", GRACE.as_secs()),
        &[],
    );
    let pid = site.pid();
    let idle_fds = harness::open_fds(pid);
    let rt = runtime();
    let limit = GRACE + Duration::from_secs(10);
    let one = Ipv4Addr::new(127, 0, 0, 1);

    let started = Instant::now();
    let ssh = rt.block_on(flood(
        site.env.ports.sftp,
        one,
        600,
        ssh_banner_or_nothing,
        limit,
    ));
    let ftp = rt.block_on(flood(site.env.ports.ftp, one, 2000, silent, limit));
    let opened = started.elapsed();
    // The refused ones are closed by now; what the server holds is bounded by the limits.
    std::thread::sleep(Duration::from_millis(300));
    let held_fds = harness::open_fds(pid);
    let logins = site.logins_from("127.0.0.9");
    let logged_in = started.elapsed();
    println!(
        "flood: 600 ssh + 2000 ftp connections opened in {opened:?}; server fds {idle_fds} idle, {held_fds} held; logins from 127.0.0.9: {logins:?}"
    );
    for (protocol, took) in &logins {
        assert!(
            *took < LOGIN_BOUND,
            "{protocol} login took {took:?} during the flood"
        );
    }
    assert!(
        logged_in < GRACE - Duration::from_millis(500),
        "the logins ran while the flood was held ({logged_in:?})"
    );
    assert!(
        held_fds <= idle_fds + 2 * PER_ADDRESS + 16,
        "the server holds {held_fds} descriptors (idle {idle_fds}) for 2,600 strangers"
    );

    let ssh: Vec<Held> = rt.block_on(async {
        let mut out = Vec::new();
        for t in ssh {
            out.push(t.await.unwrap());
        }
        out
    });
    let ftp: Vec<Held> = rt.block_on(async {
        let mut out = Vec::new();
        for t in ftp {
            out.push(t.await.unwrap());
        }
        out
    });
    let all_closed = started.elapsed();
    assert_eq!(
        admitted_and_refused("ssh", &ssh, "SSH-2.0-Coffer"),
        (PER_ADDRESS, 600 - PER_ADDRESS),
        "one address holds pre_auth_per_address places"
    );
    for h in ssh.iter().filter(|h| !h.starts_with("SSH-2.0-Coffer")) {
        assert!(
            h.got.is_empty(),
            "a refused SSH connection got {:?}",
            h.text()
        );
    }
    assert_eq!(
        admitted_and_refused("ftp", &ftp, "220"),
        (PER_ADDRESS, 2000 - PER_ADDRESS)
    );
    for h in &ftp {
        if h.starts_with("220") {
            assert!(
                h.text().contains("421 Login time exceeded"),
                "{:?}",
                h.text()
            );
        } else {
            assert!(h.starts_with("421 Too many"), "{:?}", h.text());
        }
    }
    let logs = site.server.logs();
    assert!(logs.contains("limits.pre_auth_per_address reached"));
    assert!(logs.contains("not logged in within the login grace time"));
    assert!(logs.contains("no SSH banner within the login grace time"));
    println!("flood: every stranger closed {all_closed:?} after the first connect");

    // The pool in all: 9 addresses × 32 SSH strangers; 256 admitted, the rest refused, and a
    // real user's connection too, until the grace time frees the places.
    let started = Instant::now();
    let mut many = Vec::new();
    for a in 1..=9u8 {
        let source = Ipv4Addr::new(127, 0, 6, a);
        many.extend(rt.block_on(flood(
            site.env.ports.sftp,
            source,
            PER_ADDRESS,
            ssh_banner_or_nothing,
            limit,
        )));
    }
    let (ok, took, _) = site.sftp_login("127.0.0.9");
    assert!(!ok, "the pool is full: a 257th connection is refused");
    assert!(took < LOGIN_BOUND, "and refused at once ({took:?})");
    assert!(started.elapsed() < GRACE - Duration::from_millis(500));
    let many: Vec<Held> = rt.block_on(async {
        let mut out = Vec::new();
        for t in many {
            out.push(t.await.unwrap());
        }
        out
    });
    assert_eq!(
        admitted_and_refused("ssh (9 addresses)", &many, "SSH-2.0-Coffer"),
        (TOTAL, 9 * PER_ADDRESS - TOTAL)
    );
    assert!(
        site.server
            .logs()
            .contains("limits.pre_auth_connections reached")
    );
    let logins = site.logins_from("127.0.0.9");
    println!("after the grace time, logins from 127.0.0.9: {logins:?}");
}

// ---------------------------------------------------------------------------------------------
// 200 concurrent SFTP sessions.

/// Sessions in the load test, and the size each uploads and downloads.
const SESSIONS: usize = 200;
const FILE_SIZE: usize = 1 << 20;
/// Source addresses the sessions come from (20 each: under `pre_auth_per_address`, as 200
/// partners behind a few NAT addresses would be; docs/OPERATIONS.md says how to size it).
const SOURCES: usize = 10;

/// One OpenSSH `sftp` process reading batch commands from a pipe: the session stays open,
/// idle, between commands.
struct Session {
    child: Child,
    stdin: std::process::ChildStdin,
    stdout: BufReader<std::process::ChildStdout>,
}

impl Session {
    fn start(site: &Site, i: usize) -> Self {
        let mut child = Command::new("sftp")
            .current_dir(&site.local)
            .args(["-o", "StrictHostKeyChecking=no"])
            .args(["-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR"])
            .args(["-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes"])
            .args(["-o", &format!("BindAddress=127.0.3.{}", 1 + i % SOURCES)])
            .arg("-i")
            .arg(&site.key)
            .args(["-P", &site.env.ports.sftp.to_string(), "-b", "-"])
            .arg("bob@127.0.0.1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("OpenSSH (sftp) is required: apt-get install openssh-client");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Self {
            child,
            stdin,
            stdout,
        }
    }

    /// Sends `commands` and then `pwd`, and waits for the `pwd` answer: everything before it
    /// is done (sftp `-b` stops at the first failing command, closing its output).
    fn run(&mut self, commands: &str) -> Result<(), String> {
        writeln!(self.stdin, "{commands}pwd")
            .and_then(|()| self.stdin.flush())
            .map_err(|e| format!("sftp stdin: {e}"))?;
        let mut line = String::new();
        loop {
            line.clear();
            match self.stdout.read_line(&mut line) {
                Ok(0) => return Err("sftp exited".to_owned()),
                Ok(_) if line.starts_with("Remote working directory") => return Ok(()),
                Ok(_) => {}
                Err(e) => return Err(format!("sftp stdout: {e}")),
            }
        }
    }

    /// Ends the session (end of batch input) and returns sftp's error output if it failed.
    fn finish(self) -> Result<(), String> {
        drop(self.stdin);
        let out = self.child.wait_with_output().map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }
}

/// The steps every session thread meets at, so the test can measure between them.
const STEPS: usize = 3;

/// One session's life: log in, wait; upload and download its file, wait; leave.
fn session_thread(site: &Site, i: usize, steps: &Barrier) -> Result<(), String> {
    let mut session = Some(Session::start(site, i));
    let mut result = Ok(());
    let mut step = |result: &mut Result<(), String>, commands: &str| {
        if result.is_ok()
            && let Some(s) = session.as_mut()
        {
            *result = s.run(commands);
        }
        steps.wait();
    };
    step(&mut result, "");
    step(&mut result, &format!("put up{i}\nget up{i} down{i}\n"));
    step(&mut result, "");
    let finished = session.take().unwrap().finish();
    result.and(finished)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Issue 14: 200 concurrent authenticated SFTP sessions (OpenSSH, key logins from 10
/// addresses) each upload 1 MiB and download it again: all succeed, every download is
/// byte-identical, and the server's memory stays within the bound of docs/PERFORMANCE.md —
/// per idle session, at the peak, after the sessions end, and after the same burst again.
#[test]
fn two_hundred_concurrent_sftp_sessions_move_1_mib_each_intact_within_the_memory_bound() {
    harness::raise_nofile_limit(4096);
    // The server runs as the container image runs it (Dockerfile: `MALLOC_ARENA_MAX=2`),
    // unless COFFER_LOAD_SERVER_ENV gives other variables ("" for none).
    let vars =
        std::env::var("COFFER_LOAD_SERVER_ENV").unwrap_or_else(|_| "MALLOC_ARENA_MAX=2".to_owned());
    let vars: Vec<(&str, &str)> = vars
        .split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .collect();
    let site = Site::start("", &vars);
    let pid = site.pid();
    let data: Vec<Vec<u8>> = (0..SESSIONS)
        .map(|i| bytes(FILE_SIZE, 7000 + i as u64))
        .collect();
    for (i, d) in data.iter().enumerate() {
        std::fs::write(site.local.join(format!("up{i}")), d).unwrap();
    }
    std::thread::sleep(Duration::from_millis(500));
    let (idle, _) = harness::rss_kib(pid);

    let settle = Duration::from_secs(30);
    let (marks, after) = burst(&site, &data, idle + idle / 10 + RETAINED_KIB, settle);
    let (logged_in_at, (sessions_idle, _)) = marks[0];
    let (transferred_at, (after_transfer, _)) = marks[1];
    let (_, (idle_after_transfer, peak)) = marks[2];
    let per_session = sessions_idle.saturating_sub(idle) / SESSIONS as u64;
    let per_session_after = idle_after_transfer.saturating_sub(idle) / SESSIONS as u64;
    // The same burst again. It must reuse what the first left, not add to it: before upload
    // batches had buffers of their own (storage/src/writer/batch.rs), glibc kept another
    // 170 MiB here (417–423 MiB after, near the peak); now 219–262 MiB after 229–237. See
    // docs/PERFORMANCE.md, "Allocators measured".
    let (marks_again, after_again) = burst(
        &site,
        &data,
        after + after / 10 + SECOND_BURST_GROWTH_KIB,
        Duration::from_secs(10),
    );
    let (_, (_, peak_again)) = marks_again[2];
    println!(
        "{SESSIONS} sftp sessions ({vars:?}): idle {:.1} MiB; {SESSIONS} logged in after {logged_in_at:?}: {:.1} MiB ({per_session} KiB per idle session); \
         all transferred after {transferred_at:?}: {:.1} MiB, idle again {:.1} MiB ({per_session_after} KiB per session); \
         peak {:.1} MiB; after the sessions ended {:.1} MiB; after a second burst {:.1} MiB (peak {:.1} MiB)",
        mib(idle),
        mib(sessions_idle),
        mib(after_transfer),
        mib(idle_after_transfer),
        mib(peak),
        mib(after),
        mib(after_again),
        mib(peak_again),
    );
    assert!(
        per_session <= PER_IDLE_SESSION_KIB,
        "{per_session} KiB per idle session"
    );
    assert!(peak_again <= PEAK_KIB, "peak RSS {peak_again} KiB");
    assert!(
        after <= idle + idle / 10 + RETAINED_KIB,
        "RSS {after} KiB after the sessions ended (idle {idle} KiB)"
    );
    assert!(
        after_again <= after + after / 10 + SECOND_BURST_GROWTH_KIB,
        "RSS {after_again} KiB after a second burst, {after} KiB after the first"
    );
}

/// RSS marks of a burst: when, (RSS, peak) in KiB.
type Marks = Vec<(Duration, (u64, u64))>;

/// One burst: the 200 sessions log in, transfer and leave. Returns the RSS marks at each step
/// and the RSS after the sessions ended (polled for at most `wait` until it is at most
/// `settle_kib`), having checked every session and download.
fn burst(site: &Site, data: &[Vec<u8>], settle_kib: u64, wait: Duration) -> (Marks, u64) {
    let pid = site.pid();
    let steps = Barrier::new(SESSIONS + 1);
    let failures = Mutex::new(Vec::new());
    let mut marks = Vec::new();
    std::thread::scope(|s| {
        let started = Instant::now();
        for i in 0..SESSIONS {
            let (steps, failures) = (&steps, &failures);
            s.spawn(move || {
                if let Err(e) = session_thread(site, i, steps) {
                    failures.lock().unwrap().push(format!("session {i}: {e}"));
                }
            });
        }
        for step in 0..STEPS {
            steps.wait();
            let at = started.elapsed();
            // Let freed memory settle before reading the idle figures.
            if step != 1 {
                std::thread::sleep(Duration::from_millis(500));
            }
            marks.push((at, harness::rss_kib(pid)));
        }
    });
    let failures = failures.into_inner().unwrap();
    assert!(
        failures.is_empty(),
        "{} of {SESSIONS} sessions failed: {:?}\n{}",
        failures.len(),
        &failures[..failures.len().min(5)],
        site.server
            .logs()
            .lines()
            .rev()
            .take(40)
            .collect::<Vec<_>>()
            .join("\n")
    );
    for (i, want) in data.iter().enumerate() {
        let got = std::fs::read(site.local.join(format!("down{i}"))).unwrap();
        assert!(
            got.len() == want.len() && sha256(&got) == sha256(want),
            "session {i}: the download differs from the upload"
        );
    }
    let ended = Instant::now();
    let mut after = harness::rss_kib(pid).0;
    while after > settle_kib && ended.elapsed() < wait {
        std::thread::sleep(Duration::from_millis(500));
        after = harness::rss_kib(pid).0;
    }
    (marks, after)
}

/// The bounds docs/PERFORMANCE.md ("Many SFTP sessions") states. Per idle session: the aim
/// of issue 14 (measured: 140–530 KiB). Peak: measured 392–411 MiB (VmHWM, debug build) with
/// margin. After the sessions end glibc keeps freed transfer buffers in its arenas, so the
/// aim "within 10 % of idle" is not met: with `MALLOC_ARENA_MAX=2` (the container's setting)
/// 99–143 MiB above idle, flat; with no setting 142–266 MiB (one CI run hit the old bound of
/// 256 MiB that way); measured 159–167 MiB above idle with upload batches pooled. Allocators
/// and glibc settings that give the
/// memory back cost 20–75 % more CPU per 1 GiB transfer here (PERFORMANCE.md, "Allocators
/// measured"), so the test bounds what is kept after one burst, and how much a second burst
/// may add to it (measured: 30–33 MiB; 170 MiB before upload batches were pooled).
const PER_IDLE_SESSION_KIB: u64 = 2 * 1024;
const PEAK_KIB: u64 = 640 * 1024;
const RETAINED_KIB: u64 = 256 * 1024;
const SECOND_BURST_GROWTH_KIB: u64 = 96 * 1024;
