//! The KMS test server: moto's server mode on loopback, which speaks the real KMS wire
//! protocol to `aws-sdk-kms` and checks encryption contexts (it does not enforce disabled
//! keys, pending deletion or key policies; see docs/KEYS.md). `integration/start-kms`
//! installs and starts the shared one; a test that stops or restarts its server starts a
//! private one with [`KmsServer::start`].

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use aws_sdk_kms::Client;
use aws_sdk_kms::config::{BehaviorVersion, Credentials, Region};

/// Access key id the tests sign with (moto accepts any).
pub const KMS_ACCESS_KEY: &str = "coffer-test-kms-access";
/// Secret key the tests sign with (moto accepts any).
pub const KMS_SECRET_KEY: &str = "coffer-test-kms-secret-0123456789";
/// The region of the primary region's test keys.
pub const PRIMARY_KMS_REGION: &str = "eu-west-1";
/// The region of the replica region's test keys.
pub const REPLICA_KMS_REGION: &str = "eu-central-1";

const INSTALL: &str =
    "run `eval \"$(integration/start-kms)\"` (it installs moto[server] with pip and starts it)";

/// Whether KMS tests may be skipped: only when `COFFER_SKIP_KMS=1` is set on purpose.
/// Otherwise a missing server fails the test with a message naming the install step.
fn skip_or_fail(what: &str) -> bool {
    if std::env::var("COFFER_SKIP_KMS").is_ok_and(|v| v == "1") {
        println!("SKIPPED on purpose (COFFER_SKIP_KMS=1): {what} is missing");
        return true;
    }
    panic!("{what} is missing: {INSTALL} (or set COFFER_SKIP_KMS=1 to skip this test on purpose)");
}

/// The shared KMS test server's endpoint (`COFFER_TEST_KMS_ENDPOINT`); `None` only when
/// `COFFER_SKIP_KMS=1`, otherwise a missing server fails the test.
pub fn kms_endpoint() -> Option<String> {
    match std::env::var("COFFER_TEST_KMS_ENDPOINT") {
        Ok(endpoint) if !endpoint.is_empty() => Some(endpoint),
        _ => {
            skip_or_fail("the KMS test server (COFFER_TEST_KMS_ENDPOINT)");
            None
        }
    }
}

/// The `moto_server` program (`COFFER_TEST_KMS_SERVER`, else on `PATH`); `None` only when
/// `COFFER_SKIP_KMS=1`.
pub fn moto_server_program() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("COFFER_TEST_KMS_SERVER").map(PathBuf::from)
        && path.is_file()
    {
        return Some(path);
    }
    let on_path = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("moto_server"))
                .find(|p| p.is_file())
        })
        .unwrap_or_default();
    if on_path.is_none() {
        skip_or_fail("moto_server (the KMS test server)");
    }
    on_path
}

/// A private moto server on a loopback port of its own; killed on drop.
pub struct KmsServer {
    program: PathBuf,
    child: Option<Child>,
    /// The port it listens on (kept across [`KmsServer::restart`]).
    pub port: u16,
}

impl KmsServer {
    /// Starts a private moto server on a free port; `None` only when `COFFER_SKIP_KMS=1`.
    pub fn start() -> Option<Self> {
        let program = moto_server_program()?;
        let port = free_port();
        let mut server = Self {
            program,
            child: None,
            port,
        };
        server.spawn();
        Some(server)
    }

    fn spawn(&mut self) {
        let child = Command::new(&self.program)
            .args(["-H", "127.0.0.1", "-p", &self.port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.program.display()));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "moto_server did not listen on {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Kills the server (its keys are gone: moto keeps them in memory only).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the server and starts a new, empty one on the same port.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Freezes (`SIGSTOP`) or thaws (`SIGCONT`) the server: frozen, it still accepts
    /// connections but never answers, as a hung KMS does; thawed, it answers again with its
    /// keys intact.
    pub fn freeze(&self, frozen: bool) {
        if let Some(child) = &self.child {
            let signal = if frozen { "-STOP" } else { "-CONT" };
            let status = Command::new("kill")
                .arg(signal)
                .arg(child.id().to_string())
                .status()
                .expect("run kill");
            assert!(status.success(), "kill {signal} failed");
        }
    }
}

impl Drop for KmsServer {
    fn drop(&mut self) {
        self.freeze(false);
        self.stop();
    }
}

/// A free loopback port from 61000..65000: above Linux's ephemeral range (32768..60999), so
/// no client socket takes it while a private server is down for a restart, and apart from the
/// e2e harness's server ports (12000..32000). One process never hands out the same port twice.
fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 61_000;
    const COUNT: u32 = 4_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    // Offset by the process id so parallel test binaries rarely try the same ports.
    let base = (std::process::id() % 200) * 20;
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = u16::try_from(FIRST + (base + n) % COUNT).unwrap_or(61_000);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A KMS client for the test server at `endpoint` in `region`, signing with the test keys
/// (for creating keys and aliases; Coffer's own client is `coffer_keys::AwsKms`).
pub async fn admin_client(endpoint: &str, region: &str) -> Client {
    let config = aws_sdk_kms::config::Builder::new()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(region.to_owned()))
        .credentials_provider(Credentials::new(
            KMS_ACCESS_KEY,
            KMS_SECRET_KEY,
            None,
            None,
            "coffer-test",
        ))
        .endpoint_url(endpoint)
        .build();
    Client::from_conf(config)
}

/// A new symmetric KMS key (`CreateKey`): its `(key id, key ARN)`.
pub async fn create_key(endpoint: &str, region: &str) -> anyhow::Result<(String, String)> {
    let out = admin_client(endpoint, region)
        .await
        .create_key()
        .description("coffer test key")
        .send()
        .await
        .with_context(|| {
            format!("CreateKey at the KMS test server {endpoint} failed (is it running? {INSTALL})")
        })?;
    let meta = out
        .key_metadata
        .ok_or_else(|| anyhow::anyhow!("CreateKey returned no key metadata"))?;
    let arn = meta
        .arn
        .ok_or_else(|| anyhow::anyhow!("CreateKey returned no ARN"))?;
    Ok((meta.key_id, arn))
}

/// Points alias `alias` (`alias/...`) at `key_id` (`CreateAlias`).
pub async fn create_alias(
    endpoint: &str,
    region: &str,
    alias: &str,
    key_id: &str,
) -> anyhow::Result<()> {
    admin_client(endpoint, region)
        .await
        .create_alias()
        .alias_name(alias)
        .target_key_id(key_id)
        .send()
        .await
        .with_context(|| format!("CreateAlias {alias} at the KMS test server {endpoint} failed"))?;
    Ok(())
}

/// [`create_key`] for synchronous tests: runs it on a private runtime.
pub fn create_key_blocking(endpoint: &str, region: &str) -> anyhow::Result<(String, String)> {
    block_on(create_key(endpoint, region))
}

/// [`create_alias`] for synchronous tests.
pub fn create_alias_blocking(
    endpoint: &str,
    region: &str,
    alias: &str,
    key_id: &str,
) -> anyhow::Result<()> {
    block_on(create_alias(endpoint, region, alias, key_id))
}

fn block_on<T>(future: impl Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(future)
}
