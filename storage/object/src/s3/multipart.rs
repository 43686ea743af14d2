//! Multipart uploads and copies: parts streamed from a file with a few in flight, completed in
//! order, and aborted whenever any step fails so no half object and no billed parts remain.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::{ByteStream, Length};
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use tokio::task::JoinSet;

use super::errors::from_sdk;
use crate::{ObjectError, ObjectKey};

/// S3's smallest part (every part but the last must be at least this large).
pub const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;
/// S3's largest part.
pub const MAX_PART_SIZE: u64 = 5 * 1024 * 1024 * 1024;
/// S3's limit on the number of parts of one upload.
pub(super) const MAX_PARTS: u64 = 10_000;
/// Largest object `CopyObject` copies in one request.
const MAX_SINGLE_COPY: u64 = 5 * 1024 * 1024 * 1024;
/// Range copied per `UploadPartCopy` for objects too large for `CopyObject`.
const COPY_PART_SIZE: u64 = 1024 * 1024 * 1024;
/// Parts uploaded at once from one file: enough to fill a fast link, few enough that a
/// transfer's memory stays a few SDK buffers.
pub(super) const PARTS_IN_FLIGHT: usize = 4;

/// One multipart upload to `key`.
pub(super) struct Upload<'a> {
    pub(super) client: &'a Client,
    pub(super) bucket: &'a str,
    pub(super) key: &'a ObjectKey,
}

impl Upload<'_> {
    /// Uploads the `size` bytes of `file` in parts of about `part_size`.
    pub(super) async fn upload_file(
        &self,
        file: &Path,
        size: u64,
        part_size: u64,
    ) -> Result<(), ObjectError> {
        let part_size = part_size_for(size, part_size);
        let upload_id = self.create().await?;
        let parts = self
            .upload_file_parts(&upload_id, file, size, part_size)
            .await;
        self.finish(&upload_id, parts).await
    }

    /// Copies `source` (of `size` bytes, in the same bucket) to this upload's key.
    pub(super) async fn copy_from(&self, source: &ObjectKey, size: u64) -> Result<(), ObjectError> {
        let copy_source = format!("{}/{}", self.bucket, source.as_str());
        if size <= MAX_SINGLE_COPY {
            self.client
                .copy_object()
                .bucket(self.bucket)
                .key(self.key.as_str())
                .copy_source(copy_source)
                .send()
                .await
                .map_err(|e| from_sdk("CopyObject", e))?;
            return Ok(());
        }
        let upload_id = self.create().await?;
        let parts = self.copy_parts(&upload_id, &copy_source, size).await;
        self.finish(&upload_id, parts).await
    }

    pub(super) async fn create(&self) -> Result<String, ObjectError> {
        let output = self
            .client
            .create_multipart_upload()
            .bucket(self.bucket)
            .key(self.key.as_str())
            .send()
            .await
            .map_err(|e| from_sdk("CreateMultipartUpload", e))?;
        output.upload_id().map(str::to_owned).ok_or_else(|| {
            ObjectError::Unavailable("CreateMultipartUpload: no upload id returned".to_owned())
        })
    }

    /// Uploads every part, at most [`PARTS_IN_FLIGHT`] at once; returns them in part order.
    async fn upload_file_parts(
        &self,
        upload_id: &str,
        file: &Path,
        size: u64,
        part_size: u64,
    ) -> Result<Vec<CompletedPart>, ObjectError> {
        let mut in_flight = JoinSet::new();
        let mut parts = Vec::new();
        let mut offset = 0;
        let mut number = 1;
        while offset < size || !in_flight.is_empty() {
            if offset < size && in_flight.len() < PARTS_IN_FLIGHT {
                let part = FilePart {
                    client: self.client.clone(),
                    bucket: self.bucket.to_owned(),
                    key: self.key.as_str().to_owned(),
                    upload_id: upload_id.to_owned(),
                    number,
                    file: file.to_owned(),
                    offset,
                    len: part_size.min(size - offset),
                };
                offset += part.len;
                number += 1;
                in_flight.spawn(part.upload());
                continue;
            }
            // Dropping the JoinSet on an early return cancels the parts still in flight.
            if let Some(joined) = in_flight.join_next().await {
                parts.push(joined.map_err(|e| ObjectError::Io(std::io::Error::other(e)))??);
            }
        }
        parts.sort_by_key(|part| part.part_number());
        Ok(parts)
    }

    async fn copy_parts(
        &self,
        upload_id: &str,
        copy_source: &str,
        size: u64,
    ) -> Result<Vec<CompletedPart>, ObjectError> {
        let mut parts = Vec::new();
        let mut offset = 0;
        let mut number = 1;
        while offset < size {
            let last = size.min(offset + COPY_PART_SIZE) - 1;
            let output = self
                .client
                .upload_part_copy()
                .bucket(self.bucket)
                .key(self.key.as_str())
                .upload_id(upload_id)
                .part_number(number)
                .copy_source(copy_source)
                .copy_source_range(format!("bytes={offset}-{last}"))
                .send()
                .await
                .map_err(|e| from_sdk("UploadPartCopy", e))?;
            let e_tag = output.copy_part_result().and_then(|r| r.e_tag());
            parts.push(completed_part(number, e_tag)?);
            offset = last + 1;
            number += 1;
        }
        Ok(parts)
    }

    /// Completes the upload with `parts`, or aborts it when they or the completion failed.
    async fn finish(
        &self,
        upload_id: &str,
        parts: Result<Vec<CompletedPart>, ObjectError>,
    ) -> Result<(), ObjectError> {
        let outcome = match parts {
            Ok(parts) => self.complete(upload_id, parts).await,
            Err(error) => Err(error),
        };
        if let Err(error) = outcome {
            self.abort(upload_id).await;
            return Err(error);
        }
        Ok(())
    }

    pub(super) async fn complete(
        &self,
        upload_id: &str,
        parts: Vec<CompletedPart>,
    ) -> Result<(), ObjectError> {
        self.client
            .complete_multipart_upload()
            .bucket(self.bucket)
            .key(self.key.as_str())
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| from_sdk("CompleteMultipartUpload", e))?;
        Ok(())
    }

    /// Best effort: an upload that cannot be aborted now is left for `coffer gc`.
    pub(super) async fn abort(&self, upload_id: &str) {
        let result = self
            .client
            .abort_multipart_upload()
            .bucket(self.bucket)
            .key(self.key.as_str())
            .upload_id(upload_id)
            .send()
            .await;
        if let Err(error) = result {
            let error = from_sdk("AbortMultipartUpload", error);
            tracing::warn!(object = %self.key, %error, "could not abort a failed multipart upload; coffer gc will");
        }
    }
}

/// One part of a file, owned so that it can be uploaded on its own task.
pub(super) struct FilePart {
    pub(super) client: Client,
    pub(super) bucket: String,
    pub(super) key: String,
    pub(super) upload_id: String,
    pub(super) number: i32,
    pub(super) file: PathBuf,
    pub(super) offset: u64,
    pub(super) len: u64,
}

impl FilePart {
    /// Streams the part's byte range from the file; the SDK re-reads it on a retry.
    pub(super) async fn upload(self) -> Result<CompletedPart, ObjectError> {
        let body = ByteStream::read_from()
            .path(&self.file)
            .offset(self.offset)
            .length(Length::Exact(self.len))
            .build()
            .await
            .map_err(|e| ObjectError::Io(std::io::Error::other(e)))?;
        let output = self
            .client
            .upload_part()
            .bucket(self.bucket)
            .key(self.key)
            .upload_id(self.upload_id)
            .part_number(self.number)
            .content_length(i64::try_from(self.len).unwrap_or(i64::MAX))
            .body(body)
            .send()
            .await
            .map_err(|e| from_sdk("UploadPart", e))?;
        completed_part(self.number, output.e_tag())
    }
}

fn completed_part(number: i32, e_tag: Option<&str>) -> Result<CompletedPart, ObjectError> {
    let e_tag = e_tag.ok_or_else(|| {
        ObjectError::Unavailable(format!("part {number} was stored without an ETag"))
    })?;
    Ok(CompletedPart::builder()
        .part_number(number)
        .e_tag(e_tag)
        .build())
}

/// `part_size`, or a larger multiple of it when the file would need more than S3's 10 000
/// parts (past about 160 GiB at the default part size).
fn part_size_for(size: u64, part_size: u64) -> u64 {
    let parts = size.div_ceil(part_size);
    if parts <= MAX_PARTS {
        part_size
    } else {
        part_size * parts.div_ceil(MAX_PARTS)
    }
}

/// Aborts every multipart upload in `bucket` initiated more than `older_than` ago.
pub(super) async fn abort_stale(
    client: &Client,
    bucket: &str,
    older_than: Duration,
) -> Result<usize, ObjectError> {
    let cutoff = SystemTime::now()
        .checked_sub(older_than)
        .unwrap_or(SystemTime::UNIX_EPOCH)
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    let cutoff = i64::try_from(cutoff).unwrap_or(i64::MAX);
    let mut aborted = 0;
    let (mut key_marker, mut upload_id_marker) = (None, None);
    loop {
        let page = client
            .list_multipart_uploads()
            .bucket(bucket)
            .set_key_marker(key_marker.take())
            .set_upload_id_marker(upload_id_marker.take())
            .send()
            .await
            .map_err(|e| from_sdk("ListMultipartUploads", e))?;
        for upload in page.uploads() {
            let started = upload.initiated().map_or(i64::MIN, |time| time.secs());
            let (Some(key), Some(upload_id)) = (upload.key(), upload.upload_id()) else {
                continue;
            };
            if started < cutoff {
                client
                    .abort_multipart_upload()
                    .bucket(bucket)
                    .key(key)
                    .upload_id(upload_id)
                    .send()
                    .await
                    .map_err(|e| from_sdk("AbortMultipartUpload", e))?;
                aborted += 1;
            }
        }
        if page.is_truncated() != Some(true) {
            return Ok(aborted);
        }
        key_marker = page.next_key_marker().map(str::to_owned);
        upload_id_marker = page.next_upload_id_marker().map(str::to_owned);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_size_grows_only_past_ten_thousand_parts() {
        let part = 16 * 1024 * 1024;
        assert_eq!(part_size_for(part * MAX_PARTS, part), part);
        assert_eq!(part_size_for(part * MAX_PARTS + 1, part), 2 * part);
        assert!(
            (part * MAX_PARTS * 3).div_ceil(part_size_for(part * MAX_PARTS * 3, part)) <= MAX_PARTS
        );
    }
}
