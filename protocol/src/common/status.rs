//! The one table from a storage [`ErrorKind`] to each protocol's reply code.
//!
//! Every front end answers the same failure the same way because it looks it up here.

use coffer_storage::ErrorKind;

/// SFTP version 3 status codes (draft-ietf-secsh-filexfer-02, section 7).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum SftpStatus {
    /// `SSH_FX_OK`: the request succeeded.
    Ok = 0,
    /// `SSH_FX_EOF`: read past the end of a file, or no more directory entries.
    Eof = 1,
    /// `SSH_FX_NO_SUCH_FILE`: the path names nothing.
    NoSuchFile = 2,
    /// `SSH_FX_PERMISSION_DENIED`: the user may not do this.
    PermissionDenied = 3,
    /// `SSH_FX_FAILURE`: any other failure; the message says which.
    Failure = 4,
    /// `SSH_FX_BAD_MESSAGE`: the packet was malformed.
    BadMessage = 5,
    /// `SSH_FX_OP_UNSUPPORTED`: the operation is not implemented by this server.
    OpUnsupported = 8,
}

impl SftpStatus {
    /// The code on the wire.
    pub fn code(self) -> u32 {
        self as u32
    }
}

/// The SFTP status for a storage failure. SFTP v3 has few codes: everything without its own
/// code is `SSH_FX_FAILURE`, and the error's message (never a file name) tells the user why.
pub fn sftp_status(kind: ErrorKind) -> SftpStatus {
    match kind {
        ErrorKind::NotFound => SftpStatus::NoSuchFile,
        ErrorKind::PermissionDenied | ErrorKind::AuthFailed | ErrorKind::LockedOut => {
            SftpStatus::PermissionDenied
        }
        ErrorKind::Unsupported => SftpStatus::OpUnsupported,
        ErrorKind::AlreadyExists
        | ErrorKind::NotADirectory
        | ErrorKind::IsADirectory
        | ErrorKind::NotEmpty
        | ErrorKind::InvalidPath
        | ErrorKind::QuotaExceeded
        | ErrorKind::Integrity
        | ErrorKind::Unavailable
        | ErrorKind::Conflict
        | ErrorKind::Internal => SftpStatus::Failure,
        _ => SftpStatus::Failure,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_file_is_no_such_file_so_clients_can_tell_it_from_other_failures() {
        assert_eq!(sftp_status(ErrorKind::NotFound), SftpStatus::NoSuchFile);
        assert_eq!(SftpStatus::NoSuchFile.code(), 2);
    }

    #[test]
    fn permission_and_login_failures_are_permission_denied() {
        for k in [
            ErrorKind::PermissionDenied,
            ErrorKind::AuthFailed,
            ErrorKind::LockedOut,
        ] {
            assert_eq!(sftp_status(k), SftpStatus::PermissionDenied, "{k:?}");
        }
    }

    #[test]
    fn symlinks_and_far_rewrites_are_op_unsupported() {
        assert_eq!(sftp_status(ErrorKind::Unsupported).code(), 8);
    }

    #[test]
    fn quota_and_integrity_failures_are_generic_failures() {
        assert_eq!(sftp_status(ErrorKind::QuotaExceeded), SftpStatus::Failure);
        assert_eq!(sftp_status(ErrorKind::Integrity), SftpStatus::Failure);
    }
}
