//! `S3Store` against a real S3 server (s3s-fs): the conformance suite, multipart uploads,
//! and what callers see when the server is down or refuses the credentials.
//!
//! The server comes from `integration/start-s3` (`COFFER_TEST_S3_*` variables), or else an
//! `s3s-fs` binary on `PATH` started per test. `COFFER_SKIP_S3=1` skips these tests.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use coffer_object::{
    MIN_PART_SIZE, ObjectError, ObjectKey, ObjectStore, S3Credentials, S3Settings, S3Store,
    conformance,
};
use tempfile::TempDir;
use zeroize::Zeroizing;

const TEST_ACCESS_KEY: &str = "coffer-test-access";
const TEST_SECRET_KEY: &str = "coffer-test-secret-0123456789";

/// Where the server is and the keys it accepts.
struct Server {
    endpoint: String,
    access_key: String,
    secret_key: String,
    /// An s3s-fs process this test started, killed on drop.
    process: Option<Child>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(child) = &mut self.process {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A fresh bucket on a running server, and a scratch directory for `put_file` sources.
struct Fixture {
    store: S3Store,
    server: Server,
    bucket: String,
    scratch: TempDir,
}

fn skipped() -> bool {
    std::env::var("COFFER_SKIP_S3").is_ok_and(|v| v == "1")
}

fn find_on_path(binary: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(binary))
        .find(|candidate| candidate.is_file())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_until_listening(address: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_err() {
        assert!(
            Instant::now() < deadline,
            "s3s-fs did not listen on {address}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Starts s3s-fs on a free loopback port with its data under `root`.
fn start_s3s_fs(binary: &Path, root: &Path) -> Server {
    let port = free_port();
    let process = Command::new(binary)
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args([
            "--access-key",
            TEST_ACCESS_KEY,
            "--secret-key",
            TEST_SECRET_KEY,
        ])
        .arg(root)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start s3s-fs");
    wait_until_listening(SocketAddr::from(([127, 0, 0, 1], port)));
    Server {
        endpoint: format!("http://127.0.0.1:{port}"),
        access_key: TEST_ACCESS_KEY.to_owned(),
        secret_key: TEST_SECRET_KEY.to_owned(),
        process: Some(process),
    }
}

fn server(root: &Path) -> Server {
    if let Ok(endpoint) = std::env::var("COFFER_TEST_S3_ENDPOINT") {
        return Server {
            endpoint,
            access_key: std::env::var("COFFER_TEST_S3_ACCESS_KEY").expect("access key"),
            secret_key: std::env::var("COFFER_TEST_S3_SECRET_KEY").expect("secret key"),
            process: None,
        };
    }
    let Some(binary) = find_on_path("s3s-fs") else {
        panic!(
            "no S3 server for the S3 tests: run `eval \"$(integration/start-s3)\"` first \
             (or put s3s-fs on PATH), or set COFFER_SKIP_S3=1 to skip them"
        );
    };
    start_s3s_fs(&binary, root)
}

fn settings(server: &Server, bucket: &str, secret: &str) -> S3Settings {
    S3Settings {
        bucket: bucket.to_owned(),
        region: "us-east-1".to_owned(),
        endpoint: Some(server.endpoint.clone()),
        path_style: true,
        credentials: S3Credentials::Static {
            access_key_id: server.access_key.clone(),
            secret_access_key: Zeroizing::new(secret.to_owned()),
        },
        part_size: MIN_PART_SIZE,
    }
}

/// A store over a new, empty bucket, or `None` when S3 tests are skipped.
async fn fixture() -> Option<Fixture> {
    if skipped() {
        eprintln!("COFFER_SKIP_S3=1: skipping an S3 test");
        return None;
    }
    let scratch = tempfile::tempdir().unwrap();
    std::fs::create_dir(scratch.path().join("server")).unwrap();
    let server = server(&scratch.path().join("server"));
    let bucket = format!("coffer-test-{}", ObjectKey::generate().unwrap());
    let store = S3Store::connect(settings(&server, &bucket, &server.secret_key.clone()))
        .await
        .unwrap();
    store
        .client()
        .create_bucket()
        .bucket(&bucket)
        .send()
        .await
        .expect("create the test bucket");
    Some(Fixture {
        store,
        server,
        bucket,
        scratch,
    })
}

macro_rules! conformance_tests {
    ($($check:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $check() {
            let Some(fixture) = fixture().await else { return };
            conformance::$check(&fixture.store).await;
        }
    )*};
}

conformance_tests!(
    put_then_get_whole,
    get_range_at_start,
    get_range_in_middle,
    get_range_at_end,
    get_range_empty,
    get_range_out_of_bounds,
    head_reports_size,
    missing_key_is_not_found,
    large_object_round_trip,
    copy_then_delete_original_keeps_copy,
    delete_missing_is_ok,
    overwrite_replaces_whole_object,
    empty_object_round_trip,
    concurrent_puts_and_gets,
    put_many_stores_each_object,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_file_stores_content() {
    let Some(fixture) = fixture().await else {
        return;
    };
    conformance::put_file_stores_content(&fixture.store, fixture.scratch.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_all_passes_on_one_long_lived_bucket() {
    let Some(fixture) = fixture().await else {
        return;
    };
    conformance::run_all(&fixture.store, fixture.scratch.path()).await;
    conformance::run_all(&fixture.store, fixture.scratch.path()).await;
}

fn random_file(dir: &Path, len: usize) -> (PathBuf, Vec<u8>) {
    let mut body = vec![0u8; len];
    aws_lc_rs::rand::fill(&mut body).unwrap();
    let path = dir.join(format!("spool-{}", ObjectKey::generate().unwrap()));
    std::fs::write(&path, &body).unwrap();
    (path, body)
}

/// A file of several parts (the last one short) arrives whole and the spool file is gone.
/// (s3s-fs lacks `ListMultipartUploads`, so open uploads are not listed here.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multipart_put_file_round_trips_and_leaves_nothing_behind() {
    let Some(fixture) = fixture().await else {
        return;
    };
    let len = 3 * MIN_PART_SIZE as usize + 12_345;
    let (path, body) = random_file(fixture.scratch.path(), len);
    let key = ObjectKey::generate().unwrap();

    fixture.store.put_file(&key, &path).await.unwrap();

    assert!(!path.exists(), "put_file removes the spool file");
    assert_eq!(fixture.store.head(&key).await.unwrap().size, len as u64);
    let whole = fixture.store.get_range(&key, 0, len as u64).await.unwrap();
    assert!(whole == body, "multipart object differs from the file");
    let seam = MIN_PART_SIZE - 7;
    let across = fixture.store.get_range(&key, seam, 14).await.unwrap();
    assert_eq!(&across[..], &body[seam as usize..seam as usize + 14]);
}

/// A multipart upload the server refuses returns an error, keeps the source file for the
/// caller (the writer retries or discards it), and leaves no object.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_multipart_upload_keeps_the_file_and_stores_nothing() {
    let Some(fixture) = fixture().await else {
        return;
    };
    let store = S3Store::connect(settings(&fixture.server, &fixture.bucket, "not-the-secret"))
        .await
        .unwrap();
    let (path, _) = random_file(fixture.scratch.path(), 2 * MIN_PART_SIZE as usize + 1);
    let key = ObjectKey::generate().unwrap();

    let result = store.put_file(&key, &path).await;

    assert!(
        matches!(result, Err(ObjectError::Rejected(_))),
        "got {result:?}"
    );
    assert!(path.exists(), "a failed put_file must leave the spool file");
    assert!(matches!(
        fixture.store.head(&key).await,
        Err(ObjectError::NotFound)
    ));
}

/// A server that is not there is `Unavailable` (the reader fails over on it), quickly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_server_is_unavailable() {
    let Some(mut fixture) = fixture().await else {
        return;
    };
    let key = ObjectKey::generate().unwrap();
    fixture
        .store
        .put(&key, Bytes::from_static(b"sealed"))
        .await
        .unwrap();
    let closed = Server {
        endpoint: format!("http://127.0.0.1:{}", free_port()),
        access_key: fixture.server.access_key.clone(),
        secret_key: fixture.server.secret_key.clone(),
        process: fixture.server.process.take(),
    };
    let store = S3Store::connect(settings(&closed, &fixture.bucket, &closed.secret_key))
        .await
        .unwrap();

    let started = Instant::now();
    let result = store.get_range(&key, 0, 6).await;

    assert!(
        matches!(result, Err(ObjectError::Unavailable(_))),
        "got {result:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(20));
}

/// A wrong secret key is refused, and no error message or debug output carries the secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_secret_is_rejected_without_echoing_it() {
    let Some(fixture) = fixture().await else {
        return;
    };
    let wrong_secret = "wrong-secret-DO-NOT-PRINT-42";
    let store = S3Store::connect(settings(&fixture.server, &fixture.bucket, wrong_secret))
        .await
        .unwrap();

    let result = store
        .put(&ObjectKey::generate().unwrap(), Bytes::from_static(b"x"))
        .await;

    let Err(error) = result else {
        panic!("a wrong secret was accepted")
    };
    assert!(matches!(error, ObjectError::Rejected(_)), "got {error:?}");
    for text in [
        error.to_string(),
        format!("{error:?}"),
        format!("{store:?}"),
        store.describe(),
    ] {
        assert!(!text.contains(wrong_secret), "secret leaked: {text}");
        assert!(
            !text.contains(&fixture.server.secret_key),
            "secret leaked: {text}"
        );
    }
}

/// A spool file streamed while it grows (several whole parts, then a short tail at finish)
/// becomes one object with exactly the file's bytes; nothing is visible before `finish`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_upload_sends_parts_while_the_file_grows() {
    let Some(fixture) = fixture().await else {
        return;
    };
    let key = ObjectKey::generate().unwrap();
    let path = fixture.scratch.path().join("growing.spool");
    let (_, body) = random_file(fixture.scratch.path(), 2 * MIN_PART_SIZE as usize + 777);
    let mut upload = fixture
        .store
        .begin_streaming_upload(&key, &path)
        .await
        .unwrap()
        .expect("S3 streams uploads");

    let mut file = std::fs::File::create(&path).unwrap();
    for piece in body.chunks(1024 * 1024 + 3) {
        std::io::Write::write_all(&mut file, piece).unwrap();
        let len = file.metadata().unwrap().len();
        upload.file_grew(len).await.unwrap();
    }
    assert!(matches!(
        fixture.store.head(&key).await,
        Err(ObjectError::NotFound)
    ));
    upload.finish(body.len() as u64).await.unwrap();

    let stored = fixture
        .store
        .get_range(&key, 0, body.len() as u64)
        .await
        .unwrap();
    assert!(stored == body, "streamed object differs from the file");
}

/// A small file never fills a part: finishing it is one `PutObject`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_upload_of_a_small_file_stores_it_whole() {
    let Some(fixture) = fixture().await else {
        return;
    };
    let key = ObjectKey::generate().unwrap();
    let (path, body) = random_file(fixture.scratch.path(), 70_000);
    let mut upload = fixture
        .store
        .begin_streaming_upload(&key, &path)
        .await
        .unwrap()
        .expect("S3 streams uploads");

    upload.file_grew(body.len() as u64).await.unwrap();
    upload.finish(body.len() as u64).await.unwrap();

    assert_eq!(fixture.store.head(&key).await.unwrap().size, 70_000);
}

/// An aborted streaming upload leaves no object, even after whole parts were sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aborted_streaming_upload_leaves_no_object() {
    let Some(fixture) = fixture().await else {
        return;
    };
    let key = ObjectKey::generate().unwrap();
    let (path, body) = random_file(fixture.scratch.path(), MIN_PART_SIZE as usize + 1);
    let mut upload = fixture
        .store
        .begin_streaming_upload(&key, &path)
        .await
        .unwrap()
        .expect("S3 streams uploads");
    upload.file_grew(body.len() as u64).await.unwrap();

    upload.abort().await;

    assert!(matches!(
        fixture.store.head(&key).await,
        Err(ObjectError::NotFound)
    ));
}
