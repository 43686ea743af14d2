//! The direct baseline for docs/PERFORMANCE.md: upload a file to S3 with `S3Store::put_file`
//! (a plain aws-sdk-s3 multipart upload) and read it back in 8 MiB ranged GETs.
//!
//! Reads the server from `integration/start-s3`'s variables:
//! `eval "$(integration/start-s3)"; cargo run -p coffer-object --example s3_throughput -- FILE`
#![allow(clippy::print_stdout)]

use std::time::Instant;

use coffer_object::{
    DEFAULT_PART_SIZE, ObjectKey, ObjectStore, S3Credentials, S3Settings, S3Store,
};

const READ_STEP: u64 = 8 * 1024 * 1024;

fn env(name: &str) -> Result<String, String> {
    std::env::var(name).map_err(|_| format!("{name} is not set: run integration/start-s3"))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let source = std::env::args().nth(1).ok_or("usage: s3_throughput FILE")?;
    let store = S3Store::connect(S3Settings {
        bucket: env("COFFER_TEST_S3_BUCKET")?,
        region: "us-east-1".to_owned(),
        endpoint: Some(env("COFFER_TEST_S3_ENDPOINT")?),
        path_style: true,
        credentials: S3Credentials::static_keys(
            &env("COFFER_TEST_S3_ACCESS_KEY")?,
            &env("COFFER_TEST_S3_SECRET_KEY")?,
        ),
        part_size: DEFAULT_PART_SIZE,
    })
    .await?;
    // put_file consumes its file, so upload a copy.
    let copy = format!("{source}.direct");
    std::fs::copy(&source, &copy)?;
    let key = ObjectKey::generate()?;
    let size = std::fs::metadata(&copy)?.len();
    let mib = size as f64 / (1024.0 * 1024.0);

    let started = Instant::now();
    store.put_file(&key, copy.as_ref()).await?;
    let upload = started.elapsed().as_secs_f64();

    let started = Instant::now();
    let mut at = 0;
    while at < size {
        let n = READ_STEP.min(size - at);
        store.get_range(&key, at, n).await?;
        at += n;
    }
    let download = started.elapsed().as_secs_f64();
    store.delete(&key).await?;
    println!(
        "direct upload: {:.1} MiB/s ({upload:.2} s); direct download: {:.1} MiB/s ({download:.2} s)",
        mib / upload,
        mib / download
    );
    Ok(())
}
