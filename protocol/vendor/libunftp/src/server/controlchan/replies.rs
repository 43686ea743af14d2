//! Coffer patch: the one table from a storage error to the reply a client sees, and the check
//! that answers a listing of a folder that cannot be listed before any data transfer starts.

use std::{path::PathBuf, sync::Arc};

use crate::{
    auth::UserDetail,
    options::ClientText,
    server::{
        controlchan::{Reply, ReplyCode},
        session::Session,
    },
    storage::{Error, ErrorKind, Metadata, StorageBackend},
};

/// The reply for a storage error: the code its kind selects, and the backend's own message
/// when it gave one as [`ClientText`] (otherwise a fixed text per kind). Never the error's
/// `Display`, which repeats the code.
pub fn storage_error_reply(err: &Error) -> Reply {
    let (code, default) = match err.kind() {
        ErrorKind::ExceededStorageAllocationError => (ReplyCode::ExceededStorageAllocation, "Exceeded storage allocation"),
        ErrorKind::FileNameNotAllowedError => (ReplyCode::BadFileName, "File name not allowed"),
        ErrorKind::InsufficientStorageSpaceError => (ReplyCode::OutOfSpace, "Insufficient storage space"),
        ErrorKind::LocalError => (ReplyCode::LocalError, "Local error in processing"),
        ErrorKind::PageTypeUnknown => (ReplyCode::PageTypeUnknown, "Page type unknown"),
        ErrorKind::TransientFileNotAvailable => (ReplyCode::TransientFileError, "File busy or unavailable; try again later"),
        ErrorKind::PermanentFileNotAvailable => (ReplyCode::FileError, "File not available"),
        ErrorKind::PermanentDirectoryNotAvailable => (ReplyCode::FileError, "Directory not available"),
        ErrorKind::PermanentDirectoryNotEmpty => (ReplyCode::FileError, "Directory not empty"),
        ErrorKind::PermissionDenied => (ReplyCode::FileError, "Permission denied"),
        ErrorKind::CommandNotImplemented => (ReplyCode::CommandNotImplemented, "Command not implemented"),
        ErrorKind::ConnectionClosed => (ReplyCode::ConnectionClosed, "Connection closed; transfer aborted"),
    };
    let text = std::error::Error::source(err)
        .and_then(|s| s.downcast_ref::<ClientText>())
        .map(|t| t.0.clone())
        .unwrap_or_else(|| default.to_string());
    Reply::new_with_string(code, text)
}

/// What a listing of `path` (relative to the working directory; none or `.` is the working
/// directory) reads: taken from the session so that the check runs without its lock.
pub(crate) struct ListingTarget<Storage, User> {
    user: Arc<Option<User>>,
    storage: Arc<Storage>,
    path: PathBuf,
}

pub(crate) fn listing_target<Storage, User>(session: &Session<Storage, User>, path: Option<&str>) -> ListingTarget<Storage, User>
where
    User: UserDetail + 'static,
    Storage: StorageBackend<User> + 'static,
    Storage::Metadata: Metadata,
{
    let path = match path {
        None | Some(".") | Some("") => session.cwd.clone(),
        Some(p) => session.cwd.join(p),
    };
    ListingTarget {
        user: session.user.clone(),
        storage: session.storage.clone(),
        path,
    }
}

/// `None` when the target can be listed, else the reply that refuses the listing. Run before
/// the `150`, so a client listing a folder that does not exist gets `550` at once.
pub(crate) async fn unlistable<Storage, User>(target: ListingTarget<Storage, User>) -> Option<Reply>
where
    User: UserDetail + 'static,
    Storage: StorageBackend<User> + 'static,
    Storage::Metadata: Metadata,
{
    let Some(user) = (*target.user).as_ref() else {
        return Some(Reply::new(ReplyCode::NotLoggedIn, "Please log in first"));
    };
    match target.storage.metadata(user, &target.path).await {
        Ok(_) => None,
        Err(e) => Some(storage_error_reply(&e)),
    }
}

/// Ends the data connection a refused command would have used.
pub(crate) fn drop_data_connection<Storage, User>(session: &mut Session<Storage, User>)
where
    User: UserDetail + 'static,
    Storage: StorageBackend<User> + 'static,
    Storage::Metadata: Metadata,
{
    session.data_cmd_tx = None;
    if let Some(tx) = session.data_abort_tx.take() {
        let _ = tx.try_send(());
    }
}
