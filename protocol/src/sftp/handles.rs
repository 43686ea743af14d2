//! Open handles: each runs as a lane that processes its requests in arrival order.
//!
//! A download lane serves READ from a [`FileReader`]; an upload lane feeds WRITE into a
//! [`FileWriter`] and commits it on CLOSE (or `fsync@openssh.com`); a folder lane pages through
//! a listing taken at OPENDIR. When the session ends with an upload still open, the lane
//! applies the partial-upload policy (see `docs/SFTP.md`).

use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use coffer_storage::{FileInfo, FileReader, FileWriter, VfsError, WriteOptions};
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tracing::debug;

use super::namespace::{attrs_of, check_file, error_reply, long_name};
use super::session::SessionCtx;
use super::wire::{Attrs, MAX_READ_LEN, MAX_WRITE_LEN, Reply, Request, get_string};
use crate::common::SftpStatus;

/// Entries per READDIR reply.
const READDIR_BATCH: usize = 128;

/// A request for an open handle.
#[derive(Debug)]
pub(crate) enum HandleOp {
    Read {
        id: u32,
        offset: u64,
        len: u32,
    },
    /// The permit returns the bytes to the session's upload budget once processed.
    Write {
        id: u32,
        offset: u64,
        data: Bytes,
        _permit: Option<OwnedSemaphorePermit>,
    },
    Fstat {
        id: u32,
    },
    Fsetstat {
        id: u32,
        attrs: Attrs,
    },
    Readdir {
        id: u32,
    },
    Fsync {
        id: u32,
    },
    /// `check-file-handle`: the rest of the request after the handle.
    CheckFile {
        id: u32,
        data: Bytes,
    },
    Close {
        id: u32,
    },
    /// A WRITE on this handle was larger than the server takes and was skipped unread.
    Refused {
        id: u32,
    },
}

impl HandleOp {
    /// Splits a handle request into (handle, op); other requests come back unchanged.
    pub(crate) fn from_request(
        req: Request,
        permit: Option<OwnedSemaphorePermit>,
    ) -> Result<(Bytes, Self), Request> {
        Ok(match req {
            Request::Read {
                id,
                handle,
                offset,
                len,
            } => (handle, Self::Read { id, offset, len }),
            Request::Write {
                id,
                handle,
                offset,
                data,
            } => (
                handle,
                Self::Write {
                    id,
                    offset,
                    data,
                    _permit: permit,
                },
            ),
            Request::Fstat { id, handle } => (handle, Self::Fstat { id }),
            Request::Fsetstat { id, handle, attrs } => (handle, Self::Fsetstat { id, attrs }),
            Request::Readdir { id, handle } => (handle, Self::Readdir { id }),
            Request::Close { id, handle } => (handle, Self::Close { id }),
            Request::Extended { id, name, data } if name.as_ref() == b"fsync@openssh.com" => {
                let mut d = data.clone();
                match get_string(&mut d) {
                    Ok(handle) => (handle, Self::Fsync { id }),
                    Err(_) => return Err(Request::Extended { id, name, data }),
                }
            }
            // paramiko's `SFTPFile.check` sends the handle form under the name `check-file`.
            Request::Extended { id, name, data }
                if matches!(name.as_ref(), b"check-file-handle" | b"check-file") =>
            {
                let mut rest = data.clone();
                match get_string(&mut rest) {
                    Ok(handle) => (handle, Self::CheckFile { id, data: rest }),
                    Err(_) => return Err(Request::Extended { id, name, data }),
                }
            }
            other => return Err(other),
        })
    }

    /// The request id.
    pub(crate) fn id(&self) -> u32 {
        match self {
            Self::Read { id, .. }
            | Self::Write { id, .. }
            | Self::Fstat { id }
            | Self::Fsetstat { id, .. }
            | Self::Readdir { id }
            | Self::Fsync { id }
            | Self::CheckFile { id, .. }
            | Self::Close { id }
            | Self::Refused { id } => *id,
        }
    }
}

/// What a handle refers to.
#[derive(Debug)]
pub(crate) enum OpenHandle {
    /// A file opened for reading.
    Download {
        path: String,
        reader: Box<FileReader>,
    },
    /// A file opened for writing.
    Upload(Box<Upload>),
    /// A folder listing.
    Dir { entries: Vec<FileInfo>, next: usize },
}

/// An upload in progress on one handle.
#[derive(Debug)]
pub(crate) struct Upload {
    path: String,
    /// `None` after `fsync@openssh.com` committed it; reopened on the next write.
    writer: Option<FileWriter>,
    append: bool,
    mtime: Option<SystemTime>,
    /// The length `fstat` reports while no writer is open: what the last commit stored, or
    /// what a writer given up had received contiguously. An open writer is asked instead.
    closed_len: u64,
    /// A write was refused as too large: the upload can no longer complete as sent.
    refused: bool,
}

impl Upload {
    /// An upload on a freshly created writer.
    pub(crate) fn new(path: String, writer: FileWriter, append: bool) -> Self {
        Self {
            closed_len: writer.contiguous_len(),
            path,
            writer: Some(writer),
            append,
            mtime: None,
            refused: false,
        }
    }

    fn len(&self) -> u64 {
        self.writer
            .as_ref()
            .map_or(self.closed_len, FileWriter::len)
    }

    async fn writer(&mut self, ctx: &SessionCtx) -> Result<&mut FileWriter, VfsError> {
        let writer = match self.writer.take() {
            Some(w) => w,
            None => {
                ctx.vfs
                    .create(
                        &self.path,
                        WriteOptions {
                            truncate: false,
                            exclusive: false,
                        },
                    )
                    .await?
            }
        };
        Ok(self.writer.insert(writer))
    }

    async fn write(&mut self, ctx: &SessionCtx, offset: u64, data: &[u8]) -> Result<(), VfsError> {
        let append = self.append;
        let w = self.writer(ctx).await?;
        let at = if append { w.len() } else { offset };
        w.write_at(at, data).await
    }

    /// Commits what was written; the file becomes visible and durable.
    async fn commit(&mut self) -> Result<(), VfsError> {
        let Some(mut w) = self.writer.take() else {
            return Ok(());
        };
        if let Some(t) = self.mtime {
            w.set_mtime(t);
        }
        self.closed_len = w.commit().await?.size;
        Ok(())
    }

    /// The session ended with this upload open: the one interrupted-upload policy decides
    /// (`FileWriter::interrupted`): an earlier version is never replaced by a part.
    async fn abandon(mut self) {
        if let Some(w) = self.writer.take() {
            w.interrupted().await;
        }
    }
}

/// Processes one handle's requests in order until CLOSE, or until the session ends.
pub(crate) async fn run_lane(
    ctx: Arc<SessionCtx>,
    mut handle: OpenHandle,
    mut rx: mpsc::UnboundedReceiver<HandleOp>,
) {
    while let Some(op) = rx.recv().await {
        let closing = matches!(op, HandleOp::Close { .. });
        let reply = serve(&ctx, &mut handle, op).await;
        ctx.reply(reply).await;
        if closing {
            return;
        }
    }
    if let OpenHandle::Upload(upload) = handle {
        (*upload).abandon().await;
    }
}

async fn serve(ctx: &SessionCtx, handle: &mut OpenHandle, op: HandleOp) -> Reply {
    let id = op.id();
    let result = match handle {
        OpenHandle::Download { path, reader } => serve_download(ctx, path, reader, op).await,
        OpenHandle::Upload(upload) => serve_upload(ctx, upload, op).await,
        OpenHandle::Dir { entries, next } => serve_dir(ctx, entries, next, op),
    };
    result.unwrap_or_else(|e| error_reply(id, &e))
}

async fn serve_download(
    ctx: &SessionCtx,
    path: &str,
    reader: &FileReader,
    op: HandleOp,
) -> Result<Reply, VfsError> {
    Ok(match op {
        HandleOp::Read { id, offset, len } => {
            let data = reader
                .read_at(offset, len.min(MAX_READ_LEN) as usize)
                .await?;
            if data.is_empty() {
                Reply::status(id, SftpStatus::Eof, "end of file")
            } else {
                Reply::data(id, data)
            }
        }
        HandleOp::Fstat { id } => {
            let mut info = reader.info().clone();
            info.size = reader.size();
            Reply::attrs(id, &attrs_of(&info))
        }
        HandleOp::Fsetstat { id, attrs } => {
            if let Some(t) = attrs.mtime() {
                ctx.vfs.set_times(path, t).await?;
            }
            Reply::ok(id)
        }
        HandleOp::Fsync { id } | HandleOp::Close { id } => Reply::ok(id),
        HandleOp::CheckFile { id, data } => {
            check_file(&ctx.vfs, id, path, Some(reader.info().version), data).await?
        }
        HandleOp::Write { id, .. } => Reply::status(
            id,
            SftpStatus::PermissionDenied,
            "the file was opened for reading",
        ),
        HandleOp::Refused { id } => refused_write(id),
        HandleOp::Readdir { id } => {
            Reply::status(id, SftpStatus::Failure, "not a directory handle")
        }
    })
}

async fn serve_upload(ctx: &SessionCtx, up: &mut Upload, op: HandleOp) -> Result<Reply, VfsError> {
    Ok(match op {
        HandleOp::Write {
            id,
            offset,
            data,
            _permit,
        } => {
            up.write(ctx, offset, &data).await?;
            Reply::ok(id)
        }
        HandleOp::Fstat { id } => {
            let now = SystemTime::now();
            let info = FileInfo {
                name: String::new(),
                kind: coffer_storage::EntryKind::File,
                size: up.len(),
                mtime: up.mtime.unwrap_or(now),
                ctime: now,
                id: 0,
                version: 0,
            };
            Reply::attrs(id, &attrs_of(&info))
        }
        HandleOp::Fsetstat { id, attrs } => {
            if let Some(size) = attrs.size.filter(|s| *s != up.len()) {
                debug!(size, "refused to change the size of an open upload");
                return Ok(Reply::status(
                    id,
                    SftpStatus::OpUnsupported,
                    "changing the size of an open upload is not supported",
                ));
            }
            if let Some(t) = attrs.mtime() {
                up.mtime = Some(t);
                if up.writer.is_none() {
                    ctx.vfs.set_times(&up.path, t).await?;
                }
            }
            Reply::ok(id)
        }
        HandleOp::Refused { id } => {
            up.refused = true;
            refused_write(id)
        }
        HandleOp::Fsync { id } | HandleOp::Close { id } if up.refused => {
            // What arrived has a hole where the refused write was: never the file as sent.
            if let Some(w) = up.writer.take() {
                up.closed_len = w.contiguous_len();
                w.interrupted().await;
            }
            Reply::status(
                id,
                SftpStatus::Failure,
                &format!(
                    "upload incomplete: a write request was refused (more than {MAX_WRITE_LEN} \
                     bytes); an earlier version of the file is unchanged"
                ),
            )
        }
        HandleOp::Fsync { id } | HandleOp::Close { id } => {
            up.commit().await?;
            Reply::ok(id)
        }
        HandleOp::Read { id, .. } => Reply::status(
            id,
            SftpStatus::PermissionDenied,
            "the file was opened for writing",
        ),
        HandleOp::CheckFile { id, .. } => Reply::status(
            id,
            SftpStatus::Failure,
            "check-file needs a file opened for reading; this upload is not committed yet",
        ),
        HandleOp::Readdir { id } => {
            Reply::status(id, SftpStatus::Failure, "not a directory handle")
        }
    })
}

/// The answer to a WRITE larger than the server takes; names the limit.
pub(crate) fn refused_write(id: u32) -> Reply {
    Reply::status(
        id,
        SftpStatus::BadMessage,
        &format!("packet too large: a write request may carry at most {MAX_WRITE_LEN} bytes"),
    )
}

fn serve_dir(
    ctx: &SessionCtx,
    entries: &[FileInfo],
    next: &mut usize,
    op: HandleOp,
) -> Result<Reply, VfsError> {
    Ok(match op {
        HandleOp::Readdir { id } => {
            let batch = entries.get(*next..).unwrap_or_default();
            if batch.is_empty() {
                return Ok(Reply::status(id, SftpStatus::Eof, "no more entries"));
            }
            let batch = batch
                .get(..READDIR_BATCH.min(batch.len()))
                .unwrap_or_default();
            *next += batch.len();
            let names: Vec<_> = batch
                .iter()
                .map(|f| {
                    (
                        f.name.clone(),
                        long_name(f, &ctx.opts.user_name),
                        attrs_of(f),
                    )
                })
                .collect();
            Reply::name(id, &names)
        }
        HandleOp::Close { id } | HandleOp::Fsync { id } => Reply::ok(id),
        HandleOp::Fstat { id } => {
            let now = SystemTime::now();
            let info = FileInfo {
                name: String::new(),
                kind: coffer_storage::EntryKind::Dir,
                size: 0,
                mtime: now,
                ctime: now,
                id: 0,
                version: 0,
            };
            Reply::attrs(id, &attrs_of(&info))
        }
        HandleOp::Read { id, .. }
        | HandleOp::Write { id, .. }
        | HandleOp::Fsetstat { id, .. }
        | HandleOp::CheckFile { id, .. } => {
            Reply::status(id, SftpStatus::Failure, "this is a directory handle")
        }
        HandleOp::Refused { id } => refused_write(id),
    })
}
