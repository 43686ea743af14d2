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

/// An HTTP answer to a storage failure: the status code and the stable JSON `code`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HttpStatus {
    /// The HTTP status code.
    pub status: u16,
    /// The stable snake_case code of the JSON error body (`ErrorKind::code`).
    pub code: &'static str,
}

/// The HTTP status for a storage failure. The JSON `code` is the kind's own stable code, so a
/// script can tell failures apart without parsing messages.
pub fn http_status(kind: ErrorKind) -> HttpStatus {
    let status = match kind {
        ErrorKind::NotFound => 404,
        ErrorKind::AlreadyExists
        | ErrorKind::NotADirectory
        | ErrorKind::IsADirectory
        | ErrorKind::NotEmpty
        | ErrorKind::Conflict => 409,
        ErrorKind::PermissionDenied => 403,
        ErrorKind::InvalidPath => 400,
        ErrorKind::QuotaExceeded => 507,
        ErrorKind::Unavailable => 503,
        ErrorKind::Unsupported => 501,
        ErrorKind::AuthFailed => 401,
        ErrorKind::LockedOut => 429,
        ErrorKind::Integrity | ErrorKind::Internal => 500,
        _ => 500,
    };
    HttpStatus {
        status,
        code: kind.code(),
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

    #[test]
    fn http_answers_missing_files_404_and_lockout_429_with_stable_codes() {
        assert_eq!(
            http_status(ErrorKind::NotFound),
            HttpStatus {
                status: 404,
                code: "not_found"
            }
        );
        assert_eq!(http_status(ErrorKind::LockedOut).status, 429);
        assert_eq!(http_status(ErrorKind::LockedOut).code, "locked_out");
        assert_eq!(http_status(ErrorKind::AuthFailed).status, 401);
    }

    #[test]
    fn http_hostile_paths_are_400_and_name_clashes_409() {
        assert_eq!(http_status(ErrorKind::InvalidPath).status, 400);
        for k in [
            ErrorKind::AlreadyExists,
            ErrorKind::NotEmpty,
            ErrorKind::IsADirectory,
        ] {
            assert_eq!(http_status(k).status, 409, "{k:?}");
        }
        assert_eq!(http_status(ErrorKind::QuotaExceeded).status, 507);
        assert_eq!(http_status(ErrorKind::Integrity).status, 500);
    }
}
