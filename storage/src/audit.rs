//! The audit sink: records are queued and written by one background task, off the hot path.

use std::sync::Arc;

use coffer_meta::{AuditRecord, MetadataStore};
use tokio::sync::{mpsc, oneshot};
use tracing::warn;

/// Queue depth before records are dropped (with a warning) rather than slowing transfers.
const AUDIT_QUEUE: usize = 8192;

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
    pub(crate) fn start(meta: Arc<dyn MetadataStore>) -> Self {
        let (tx, mut rx) = mpsc::channel::<Msg>(AUDIT_QUEUE);
        tokio::spawn(async move {
            while let Some(msg) = rx.recv().await {
                match msg {
                    Msg::Record(r) => {
                        if let Err(e) = meta.audit(&r).await {
                            warn!(error = %e, action = %r.action, "could not write an audit record");
                        }
                    }
                    Msg::Flush(done) => {
                        let _ = done.send(());
                    }
                }
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
