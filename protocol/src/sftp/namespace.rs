//! The namespace lane: path requests (open, stat, mkdir, rename, realpath, extensions) in
//! arrival order, each answered from the user's [`coffer_storage::Vfs`].

use crate::common::time::ls_date;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use coffer_storage::{ErrorKind, FileInfo, VPath, VfsError, WriteOptions};
use tokio::sync::mpsc;
use tracing::debug;

use super::handles::{OpenHandle, Upload};
use super::session::{MAX_OPEN_HANDLES, NamespaceOp, SessionCtx};
use super::wire::{
    Attrs, MAX_PACKET_LEN, MAX_READ_LEN, MAX_WRITE_LEN, Reply, Request, get_string, get_u32,
    get_u64, open_flags,
};
use crate::common::{SftpStatus, sftp_status};

/// Extensions announced in SSH_FXP_VERSION. `statvfs@openssh.com` must say "2": the OpenSSH
/// client ignores other versions.
const EXTENSIONS: &[(&str, &str)] = &[
    ("posix-rename@openssh.com", "1"),
    ("statvfs@openssh.com", "2"),
    ("fsync@openssh.com", "1"),
    ("limits@openssh.com", "1"),
    ("expand-path@openssh.com", "1"),
    // draft-ietf-secsh-filexfer-extensions-00: the stored whole-file SHA-256 only.
    ("check-file", "sha256"),
];

/// Block size reported by `statvfs@openssh.com`.
const STATVFS_BLOCK: u64 = 4096;
/// Free space reported for a tenant without a quota (1 PiB).
const UNLIMITED_BYTES: u64 = 1 << 50;

/// Processes path requests until the session ends.
pub(crate) async fn run_namespace_lane(
    ctx: Arc<SessionCtx>,
    mut rx: mpsc::UnboundedReceiver<NamespaceOp>,
) {
    while let Some(op) = rx.recv().await {
        let reply = match op {
            NamespaceOp::Reply(r) => r,
            NamespaceOp::Request(req) => {
                let id = req.id().unwrap_or(0);
                serve(&ctx, req)
                    .await
                    .unwrap_or_else(|e| error_reply(id, &e))
            }
        };
        ctx.reply(reply).await;
    }
}

/// The STATUS reply for a storage error: the code from the shared table, the error's message
/// (which never names a file).
pub(crate) fn error_reply(id: u32, e: &VfsError) -> Reply {
    debug!(kind = e.kind().code(), "sftp request failed");
    Reply::status(id, sftp_status(e.kind()), e.message())
}

fn text(raw: &Bytes) -> Result<&str, VfsError> {
    std::str::from_utf8(raw)
        .map_err(|_| VfsError::new(ErrorKind::InvalidPath, "names must be valid UTF-8"))
}

async fn serve(ctx: &Arc<SessionCtx>, req: Request) -> Result<Reply, VfsError> {
    let vfs = &ctx.vfs;
    Ok(match req {
        Request::Init { .. } => Reply::version(EXTENSIONS),
        Request::Open {
            id,
            path,
            pflags,
            attrs: _,
        } => open(ctx, id, text(&path)?, pflags).await?,
        Request::Opendir { id, path } => {
            let entries = vfs.list(text(&path)?).await?;
            register(ctx, id, OpenHandle::Dir { entries, next: 0 })
        }
        Request::Stat { id, path } => Reply::attrs(id, &attrs_of(&vfs.stat(text(&path)?).await?)),
        Request::Setstat { id, path, attrs } => setstat(ctx, id, text(&path)?, &attrs).await?,
        Request::Remove { id, path } => vfs.remove(text(&path)?).await.map(|()| Reply::ok(id))?,
        Request::Mkdir { id, path } => vfs.mkdir(text(&path)?).await.map(|_| Reply::ok(id))?,
        Request::Rmdir { id, path } => vfs.rmdir(text(&path)?).await.map(|()| Reply::ok(id))?,
        Request::Realpath { id, path } => name_reply(id, resolve(text(&path)?)?),
        Request::Rename { id, from, to } => vfs
            .rename(text(&from)?, text(&to)?, false)
            .await
            .map(|()| Reply::ok(id))?,
        Request::Symlink { id } => Reply::status(
            id,
            SftpStatus::OpUnsupported,
            "symbolic links are not supported on this server",
        ),
        Request::Extended { id, name, data } => extended(ctx, id, &name, data).await?,
        Request::Unknown { id } => {
            Reply::status(id, SftpStatus::OpUnsupported, "operation not supported")
        }
        // Handle requests never reach this lane; answer defensively all the same.
        other => Reply::status(
            other.id().unwrap_or(0),
            SftpStatus::Failure,
            "invalid handle",
        ),
    })
}

fn register(ctx: &Arc<SessionCtx>, id: u32, handle: OpenHandle) -> Reply {
    match ctx.open_handle(handle) {
        Some(h) => Reply::handle(id, &h),
        None => Reply::status(
            id,
            SftpStatus::Failure,
            "too many open files in this session",
        ),
    }
}

async fn open(ctx: &Arc<SessionCtx>, id: u32, path: &str, pflags: u32) -> Result<Reply, VfsError> {
    let vfs = &ctx.vfs;
    if pflags & (open_flags::WRITE | open_flags::APPEND) == 0 {
        let reader = vfs.open_read(path).await?;
        return Ok(register(
            ctx,
            id,
            OpenHandle::Download {
                path: path.to_owned(),
                reader: Box::new(reader),
            },
        ));
    }
    if pflags & open_flags::CREAT == 0 {
        // Without CREAT the file must exist already.
        vfs.stat(path).await?;
    }
    let opts = WriteOptions {
        truncate: pflags & open_flags::TRUNC != 0,
        exclusive: pflags & open_flags::CREAT != 0 && pflags & open_flags::EXCL != 0,
    };
    let writer = vfs.create(path, opts).await?;
    let upload = Upload::new(path.to_owned(), writer, pflags & open_flags::APPEND != 0);
    Ok(register(ctx, id, OpenHandle::Upload(Box::new(upload))))
}

async fn setstat(ctx: &SessionCtx, id: u32, path: &str, attrs: &Attrs) -> Result<Reply, VfsError> {
    let vfs = &ctx.vfs;
    if let Some(size) = attrs.size {
        let info = vfs.stat(path).await?;
        if info.is_dir() {
            return Err(VfsError::new(ErrorKind::IsADirectory, "is a directory"));
        }
        if size != info.size {
            if size != 0 {
                return Ok(Reply::status(
                    id,
                    SftpStatus::OpUnsupported,
                    "only truncation to zero bytes is supported",
                ));
            }
            vfs.create(
                path,
                WriteOptions {
                    truncate: true,
                    exclusive: false,
                },
            )
            .await?
            .commit()
            .await?;
        }
    }
    if let Some(t) = attrs.mtime() {
        vfs.set_times(path, t).await?;
    }
    Ok(Reply::ok(id))
}

async fn extended(
    ctx: &SessionCtx,
    id: u32,
    name: &[u8],
    mut data: Bytes,
) -> Result<Reply, VfsError> {
    let vfs = &ctx.vfs;
    let malformed = || VfsError::new(ErrorKind::InvalidPath, "malformed extended request");
    Ok(match name {
        b"posix-rename@openssh.com" => {
            let from = get_string(&mut data).map_err(|_| malformed())?;
            let to = get_string(&mut data).map_err(|_| malformed())?;
            vfs.rename(text(&from)?, text(&to)?, true).await?;
            Reply::ok(id)
        }
        b"statvfs@openssh.com" => {
            let path = get_string(&mut data).map_err(|_| malformed())?;
            vfs.stat(text(&path)?).await?;
            Reply::extended_u64s(id, &statvfs(vfs.quota().await?))
        }
        b"limits@openssh.com" => Reply::extended_u64s(
            id,
            &[
                u64::from(MAX_PACKET_LEN),
                u64::from(MAX_READ_LEN),
                u64::from(MAX_WRITE_LEN),
                MAX_OPEN_HANDLES as u64,
            ],
        ),
        b"expand-path@openssh.com" => {
            let path = get_string(&mut data).map_err(|_| malformed())?;
            let path = text(&path)?;
            let path = path.strip_prefix('~').unwrap_or(path);
            name_reply(id, resolve(path)?)
        }
        b"check-file-name" => {
            let path = get_string(&mut data).map_err(|_| malformed())?;
            check_file(vfs, id, text(&path)?, None, data).await?
        }
        b"hardlink@openssh.com" => Reply::status(
            id,
            SftpStatus::OpUnsupported,
            "hard links are not supported on this server",
        ),
        _ => Reply::status(id, SftpStatus::OpUnsupported, "extension not supported"),
    })
}

/// Answers `check-file-name` (and `check-file-handle`, with the handle's path) from the
/// SHA-256 stored in the file's row. `data` holds the rest of the request: the algorithm list,
/// start offset, length and block size. Only the stored hash can be given: `sha256` over the
/// whole file as one block (offset 0; length 0 or up to the end; block size 0 or at least the
/// file's size); any other request is `SSH_FX_OP_UNSUPPORTED`.
pub(crate) async fn check_file(
    vfs: &coffer_storage::Vfs,
    id: u32,
    path: &str,
    opened_version: Option<i64>,
    mut data: Bytes,
) -> Result<Reply, VfsError> {
    let malformed = || VfsError::new(ErrorKind::InvalidPath, "malformed check-file request");
    let algorithms = get_string(&mut data).map_err(|_| malformed())?;
    let start = get_u64(&mut data).map_err(|_| malformed())?;
    let length = get_u64(&mut data).map_err(|_| malformed())?;
    let block = get_u32(&mut data).map_err(|_| malformed())?;
    let wants_sha256 = text(&algorithms)?
        .split(',')
        .any(|a| a.trim().eq_ignore_ascii_case("sha256"));
    if !wants_sha256 {
        return Ok(Reply::status(
            id,
            SftpStatus::OpUnsupported,
            "only sha256 is available: the server stores the SHA-256 of each file",
        ));
    }
    let (info, hash) = vfs.sha256(&resolve(path)?).await?;
    if opened_version.is_some_and(|v| v != info.version) {
        return Ok(Reply::status(
            id,
            SftpStatus::Failure,
            "the file was replaced since this handle was opened; open it again",
        ));
    }
    let whole = start == 0
        && (length == 0 || length >= info.size)
        && (block == 0 || u64::from(block) >= info.size);
    if !whole {
        return Ok(Reply::status(
            id,
            SftpStatus::OpUnsupported,
            "only the SHA-256 of the whole file is stored: use offset 0, length 0, block size 0",
        ));
    }
    Ok(Reply::check_file(id, "sha256", &hash))
}

/// statvfs fields: bsize, frsize, blocks, bfree, bavail, files, ffree, favail, fsid, flag, namemax.
fn statvfs(q: coffer_storage::QuotaInfo) -> [u64; 11] {
    let total = q
        .limit_bytes
        .unwrap_or(q.used_bytes.saturating_add(UNLIMITED_BYTES));
    let free = total.saturating_sub(q.used_bytes);
    let blocks = total / STATVFS_BLOCK;
    let bfree = free / STATVFS_BLOCK;
    let files = q.files.saturating_add(1 << 20);
    [
        STATVFS_BLOCK,
        STATVFS_BLOCK,
        blocks,
        bfree,
        bfree,
        files,
        files - q.files,
        files - q.files,
        0,
        0,
        255,
    ]
}

/// Canonical absolute form of a client path. `..` at the root stays at the root, as in a
/// chroot; names are checked like every other path.
pub(crate) fn resolve(raw: &str) -> Result<String, VfsError> {
    let mut parts: Vec<&str> = Vec::new();
    for part in raw.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            name => parts.push(name),
        }
    }
    Ok(VPath::parse(&parts.join("/"))?.to_string())
}

fn name_reply(id: u32, path: String) -> Reply {
    Reply::name(id, &[(path, String::new(), Attrs::default())])
}

/// Mode bits reported for files and folders: the owner reads and writes; permissions are
/// enforced by Coffer, not by these bits.
const FILE_MODE: u32 = 0o100_644;
const DIR_MODE: u32 = 0o040_755;

fn epoch_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// SFTP attributes of an entry.
pub(crate) fn attrs_of(info: &FileInfo) -> Attrs {
    let mtime = u32::try_from(epoch_secs(info.mtime)).unwrap_or(u32::MAX);
    Attrs {
        size: Some(info.size),
        uid_gid: Some((0, 0)),
        permissions: Some(if info.is_dir() { DIR_MODE } else { FILE_MODE }),
        atime_mtime: Some((mtime, mtime)),
    }
}

/// The `ls -l` line FileZilla and WinSCP parse:
/// `-rw-r--r--    1 alice    alice        1234 Jan  2 15:04 name`.
pub(crate) fn long_name(info: &FileInfo, owner: &str) -> String {
    let mode = if info.is_dir() {
        "drwxr-xr-x"
    } else {
        "-rw-r--r--"
    };
    let date = ls_date(epoch_secs(info.mtime), epoch_secs(SystemTime::now()));
    format!(
        "{mode}    1 {owner:<8} {owner:<8} {size:>8} {date} {name}",
        size = info.size,
        name = info.name
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn realpath_clamps_dotdot_at_the_root_like_a_chroot() {
        assert_eq!(resolve("").unwrap(), "/");
        assert_eq!(resolve(".").unwrap(), "/");
        assert_eq!(resolve("../../etc").unwrap(), "/etc");
        assert_eq!(resolve("/a/./b/../c").unwrap(), "/a/c");
        assert_eq!(resolve("a b/é").unwrap(), "/a b/é");
    }

    #[test]
    fn realpath_refuses_control_characters() {
        assert_eq!(
            resolve("a\u{1}b").unwrap_err().kind(),
            ErrorKind::InvalidPath
        );
    }

    #[test]
    fn long_name_has_the_nine_ls_columns_clients_parse() {
        let t = UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        let info = FileInfo {
            name: "my file.txt".into(),
            kind: coffer_storage::EntryKind::File,
            size: 1234,
            mtime: t,
            ctime: t,
            id: 1,
            version: 1,
        };
        let line = long_name(&info, "alice");
        assert!(line.starts_with("-rw-r--r--"), "{line}");
        assert!(line.ends_with(" my file.txt"), "{line}");
        assert!(line.contains(" 1234 Nov 14  2023 "), "{line}");
        // Eight columns and a name that itself holds one space.
        assert_eq!(line.split_whitespace().count(), 10, "{line}");
    }

    #[test]
    fn statvfs_reports_the_quota_left() {
        let q = coffer_storage::QuotaInfo {
            used_bytes: 4096 * 10,
            files: 3,
            limit_bytes: Some(4096 * 100),
        };
        let v = statvfs(q);
        assert_eq!(v[2], 100);
        assert_eq!(v[3], 90);
    }
}
