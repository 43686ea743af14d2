//! The audit sink: records are queued and written by one background task, off the hot path.

use std::sync::Arc;

use coffer_meta::{AuditRecord, AuditStore};
use tokio::sync::{mpsc, oneshot};
use tracing::warn;

/// Queue depth before records are dropped (with a warning) rather than slowing transfers.
const AUDIT_QUEUE: usize = 8192;
/// Most records written in one statement.
const AUDIT_BATCH: usize = 256;
/// How long the writer waits after a first record for more to join its statement. A client
/// downloading small files one after another makes a record every millisecond or so; written
/// one by one, each would be a write transaction of its own (a WAL append that also makes
/// every SQLite reader reload its pages). A process killed outright loses the records of its
/// last moment, as it loses those still queued; a graceful shutdown flushes them.
const AUDIT_LINGER: std::time::Duration = std::time::Duration::from_millis(25);

enum Msg {
    Record(Box<AuditRecord>),
    Flush(oneshot::Sender<()>),
}

/// Handle to the audit writer task.
#[derive(Debug, Clone)]
pub(crate) struct AuditSink {
    tx: mpsc::Sender<Msg>,
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("audit message")
    }
}

impl AuditSink {
    /// Starts the writer task on the current runtime.
    pub(crate) fn start(meta: Arc<dyn AuditStore>) -> Self {
        let (tx, mut rx) = mpsc::channel::<Msg>(AUDIT_QUEUE);
        tokio::spawn(async move {
            let mut batch: Vec<AuditRecord> = Vec::new();
            while let Some(msg) = rx.recv().await {
                // What arrives within the linger goes into the same statement.
                let deadline = tokio::time::Instant::now() + AUDIT_LINGER;
                let mut next = Some(msg);
                while let Some(msg) = next.take() {
                    match msg {
                        Msg::Record(r) => batch.push(*r),
                        Msg::Flush(done) => {
                            write_batch(meta.as_ref(), &mut batch).await;
                            let _ = done.send(());
                            break;
                        }
                    }
                    if batch.len() < AUDIT_BATCH {
                        next = tokio::time::timeout_at(deadline, rx.recv())
                            .await
                            .ok()
                            .flatten();
                    }
                }
                write_batch(meta.as_ref(), &mut batch).await;
            }
        });
        Self { tx }
    }

    /// Queues one record; never blocks a transfer.
    pub(crate) fn record(&self, r: AuditRecord) {
        if self.tx.try_send(Msg::Record(Box::new(r))).is_err() {
            warn!("audit queue full: a record was dropped");
        }
    }

    /// Waits until every record queued before this call is written.
    pub(crate) async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Msg::Flush(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

/// Writes and empties `batch`; a failure is logged, never passed on to a transfer.
async fn write_batch(meta: &dyn AuditStore, batch: &mut Vec<AuditRecord>) {
    if batch.is_empty() {
        return;
    }
    if let Err(e) = meta.audit(batch).await {
        warn!(error = %e, records = batch.len(), "could not write audit records");
    }
    batch.clear();
}
