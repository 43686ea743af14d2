//! Stored hashes over FTP: `HASH` (draft-bryan-ftpext-hash-02), `OPTS HASH` and `XSHA256`.
//!
//! The hash is the SHA-256 sealed in the file's row, never computed by reading the file back,
//! and only for a user who may read the file. SHA-256 is the one algorithm: `OPTS HASH` names
//! it and refuses any other. libunftp routes these commands to the SITE handlers of the same
//! names (patched libunftp) and then lists `HASH SHA-256*` and `XSHA256` in `FEAT`.

use async_trait::async_trait;
use libunftp::options::{Reply, ReplyCode, SiteCommandContext, SiteCommandHandler};

use super::auth::FtpUser;
use super::backend::{VfsBackend, reply};

/// The algorithm name used on the wire (draft-bryan-ftpext-hash section 3).
const ALGORITHM: &str = "SHA-256";

/// `HASH path` → `213 SHA-256 0-<size> <hex> <path>`.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Hash;

/// `XSHA256 path` → `213 <hex>`.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct XSha256;

/// `OPTS HASH [algorithm]`.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct OptsHash;

#[async_trait]
impl SiteCommandHandler<VfsBackend, FtpUser> for Hash {
    async fn handle(&self, ctx: &SiteCommandContext<VfsBackend, FtpUser>) -> Reply {
        match stored(ctx).await {
            Ok((size, hex)) => Reply::new_with_string(
                ReplyCode::FileStatus,
                format!("{ALGORITHM} 0-{size} {hex} {}", ctx.arguments),
            ),
            Err(r) => r,
        }
    }
}

#[async_trait]
impl SiteCommandHandler<VfsBackend, FtpUser> for XSha256 {
    async fn handle(&self, ctx: &SiteCommandContext<VfsBackend, FtpUser>) -> Reply {
        match stored(ctx).await {
            Ok((_, hex)) => Reply::new_with_string(ReplyCode::FileStatus, hex),
            Err(r) => r,
        }
    }
}

#[async_trait]
impl SiteCommandHandler<VfsBackend, FtpUser> for OptsHash {
    async fn handle(&self, ctx: &SiteCommandContext<VfsBackend, FtpUser>) -> Reply {
        let wanted = ctx.arguments.trim();
        if wanted.is_empty() || wanted.eq_ignore_ascii_case(ALGORITHM) {
            Reply::new(ReplyCode::CommandOkay, ALGORITHM)
        } else {
            Reply::new(
                ReplyCode::CommandNotImplementedForParameter,
                "Unknown algorithm, current selection not changed: only SHA-256 is stored",
            )
        }
    }
}

/// (size, lowercase hex) of the file named by the arguments, or the error reply.
async fn stored(ctx: &SiteCommandContext<VfsBackend, FtpUser>) -> Result<(u64, String), Reply> {
    let Some(user) = (*ctx.user).as_ref() else {
        return Err(Reply::new(ReplyCode::NotLoggedIn, "Please log in first"));
    };
    let path = ctx.cwd.join(&ctx.arguments);
    let Some(vpath) = path.to_str() else {
        return Err(Reply::new(ReplyCode::BadFileName, "names must be UTF-8"));
    };
    match user.vfs.sha256(vpath).await {
        Ok((info, hash)) => Ok((info.size, hex(&hash))),
        Err(e) => Err(libunftp::options::storage_error_reply(&reply(e))),
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::with_capacity(64), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}
