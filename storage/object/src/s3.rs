//! `S3Store`: an [`ObjectStore`] over one bucket of AWS S3 or any S3-compatible endpoint.
//!
//! The server's normal work needs only `PutObject`, `GetObject`, `HeadObject` and the
//! multipart calls; `delete`, [`S3Store::abort_stale_uploads`] and `copy` are for the
//! privileged garbage collector and operator tools.

mod errors;
mod multipart;
mod streaming;

use std::fmt;
use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;
use zeroize::Zeroizing;

use crate::{ObjectError, ObjectKey, ObjectMeta, ObjectStore, StreamingUpload};

pub use multipart::{MAX_PART_SIZE, MIN_PART_SIZE};

/// Part size used when the configuration does not choose one: 256 sealed 64 KiB chunks.
pub const DEFAULT_PART_SIZE: u64 = 256 * (65_536 + 28);
/// How long to wait for a TCP/TLS connection before calling the store unavailable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one attempt may wait for response bytes before it counts as a timeout.
const READ_TIMEOUT: Duration = Duration::from_secs(60);
/// Attempts per request (the first one included) before an error is returned.
const MAX_ATTEMPTS: u32 = 3;

/// Where the store's credentials come from.
pub enum S3Credentials {
    /// The standard AWS chain: environment, profile, web identity, container and instance roles.
    DefaultChain,
    /// A static key pair from the configuration.
    Static {
        /// The access key id (not secret: it names the key).
        access_key_id: String,
        /// The secret access key; wiped from memory when dropped.
        secret_access_key: Zeroizing<String>,
    },
}

impl S3Credentials {
    /// A static key pair; the secret is copied into memory that is wiped on drop.
    pub fn static_keys(access_key_id: &str, secret_access_key: &str) -> Self {
        Self::Static {
            access_key_id: access_key_id.to_owned(),
            secret_access_key: Zeroizing::new(secret_access_key.to_owned()),
        }
    }
}

impl fmt::Debug for S3Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::DefaultChain => f.write_str("DefaultChain"),
            Self::Static { access_key_id, .. } => f
                .debug_struct("Static")
                .field("access_key_id", access_key_id)
                .field("secret_access_key", &"<redacted>")
                .finish(),
        }
    }
}

/// Everything needed to reach one bucket.
#[derive(Debug)]
pub struct S3Settings {
    /// The bucket holding the objects.
    pub bucket: String,
    /// The bucket's region, e.g. `eu-west-1` (S3-compatible servers usually accept any).
    pub region: String,
    /// A custom endpoint URL; `None` means AWS's endpoint for the region.
    pub endpoint: Option<String>,
    /// Path-style addressing (`endpoint/bucket/key`) instead of virtual-hosted style.
    pub path_style: bool,
    /// Where the credentials come from.
    pub credentials: S3Credentials,
    /// Bytes per multipart part, [`MIN_PART_SIZE`]..=[`MAX_PART_SIZE`].
    pub part_size: u64,
}

/// An [`ObjectStore`] over one S3 bucket. Cloning is cheap and clones share the client.
#[derive(Clone)]
pub struct S3Store {
    client: Client,
    bucket: String,
    part_size: u64,
    description: String,
}

impl fmt::Debug for S3Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Store")
            .field("store", &self.description)
            .field("part_size", &self.part_size)
            .finish_non_exhaustive()
    }
}

impl S3Store {
    /// Builds a client for `settings`. Makes no request: a wrong bucket or key shows on
    /// first use (`coffer serve`'s readiness check heads a random key).
    pub async fn connect(settings: S3Settings) -> Result<Self, ObjectError> {
        if !(MIN_PART_SIZE..=MAX_PART_SIZE).contains(&settings.part_size) {
            return Err(ObjectError::Rejected(format!(
                "part size {} is outside {MIN_PART_SIZE}..={MAX_PART_SIZE}",
                settings.part_size
            )));
        }
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(settings.region.clone()));
        if let S3Credentials::Static {
            access_key_id,
            secret_access_key,
        } = &settings.credentials
        {
            loader = loader.credentials_provider(Credentials::new(
                access_key_id.as_str(),
                secret_access_key.as_str(),
                None,
                None,
                "coffer-config",
            ));
        }
        let shared = loader.load().await;
        let mut builder = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(settings.path_style)
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(CONNECT_TIMEOUT)
                    .read_timeout(READ_TIMEOUT)
                    .build(),
            )
            .retry_config(RetryConfig::standard().with_max_attempts(MAX_ATTEMPTS))
            // Every object is AES-GCM sealed and replicas are verified by SHA-256, so the
            // SDK's per-request CRCs would add CPU work and nothing a reader relies on.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
        if let Some(endpoint) = &settings.endpoint {
            builder = builder.endpoint_url(endpoint);
        }
        let description = match &settings.endpoint {
            Some(endpoint) => format!("s3:{endpoint}/{}", settings.bucket),
            None => format!("s3://{} ({})", settings.bucket, settings.region),
        };
        Ok(Self {
            client: Client::from_conf(builder.build()),
            bucket: settings.bucket,
            part_size: settings.part_size,
            description,
        })
    }

    /// The underlying SDK client (for operator tools and tests).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The bucket this store writes to.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// Aborts multipart uploads started more than `older_than` ago (an interrupted upload's
    /// parts are billed until aborted). Needs `ListBucketMultipartUploads` and
    /// `AbortMultipartUpload`: run it from `coffer gc`, not from the server. Returns how many
    /// uploads were aborted.
    pub async fn abort_stale_uploads(&self, older_than: Duration) -> Result<usize, ObjectError> {
        multipart::abort_stale(&self.client, &self.bucket, older_than).await
    }

    async fn put_object(&self, key: &ObjectKey, body: ByteStream) -> Result<(), ObjectError> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key.as_str())
            .body(body)
            .send()
            .await
            .map_err(|e| errors::from_sdk("PutObject", e))?;
        Ok(())
    }

    /// The store's size of `key`, for a range that could not be served as asked.
    async fn out_of_bounds(&self, key: &ObjectKey, start: u64, len: u64) -> ObjectError {
        match self.head(key).await {
            Ok(meta) => ObjectError::RangeOutOfBounds {
                start,
                end: start.saturating_add(len),
                size: meta.size,
            },
            Err(error) => error,
        }
    }

    /// One ranged GET of `len > 0` bytes that fit in a `u64` end.
    async fn get_nonempty_range(
        &self,
        key: &ObjectKey,
        start: u64,
        len: u64,
    ) -> Result<Bytes, ObjectError> {
        let last = start + len - 1;
        let response = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key.as_str())
            .range(format!("bytes={start}-{last}"))
            .send()
            .await;
        let output = match response {
            Ok(output) => output,
            Err(error) if errors::is_invalid_range(&error) => {
                return Err(self.out_of_bounds(key, start, len).await);
            }
            Err(error) => return Err(errors::from_sdk("GetObject", error)),
        };
        let body = output
            .body
            .collect()
            .await
            .map_err(|e| ObjectError::Unavailable(format!("GetObject: body interrupted: {e}")))?
            .into_bytes();
        if body.len() as u64 != len {
            // The store shortened a range that ran past the end of the object.
            return Err(self.out_of_bounds(key, start, len).await);
        }
        Ok(body)
    }
}

#[async_trait]
impl ObjectStore for S3Store {
    fn describe(&self) -> String {
        self.description.clone()
    }

    /// One `PutObject`: S3 makes the object visible whole or not at all.
    async fn put(&self, key: &ObjectKey, body: Bytes) -> Result<(), ObjectError> {
        self.put_object(key, ByteStream::from(body)).await
    }

    /// `PutObject` for files up to one part, else a multipart upload read straight from the
    /// file (a few parts in flight, never the whole file in memory), aborted on failure.
    /// The file is removed on success.
    async fn put_file(&self, key: &ObjectKey, file: &Path) -> Result<(), ObjectError> {
        let size = tokio::fs::metadata(file).await?.len();
        if size <= self.part_size {
            let body = ByteStream::from_path(file)
                .await
                .map_err(|e| ObjectError::Io(std::io::Error::other(e)))?;
            self.put_object(key, body).await?;
        } else {
            let upload = multipart::Upload {
                client: &self.client,
                bucket: &self.bucket,
                key,
            };
            upload.upload_file(file, size, self.part_size).await?;
        }
        match tokio::fs::remove_file(file).await {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(error.into()),
            _ => Ok(()),
        }
    }

    /// A ranged `GetObject`; an empty range costs a `HeadObject` instead (HTTP ranges cannot
    /// be empty), and a range past the end one more `HeadObject` to report the real size.
    async fn get_range(&self, key: &ObjectKey, start: u64, len: u64) -> Result<Bytes, ObjectError> {
        match start.checked_add(len) {
            None => Err(self.out_of_bounds(key, start, len).await),
            Some(end) if len == 0 => {
                let size = self.head(key).await?.size;
                if end <= size {
                    Ok(Bytes::new())
                } else {
                    Err(ObjectError::RangeOutOfBounds { start, end, size })
                }
            }
            Some(_) => self.get_nonempty_range(key, start, len).await,
        }
    }

    async fn head(&self, key: &ObjectKey) -> Result<ObjectMeta, ObjectError> {
        let output = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key.as_str())
            .send()
            .await
            .map_err(|e| errors::from_sdk("HeadObject", e))?;
        let size = output
            .content_length()
            .and_then(|len| u64::try_from(len).ok())
            .ok_or_else(|| {
                ObjectError::Unavailable("HeadObject: response has no valid size".to_owned())
            })?;
        Ok(ObjectMeta { size })
    }

    /// `CopyObject` inside the bucket, or `UploadPartCopy` for objects over 5 GiB.
    async fn copy(&self, from: &ObjectKey, to: &ObjectKey) -> Result<(), ObjectError> {
        let size = self.head(from).await?.size;
        let upload = multipart::Upload {
            client: &self.client,
            bucket: &self.bucket,
            key: to,
        };
        upload.copy_from(from, size).await
    }

    /// Uploads whole parts of the spool file while the client is still sending; what is
    /// left at the end is one part (or, for a small file, one `PutObject`).
    async fn begin_streaming_upload(
        &self,
        key: &ObjectKey,
        file: &Path,
    ) -> Result<Option<Box<dyn StreamingUpload>>, ObjectError> {
        Ok(Some(Box::new(streaming::SpoolUpload::new(
            self.client.clone(),
            self.bucket.clone(),
            key.clone(),
            file.to_path_buf(),
            self.part_size,
        ))))
    }

    /// `DeleteObject`, which S3 answers with success for a missing key too.
    async fn delete(&self, key: &ObjectKey) -> Result<(), ObjectError> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key.as_str())
            .send()
            .await
            .map_err(|e| errors::from_sdk("DeleteObject", e))?;
        Ok(())
    }
}
