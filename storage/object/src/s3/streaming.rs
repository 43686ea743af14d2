//! Streaming a spool file to S3 while it is written: each whole part is uploaded as soon as
//! the file holds it, so at commit only the last part (or one small `PutObject`) is left.

use std::path::PathBuf;

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::{ByteStream, Length};
use aws_sdk_s3::types::CompletedPart;
use tokio::task::JoinSet;

use super::errors::from_sdk;
use super::multipart::{FilePart, MAX_PARTS, PARTS_IN_FLIGHT, Upload};
use crate::{ObjectError, ObjectKey, StreamingUpload};

/// One object being uploaded from a growing spool file.
pub(super) struct SpoolUpload {
    client: Client,
    bucket: String,
    key: ObjectKey,
    file: PathBuf,
    part_size: u64,
    /// Created with the first whole part; a file that never fills one is one `PutObject`.
    upload_id: Option<String>,
    /// Bytes of the file already handed to part uploads.
    sent: u64,
    next_part: i32,
    in_flight: JoinSet<Result<CompletedPart, ObjectError>>,
    done: Vec<CompletedPart>,
    /// Set once finished or aborted, so `Drop` leaves the upload alone.
    settled: bool,
}

impl std::fmt::Debug for SpoolUpload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpoolUpload")
            .field("object", &self.key)
            .field("sent", &self.sent)
            .finish_non_exhaustive()
    }
}

impl SpoolUpload {
    pub(super) fn new(
        client: Client,
        bucket: String,
        key: ObjectKey,
        file: PathBuf,
        part_size: u64,
    ) -> Self {
        Self {
            client,
            bucket,
            key,
            file,
            part_size,
            upload_id: None,
            sent: 0,
            next_part: 1,
            in_flight: JoinSet::new(),
            done: Vec::new(),
            settled: false,
        }
    }

    fn upload(&self) -> Upload<'_> {
        Upload {
            client: &self.client,
            bucket: &self.bucket,
            key: &self.key,
        }
    }

    /// Starts uploading the next `len` bytes as one part, waiting first if
    /// [`PARTS_IN_FLIGHT`] parts are already on their way.
    async fn send_part(&mut self, len: u64) -> Result<(), ObjectError> {
        if u64::try_from(self.next_part).unwrap_or(u64::MAX) > MAX_PARTS {
            return Err(ObjectError::Rejected(format!(
                "upload needs more than {MAX_PARTS} parts of {} bytes; raise part_size",
                self.part_size
            )));
        }
        let upload_id = match &self.upload_id {
            Some(id) => id.clone(),
            None => {
                let id = self.upload().create().await?;
                self.upload_id = Some(id.clone());
                id
            }
        };
        while self.in_flight.len() >= PARTS_IN_FLIGHT {
            self.collect_one().await?;
        }
        let part = FilePart {
            client: self.client.clone(),
            bucket: self.bucket.clone(),
            key: self.key.as_str().to_owned(),
            upload_id,
            number: self.next_part,
            file: self.file.clone(),
            offset: self.sent,
            len,
        };
        self.in_flight.spawn(part.upload());
        self.sent += len;
        self.next_part += 1;
        Ok(())
    }

    async fn collect_one(&mut self) -> Result<(), ObjectError> {
        if let Some(joined) = self.in_flight.join_next().await {
            let part = joined.map_err(|e| ObjectError::Io(std::io::Error::other(e)))??;
            self.done.push(part);
        }
        Ok(())
    }

    async fn complete(&mut self, len: u64) -> Result<(), ObjectError> {
        if len < self.sent {
            return Err(ObjectError::Io(std::io::Error::other(
                "the spool file shrank during its upload",
            )));
        }
        let Some(upload_id) = self.upload_id.clone() else {
            return self.put_whole(len).await;
        };
        if len > self.sent {
            self.send_part(len - self.sent).await?;
        }
        while !self.in_flight.is_empty() {
            self.collect_one().await?;
        }
        let mut parts = std::mem::take(&mut self.done);
        parts.sort_by_key(|part| part.part_number());
        self.upload().complete(&upload_id, parts).await
    }

    /// A file smaller than one part: a single `PutObject`.
    async fn put_whole(&self, len: u64) -> Result<(), ObjectError> {
        let body = ByteStream::read_from()
            .path(&self.file)
            .length(Length::Exact(len))
            .build()
            .await
            .map_err(|e| ObjectError::Io(std::io::Error::other(e)))?;
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(self.key.as_str())
            .body(body)
            .send()
            .await
            .map_err(|e| from_sdk("PutObject", e))?;
        Ok(())
    }

    async fn abort_now(&mut self) {
        self.settled = true;
        self.in_flight.abort_all();
        if let Some(upload_id) = self.upload_id.take() {
            self.upload().abort(&upload_id).await;
        }
    }
}

#[async_trait]
impl StreamingUpload for SpoolUpload {
    async fn file_grew(&mut self, len: u64) -> Result<(), ObjectError> {
        while len.saturating_sub(self.sent) >= self.part_size {
            self.send_part(self.part_size).await?;
        }
        Ok(())
    }

    async fn finish(mut self: Box<Self>, len: u64) -> Result<(), ObjectError> {
        let result = self.complete(len).await;
        if result.is_err() {
            self.abort_now().await;
        }
        self.settled = true;
        result
    }

    async fn abort(mut self: Box<Self>) {
        self.abort_now().await;
    }
}

impl Drop for SpoolUpload {
    /// Dropped unfinished (the writer vanished): abort in the background, else `coffer gc`
    /// aborts it later.
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        self.in_flight.abort_all();
        let (Some(upload_id), Ok(runtime)) =
            (self.upload_id.take(), tokio::runtime::Handle::try_current())
        else {
            return;
        };
        let (client, bucket, key) = (self.client.clone(), self.bucket.clone(), self.key.clone());
        runtime.spawn(async move {
            let upload = Upload {
                client: &client,
                bucket: &bucket,
                key: &key,
            };
            upload.abort(&upload_id).await;
        });
    }
}
