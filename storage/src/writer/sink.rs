//! The sink: where an upload's sealed chunks go — an in-memory batch, the spool file once the
//! object outgrows one batch (streamed on to the primary store as it grows, when the store
//! takes that), and at commit the primary store, durably — with the upload's row in `uploads`
//! that lets recovery find whatever it leaves behind.

use std::sync::Arc;

use coffer_meta::{MetaResult, NewUpload, UploadStore};
use coffer_object::{ObjectKey, ObjectStore, StreamingUpload};
use tokio::task::JoinHandle;
use tracing::warn;

use super::batch::Batch;
use super::spool_file::SpoolFile;
use crate::error::{ErrorKind, VfsError, VfsResult, internal};

/// Sealed chunks are written to the spool in batches of about this size; an object that
/// never outgrows one is stored from memory.
pub(super) const SPOOL_BATCH: usize = 1024 * 1024;

/// Where a sink stores, and what it registers.
pub(super) struct SinkTarget {
    pub(super) primary: Arc<dyn ObjectStore>,
    pub(super) uploads: Arc<dyn UploadStore>,
    /// A fresh random key for the object; the spool file is named after it.
    pub(super) object_key: ObjectKey,
    pub(super) spool_path: std::path::PathBuf,
    /// The upload row's tenant and node.
    pub(super) tenant_id: i64,
    pub(super) node_name: String,
    /// An object of at most this many sealed bytes is kept for the metadata row instead of
    /// going to the primary store (0: never).
    pub(super) inline_max: usize,
}

/// Where [`Sink::store`] put the object.
#[derive(Debug)]
pub(super) enum Stored {
    /// In the primary store, durably.
    InStore,
    /// Nowhere yet: these sealed bytes go into the file's row, in the commit transaction.
    Inline(Vec<u8>),
}

/// The sealed-bytes → storage stage of one upload.
pub(super) struct Sink {
    primary: Arc<dyn ObjectStore>,
    uploads: Arc<dyn UploadStore>,
    object_key: ObjectKey,
    upload_row: UploadRow,
    /// Sealed bytes not yet in the spool (the header first).
    batch: Batch,
    spool: SpoolFile,
    /// The primary store's upload of the spool file as it grows, if the store takes one.
    streaming: Option<Box<dyn StreamingUpload>>,
    /// Committed or cleaned up: nothing is left to remove when dropped.
    done: bool,
    inline_max: usize,
    /// The object was handed over for the row, not stored: nothing to unstore.
    inlined: bool,
}

impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sink")
            .field("object", &self.object_key)
            .field("spooled", &self.spool.len())
            .finish_non_exhaustive()
    }
}

/// The upload's row in `uploads` (what recovery and clean-up look for). Nothing is written
/// while the upload could still end up in its file's row (an object within the inline
/// threshold never leaves memory before the commit, so a crash leaves nothing to find). Once
/// it outgrows that, the row is written in the background while the client sends on, and
/// awaited before anything of the upload leaves memory (the spool file, the object):
/// whatever an upload leaves behind always has its row.
enum UploadRow {
    /// Not written yet: what to write.
    Unwritten(NewUpload),
    Pending(JoinHandle<MetaResult<i64>>),
    Written(i64),
    /// Writing it failed; the error was reported once.
    Failed,
}

impl UploadRow {
    /// Starts writing the row in the background, unless it already was.
    fn begin(&mut self, uploads: &Arc<dyn UploadStore>) {
        if let UploadRow::Unwritten(row) = self {
            let row = row.clone();
            let uploads = uploads.clone();
            *self = UploadRow::Pending(tokio::spawn(
                async move { uploads.begin_upload(&row).await },
            ));
        }
    }

    /// The row's id, writing it or waiting for it to be written if need be.
    async fn settle(&mut self, uploads: &Arc<dyn UploadStore>) -> VfsResult<i64> {
        self.begin(uploads);
        if let UploadRow::Pending(handle) = self {
            let written = handle.await;
            *self = UploadRow::Failed;
            let id = written.map_err(|e| internal("upload row task", e))??;
            *self = UploadRow::Written(id);
        }
        match self {
            UploadRow::Written(id) => Ok(*id),
            _ => Err(VfsError::new(
                ErrorKind::Internal,
                "the upload could not be registered",
            )),
        }
    }

    /// The row's id if it was ever begun (waiting for it), `None` if it never was.
    async fn begun(&mut self, uploads: &Arc<dyn UploadStore>) -> VfsResult<Option<i64>> {
        match self {
            UploadRow::Unwritten(_) => Ok(None),
            _ => self.settle(uploads).await.map(Some),
        }
    }
}

impl Sink {
    /// Opens the store's streaming upload, if it takes one (the upload row is written once the
    /// object outgrows the inline threshold, see [`UploadRow`]). `header` starts the object; no chunk pushed is longer than
    /// `max_chunk`.
    pub(super) async fn start(
        target: SinkTarget,
        header: &[u8],
        max_chunk: usize,
    ) -> VfsResult<Self> {
        let SinkTarget {
            primary,
            uploads,
            object_key,
            spool_path,
            tenant_id,
            node_name,
            inline_max,
        } = target;
        let row = NewUpload {
            tenant_id,
            spool_name: object_key.to_string(),
            object_key: object_key.to_string(),
            node_name,
            now_ms: crate::clock::now_ms(),
        };
        let upload_row = UploadRow::Unwritten(row);
        let streaming = primary
            .begin_streaming_upload(&object_key, &spool_path)
            .await?;
        let mut batch = Batch::new(SPOOL_BATCH + max_chunk * 2);
        batch.extend_from_slice(header)?;
        let inline_max = inline_max.min(SPOOL_BATCH);
        let mut upload_row = upload_row;
        if batch.len() > inline_max {
            upload_row.begin(&uploads);
        }
        Ok(Self {
            primary,
            uploads,
            object_key,
            upload_row,
            batch,
            spool: SpoolFile::new(spool_path),
            streaming,
            done: false,
            inline_max,
            inlined: false,
        })
    }

    /// The key the object will be stored under.
    pub(super) fn object_key(&self) -> &ObjectKey {
        &self.object_key
    }

    /// Takes one sealed chunk; a full batch goes to the spool.
    pub(super) async fn push(&mut self, sealed: &[u8]) -> VfsResult<()> {
        self.batch.extend_from_slice(sealed)?;
        if self.batch.len() > self.inline_max {
            self.upload_row.begin(&self.uploads);
        }
        if self.batch.len() >= SPOOL_BATCH {
            self.flush().await?;
        }
        Ok(())
    }

    /// Writes the batch to the spool file (created, after the upload row, on the first call)
    /// and tells the streaming upload, or starts a background flush, as it grows.
    async fn flush(&mut self) -> VfsResult<()> {
        if !self.spool.started() {
            self.upload_row.settle(&self.uploads).await?;
        }
        let batch = self.batch.take();
        self.batch = self.spool.append(batch).await?;
        match self.streaming.as_mut() {
            Some(upload) => upload.file_grew(self.spool.len()).await?,
            None => self.spool.write_back().await?,
        }
        Ok(())
    }

    /// The upload row's id (for the commit transaction, which deletes it), once written.
    /// `None` while nothing of the upload ever needed a row (an object within the inline
    /// threshold, complete or not).
    pub(super) async fn upload_id(&mut self) -> VfsResult<Option<i64>> {
        self.upload_row.begun(&self.uploads).await
    }

    /// Stores the complete object under its key, durably. An object that never outgrew one
    /// in-memory batch is handed to the store's `put` as it is: no spool file, no copy; if it
    /// is no larger than the inline threshold it is not stored at all but handed back for the
    /// commit to put in the file's row (no object write, no flush, no S3 request). A larger
    /// one is in the spool: its streaming upload is finished when the store took one, else
    /// the spool file goes to `put_file`.
    pub(super) async fn store(&mut self) -> VfsResult<Stored> {
        if !self.spool.started() {
            if let Some(upload) = self.streaming.take() {
                upload.abort().await;
            }
            let body = self.batch.take();
            if body.len() <= self.inline_max {
                self.inlined = true;
                return Ok(Stored::Inline(body.as_slice().to_vec()));
            }
            self.upload_row.settle(&self.uploads).await?;
            self.primary
                .put(&self.object_key, body.into_bytes())
                .await?;
            return Ok(Stored::InStore);
        }
        // No fsync here: a local store fsyncs the file it renames into place, and S3 reads the
        // rest of the file from the page cache; the spool itself never needs to survive a crash.
        self.flush().await?;
        self.spool.close().await?;
        match self.streaming.take() {
            Some(upload) => {
                upload.finish(self.spool.len()).await?;
                self.spool.remove().await;
            }
            None => {
                self.primary
                    .put_file(&self.object_key, self.spool.path())
                    .await?
            }
        }
        Ok(Stored::InStore)
    }

    /// The object was stored but its row could not be committed: delete it again.
    pub(super) async fn unstore(&mut self) {
        if self.inlined {
            return;
        }
        if let Err(del) = self.primary.delete(&self.object_key).await {
            warn!(object = %self.object_key, error = %del, "could not delete the object of a failed commit");
        }
    }

    /// The commit transaction took over the upload row: nothing is left to clean up.
    pub(super) fn committed(&mut self) {
        self.done = true;
    }

    /// Removes whatever the upload left: the streaming upload, the spool file, the upload row.
    pub(super) async fn clean_up(&mut self) {
        self.done = true;
        if let Some(upload) = self.streaming.take() {
            upload.abort().await;
        }
        self.spool.remove().await;
        if let Ok(Some(id)) = self.upload_row.begun(&self.uploads).await {
            let _ = self.uploads.end_upload(id).await;
        }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        // Dropped without commit or abort (a connection died): clean up in the background.
        let path = self.spool.take_path();
        let uploads = self.uploads.clone();
        let mut row = std::mem::replace(&mut self.upload_row, UploadRow::Failed);
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = tokio::fs::remove_file(&path).await;
                if let Ok(Some(id)) = row.begun(&uploads).await {
                    let _ = uploads.end_upload(id).await;
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use coffer_meta::{NewTenant, SqliteStore, TenantStore, WrappedTenantKey};
    use coffer_object::LocalDirStore;

    struct Fixture {
        dir: tempfile::TempDir,
        spool: crate::spool::Spool,
        primary: Arc<LocalDirStore>,
        meta: Arc<SqliteStore>,
        tenant_id: i64,
    }

    async fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let primary = Arc::new(LocalDirStore::open(&dir.path().join("primary")).unwrap());
        let spool = crate::spool::Spool::open(&dir.path().join("spool")).unwrap();
        let meta = Arc::new(SqliteStore::open_in_memory().await.unwrap());
        meta.migrate().await.unwrap();
        let tenant_id = crate::ids::random_id().unwrap();
        meta.create_tenant(&NewTenant {
            id: tenant_id,
            name: format!("sink-{tenant_id}"),
            root_node_id: crate::ids::random_id().unwrap(),
            root_name_enc: vec![1; 28],
            root_name_index: vec![2; 32],
            quota_bytes: None,
            keys: vec![WrappedTenantKey {
                tenant_id,
                version: 1,
                region: "primary".into(),
                master_key_id: "local:primary".into(),
                wrapped: vec![3; 60],
                created_ms: 0,
            }],
            master_keys: Vec::new(),
            now_ms: 0,
        })
        .await
        .unwrap();
        Fixture {
            dir,
            spool,
            primary,
            meta,
            tenant_id,
        }
    }

    impl Fixture {
        async fn sink(&self) -> Sink {
            self.sink_inlining(0).await
        }

        async fn sink_inlining(&self, inline_max: usize) -> Sink {
            let object_key = ObjectKey::generate().unwrap();
            let target = SinkTarget {
                primary: self.primary.clone(),
                uploads: self.meta.clone(),
                spool_path: self.spool.path(&object_key.to_string()),
                object_key,
                tenant_id: self.tenant_id,
                node_name: "node-a".into(),
                inline_max,
            };
            Sink::start(target, b"HEADER", 65_564).await.unwrap()
        }

        fn spool_files(&self) -> usize {
            std::fs::read_dir(self.dir.path().join("spool"))
                .unwrap()
                .count()
        }

        async fn upload_rows(&self) -> usize {
            self.meta.uploads().await.unwrap().len()
        }

        /// Stores the object and checks it holds `want`, byte for byte, with no spool file left.
        async fn store_and_check(&self, mut sink: Sink, want: &[u8]) {
            sink.store().await.unwrap();
            let key = sink.object_key();
            let len = self.primary.head(key).await.unwrap().size;
            let stored = self.primary.get_range(key, 0, len).await.unwrap();
            assert_eq!(stored, want);
            assert_eq!(self.spool_files(), 0, "no spool file is left behind");
            sink.committed();
        }
    }

    /// Pushes `n` bytes in chunks of `chunk`; returns all the object's bytes.
    async fn push(sink: &mut Sink, n: usize, chunk: usize) -> Vec<u8> {
        let mut object = b"HEADER".to_vec();
        let data: Vec<u8> = (0..n).map(|i| (i % 253) as u8).collect();
        for part in data.chunks(chunk) {
            sink.push(part).await.unwrap();
        }
        object.extend_from_slice(&data);
        object
    }

    #[tokio::test]
    async fn an_empty_object_is_stored_from_memory_with_its_row() {
        let f = fixture().await;
        let mut sink = f.sink().await;
        let id = sink
            .upload_id()
            .await
            .unwrap()
            .expect("not inlining: the row is begun at once");
        assert!(id > 0);
        assert_eq!(f.upload_rows().await, 1, "the row exists before commit");
        f.store_and_check(sink, b"HEADER").await;
    }

    #[tokio::test]
    async fn an_object_just_under_one_batch_stays_in_memory() {
        let f = fixture().await;
        let mut sink = f.sink().await;
        let want = push(&mut sink, SPOOL_BATCH - 7, 4096).await;
        assert_eq!(f.spool_files(), 0, "it never left memory");
        f.store_and_check(sink, &want).await;
    }

    #[tokio::test]
    async fn an_object_of_one_batch_and_a_byte_goes_through_the_spool() {
        let f = fixture().await;
        let mut sink = f.sink().await;
        let want = push(&mut sink, SPOOL_BATCH - 6, 4096).await;
        assert_eq!(f.spool_files(), 1, "a full batch leaves memory");
        sink.push(&[9]).await.unwrap();
        let mut want = want;
        want.push(9);
        f.store_and_check(sink, &want).await;
    }

    #[tokio::test]
    async fn many_batches_arrive_whole_and_in_order() {
        let f = fixture().await;
        let mut sink = f.sink().await;
        let want = push(&mut sink, 5 * SPOOL_BATCH + 12_345, 65_564).await;
        f.store_and_check(sink, &want).await;
    }

    #[tokio::test]
    async fn clean_up_removes_the_spool_file_and_the_row() {
        let f = fixture().await;
        let mut sink = f.sink().await;
        push(&mut sink, 2 * SPOOL_BATCH, 65_564).await;
        assert_eq!((f.spool_files(), f.upload_rows().await), (1, 1));
        sink.clean_up().await;
        assert_eq!((f.spool_files(), f.upload_rows().await), (0, 0));
    }

    #[tokio::test]
    async fn a_dropped_sink_cleans_up_in_the_background() {
        let f = fixture().await;
        let mut sink = f.sink().await;
        push(&mut sink, 2 * SPOOL_BATCH, 65_564).await;
        drop(sink);
        for _ in 0..200 {
            if f.spool_files() == 0 && f.upload_rows().await == 0 {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("the spool file or the upload row outlived the dropped upload");
    }

    #[tokio::test]
    async fn an_object_up_to_the_inline_threshold_is_handed_back_not_stored() {
        let f = fixture().await;
        let mut sink = f.sink_inlining(4_096 + 6).await;
        let want = push(&mut sink, 4_096, 1_000).await;
        assert_eq!(sink.upload_id().await.unwrap(), None);
        assert_eq!(
            f.upload_rows().await,
            0,
            "an object that never leaves memory needs no row"
        );
        match sink.store().await.unwrap() {
            Stored::Inline(bytes) => assert_eq!(bytes, want),
            Stored::InStore => panic!("a small object must be kept for the row"),
        }
        assert!(matches!(
            f.primary.head(sink.object_key()).await,
            Err(coffer_object::ObjectError::NotFound)
        ));
        sink.committed();

        let mut sink = f.sink_inlining(4_096 + 6).await;
        let want = push(&mut sink, 4_097, 1_000).await;
        assert!(sink.upload_id().await.unwrap().is_some());
        assert_eq!(
            f.upload_rows().await,
            1,
            "past the threshold the row comes first"
        );
        assert!(matches!(sink.store().await.unwrap(), Stored::InStore));
        let key = sink.object_key();
        let stored = f
            .primary
            .get_range(key, 0, want.len() as u64)
            .await
            .unwrap();
        assert_eq!(
            stored, want,
            "one byte over the threshold goes to the store"
        );
        sink.committed();
    }

    #[tokio::test]
    async fn unstore_deletes_the_stored_object() {
        let f = fixture().await;
        let mut sink = f.sink().await;
        push(&mut sink, 10, 10).await;
        sink.store().await.unwrap();
        sink.unstore().await;
        assert!(f.primary.head(sink.object_key()).await.is_err());
        sink.clean_up().await;
        assert_eq!(f.upload_rows().await, 0);
    }
}
