//! One SFTP session on one SSH channel: the dispatch loop.
//!
//! Three kinds of task keep the data path free of deadlocks and requests overlapping:
//! - the **reader** (this function's loop) drains the channel without ever waiting on a reply,
//!   so russh's session loop can always deliver data and read the client's window adjusts;
//! - **lanes** process requests: one lane per open handle (requests on one handle stay in
//!   order, as the protocol requires) and one namespace lane for path operations, all
//!   running concurrently;
//! - the **writer** sends replies in completion order (SFTP matches them by id), waiting on the
//!   SSH window without blocking anything that reads.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::{Bytes, BytesMut};
use coffer_storage::Vfs;
use russh::ChannelMsg;
use russh::server::Msg;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tracing::{debug, warn};

use super::handles::{HandleOp, OpenHandle, run_lane};
use super::namespace::run_namespace_lane;
use super::wire::{Frame, Framer, MAX_WRITE_LEN, Reply, Request};
use crate::common::SftpStatus;

/// Replies waiting for the writer; lanes pause when it is full (the client is slow to read).
const REPLY_QUEUE: usize = 32;
/// Upload bytes received but not yet processed; the reader waits beyond this.
const MAX_QUEUED_WRITE_BYTES: usize = 32 * 1024 * 1024;
/// Open handles per session, advertised in `limits@openssh.com`.
pub(crate) const MAX_OPEN_HANDLES: usize = 256;
/// Small replies are coalesced into one channel write up to this size.
const COALESCE_BYTES: usize = 32 * 1024;

/// What a session needs besides the user's Vfs.
#[derive(Debug, Clone)]
pub(crate) struct SessionOptions {
    /// The login name, shown as owner in `ls -l` long names.
    pub(crate) user_name: String,
}

/// State shared by the reader and the lanes of one session.
#[derive(Debug)]
pub(crate) struct SessionCtx {
    pub(crate) vfs: Vfs,
    pub(crate) opts: SessionOptions,
    replies: mpsc::Sender<Reply>,
    handles: Mutex<HandleTable>,
}

#[derive(Debug, Default)]
struct HandleTable {
    next: u64,
    open: HashMap<Bytes, mpsc::UnboundedSender<HandleOp>>,
}

impl SessionCtx {
    /// Queues a reply; a closed session drops it.
    pub(crate) async fn reply(&self, reply: Reply) {
        let _ = self.replies.send(reply).await;
    }

    /// Registers an open file or folder and starts its lane; `None` when too many are open.
    pub(crate) fn open_handle(self: &Arc<Self>, handle: OpenHandle) -> Option<Bytes> {
        let (tx, rx) = mpsc::unbounded_channel();
        let name = {
            let mut table = self.handles.lock().unwrap_or_else(PoisonError::into_inner);
            if table.open.len() >= MAX_OPEN_HANDLES {
                return None;
            }
            table.next += 1;
            let name = Bytes::from(table.next.to_string());
            table.open.insert(name.clone(), tx);
            name
        };
        tokio::spawn(run_lane(self.clone(), handle, rx));
        Some(name)
    }

    fn lane(&self, handle: &Bytes, closing: bool) -> Option<mpsc::UnboundedSender<HandleOp>> {
        let mut table = self.handles.lock().unwrap_or_else(PoisonError::into_inner);
        if closing {
            table.open.remove(handle)
        } else {
            table.open.get(handle).cloned()
        }
    }

    fn close_all_handles(&self) {
        self.handles
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .open
            .clear();
    }
}

/// Runs an SFTP session on an accepted `sftp` subsystem channel until the client leaves.
pub(crate) async fn run_session(channel: russh::Channel<Msg>, vfs: Vfs, opts: SessionOptions) {
    let (mut incoming, outgoing) = channel.split();
    let (reply_tx, reply_rx) = mpsc::channel(REPLY_QUEUE);
    let writer = tokio::spawn(send_replies(outgoing, reply_rx));
    let ctx = Arc::new(SessionCtx {
        vfs,
        opts,
        replies: reply_tx,
        handles: Mutex::new(HandleTable::default()),
    });
    let (ns_tx, ns_rx) = mpsc::unbounded_channel();
    let namespace = tokio::spawn(run_namespace_lane(ctx.clone(), ns_rx));
    let budget = Arc::new(Semaphore::new(MAX_QUEUED_WRITE_BYTES));
    let mut framer = Framer::default();

    'read: while let Some(msg) = incoming.wait().await {
        let data = match msg {
            ChannelMsg::Data { data } => data,
            ChannelMsg::Eof | ChannelMsg::Close => break,
            _ => continue,
        };
        framer.push(&data);
        while let Some(frame) = framer.next_frame() {
            let packet = match frame {
                Frame::Packet(p) => p,
                Frame::TooLarge { id, handle } => {
                    refuse_too_large(&ctx, &ns_tx, id, handle);
                    continue;
                }
                Frame::Garbage => {
                    warn!("malformed SFTP packet framing; closing the session");
                    break 'read;
                }
            };
            match Request::parse(packet) {
                Ok(req) => route(&ctx, &ns_tx, &budget, req).await,
                Err(_) => {
                    warn!("malformed SFTP packet; closing the session");
                    break 'read;
                }
            }
        }
    }
    drop(ns_tx);
    ctx.close_all_handles();
    drop(ctx);
    let _ = namespace.await;
    let _ = writer.await;
    debug!("sftp session ended");
}

/// Work for the namespace lane: a request, or a reply decided by the reader.
#[derive(Debug)]
pub(crate) enum NamespaceOp {
    /// A path operation.
    Request(Request),
    /// A reply the reader produced (bad packets, unknown handles).
    Reply(Reply),
}

impl From<Reply> for NamespaceOp {
    fn from(r: Reply) -> Self {
        Self::Reply(r)
    }
}

/// Answers a packet too large to read. A WRITE's handle hears of it, so that upload is not
/// completed at close as if the skipped bytes had never been sent.
fn refuse_too_large(
    ctx: &Arc<SessionCtx>,
    ns: &mpsc::UnboundedSender<NamespaceOp>,
    id: u32,
    handle: Option<Bytes>,
) {
    warn!(
        max = MAX_WRITE_LEN,
        "refused an SFTP packet larger than the limit"
    );
    if let Some(lane) = handle.and_then(|h| ctx.lane(&h, false))
        && lane.send(HandleOp::Refused { id }).is_ok()
    {
        return;
    }
    let _ = ns.send(super::handles::refused_write(id).into());
}

/// Sends a request to the lane that owns it. Never waits on replies; waits only when more
/// than [`MAX_QUEUED_WRITE_BYTES`] of upload data is queued.
async fn route(
    ctx: &Arc<SessionCtx>,
    ns: &mpsc::UnboundedSender<NamespaceOp>,
    budget: &Arc<Semaphore>,
    req: Request,
) {
    let permit = match &req {
        Request::Write { data, .. } => reserve(budget, data.len()).await,
        _ => None,
    };
    let (handle, op) = match HandleOp::from_request(req, permit) {
        Ok(pair) => pair,
        Err(req) => {
            let _ = ns.send(NamespaceOp::Request(req));
            return;
        }
    };
    let closing = matches!(op, HandleOp::Close { .. });
    let id = op.id();
    match ctx.lane(&handle, closing) {
        Some(lane) => {
            if lane.send(op).is_err() {
                let _ =
                    ns.send(Reply::status(id, SftpStatus::Failure, "the handle is closed").into());
            }
        }
        None => {
            let _ = ns.send(Reply::status(id, SftpStatus::Failure, "invalid handle").into());
        }
    }
}

async fn reserve(budget: &Arc<Semaphore>, len: usize) -> Option<OwnedSemaphorePermit> {
    let n = u32::try_from(len.clamp(1, MAX_QUEUED_WRITE_BYTES)).ok()?;
    budget.clone().acquire_many_owned(n).await.ok()
}

/// The writer: sends replies as they complete, coalescing small ones into one channel write.
async fn send_replies(out: russh::ChannelWriteHalf<Msg>, mut rx: mpsc::Receiver<Reply>) {
    let mut pending = BytesMut::new();
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        while let Some(reply) = next.take() {
            if reply.body.is_empty() {
                pending.extend_from_slice(&reply.head);
            } else {
                if !pending.is_empty() && out.data_bytes(pending.split().freeze()).await.is_err() {
                    return;
                }
                if out.data_bytes(reply.head).await.is_err()
                    || out.data_bytes(reply.body).await.is_err()
                {
                    return;
                }
            }
            if pending.len() < COALESCE_BYTES {
                next = rx.try_recv().ok();
            }
        }
        if !pending.is_empty() && out.data_bytes(pending.split().freeze()).await.is_err() {
            return;
        }
    }
    // `scp` judges success by the exit status, as with a remote sftp-server process.
    let _ = out.exit_status(0).await;
    let _ = out.eof().await;
    let _ = out.close().await;
}
