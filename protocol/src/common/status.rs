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
        | ErrorKind::InsufficientStorage
        | ErrorKind::Integrity
        | ErrorKind::Unavailable
        | ErrorKind::Conflict
        | ErrorKind::KeyUnavailable
        | ErrorKind::Busy
        | ErrorKind::Internal => SftpStatus::Failure,
    }
}

/// The FTP reply for a storage failure, as the libunftp storage error kind that selects it.
///
/// | storage kind | FTP reply |
/// |---|---|
/// | `NotFound`, `IsADirectory`, `AlreadyExists` | 550 file not available |
/// | `NotADirectory` | 550 directory not available |
/// | `NotEmpty` | 550 directory not empty |
/// | `PermissionDenied`, `AuthFailed`, `LockedOut` | 550 permission denied |
/// | `InvalidPath` | 553 file name not allowed |
///
/// The reply text is the error's own message (never a name), e.g. `550 an entry with that
/// name already exists` for `MKD` of a folder that exists, as vsftpd and ProFTPD answer it.
/// | `QuotaExceeded` | 552 exceeded storage allocation |
/// | `InsufficientStorage` | 452 insufficient storage space (the server's disk; retry later) |
/// | `Unsupported` | 502 not implemented |
/// | `Unavailable`, `Conflict`, `KeyUnavailable`, `Busy` | 450 file busy: retry later |
/// | `Integrity`, `Internal` | 451 local error |
pub fn ftp_error_kind(kind: ErrorKind) -> unftp_core::storage::ErrorKind {
    use unftp_core::storage::ErrorKind as F;
    match kind {
        ErrorKind::NotFound | ErrorKind::IsADirectory | ErrorKind::AlreadyExists => {
            F::PermanentFileNotAvailable
        }
        ErrorKind::NotADirectory => F::PermanentDirectoryNotAvailable,
        ErrorKind::NotEmpty => F::PermanentDirectoryNotEmpty,
        ErrorKind::PermissionDenied | ErrorKind::AuthFailed | ErrorKind::LockedOut => {
            F::PermissionDenied
        }
        ErrorKind::InvalidPath => F::FileNameNotAllowedError,
        ErrorKind::QuotaExceeded => F::ExceededStorageAllocationError,
        ErrorKind::InsufficientStorage => F::InsufficientStorageSpaceError,
        ErrorKind::Unsupported => F::CommandNotImplemented,
        ErrorKind::Unavailable
        | ErrorKind::Conflict
        | ErrorKind::KeyUnavailable
        | ErrorKind::Busy => F::TransientFileNotAvailable,
        ErrorKind::Integrity | ErrorKind::Internal => F::LocalError,
    }
}

/// `true` for the failures of a login that say "not now" rather than "no": the hashing pool
/// (or this address's share of it) is full, or a store or key provider does not answer. FTP
/// answers them `421` and closes (clients retry), never `530` (which clients take for a wrong
/// password and give up on); HTTPS answers `503`, SSH refuses the attempt and the client may
/// try again.
pub fn login_retry_later(kind: ErrorKind) -> bool {
    matches!(
        kind,
        ErrorKind::Busy | ErrorKind::Unavailable | ErrorKind::KeyUnavailable
    )
}

/// The three-digit FTP reply code libunftp sends for `kind`.
pub fn ftp_reply_code(kind: ErrorKind) -> u16 {
    let shown = ftp_error_kind(kind).to_string();
    shown.get(..3).and_then(|c| c.parse().ok()).unwrap_or(451)
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
        ErrorKind::QuotaExceeded | ErrorKind::InsufficientStorage => 507,
        ErrorKind::Unavailable | ErrorKind::KeyUnavailable | ErrorKind::Busy => 503,
        ErrorKind::Unsupported => 501,
        ErrorKind::AuthFailed => 401,
        ErrorKind::LockedOut => 429,
        ErrorKind::Integrity | ErrorKind::Internal => 500,
    };
    HttpStatus {
        status,
        code: kind.code(),
    }
}

/// An HTTP error that is not a storage failure: the request, its credentials or its
/// connection is at fault. With [`http_status`] this is the whole list of what the HTTPS front
/// end answers under `/api/v1/` (docs/HTTPS.md shows the same table).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HttpError {
    /// `Range` lies outside the file.
    RangeNotSatisfiable,
    /// A state change from another site, or without the page's CSRF token.
    Csrf,
    /// The browser session is gone or idle too long.
    SessionExpired,
    /// The request body ended before the client finished it.
    UploadInterrupted,
    /// The request is malformed (body, headers, query).
    BadRequest,
    /// A new name that is not one name (holds `/` or `\`, or is `.`, `..` or empty).
    InvalidName,
    /// `If-None-Match: *` and the file exists.
    PreconditionFailed,
    /// No such API endpoint.
    NoRoute,
    /// The endpoint exists but not with this method.
    MethodNotAllowed,
    /// The request body is larger than the endpoint takes.
    PayloadTooLarge,
    /// The request body's media type is not what the endpoint takes.
    UnsupportedMediaType,
}

impl HttpError {
    /// Every HTTP-level error, for tables and tests.
    pub const ALL: [HttpError; 11] = [
        Self::RangeNotSatisfiable,
        Self::Csrf,
        Self::SessionExpired,
        Self::UploadInterrupted,
        Self::BadRequest,
        Self::InvalidName,
        Self::PreconditionFailed,
        Self::NoRoute,
        Self::MethodNotAllowed,
        Self::PayloadTooLarge,
        Self::UnsupportedMediaType,
    ];

    /// Its status and stable JSON code.
    pub fn status(self) -> HttpStatus {
        let (status, code) = match self {
            Self::RangeNotSatisfiable => (416, "range_not_satisfiable"),
            Self::Csrf => (403, "csrf"),
            Self::SessionExpired => (401, "session_expired"),
            Self::UploadInterrupted => (400, "upload_interrupted"),
            Self::BadRequest => (400, "bad_request"),
            Self::InvalidName => (400, "invalid_name"),
            Self::PreconditionFailed => (412, "precondition_failed"),
            Self::NoRoute => (404, "no_route"),
            Self::MethodNotAllowed => (405, "method_not_allowed"),
            Self::PayloadTooLarge => (413, "payload_too_large"),
            Self::UnsupportedMediaType => (415, "unsupported_media_type"),
        };
        HttpStatus { status, code }
    }

    /// The error for a bare status some layer below the handlers produced (the router's 405,
    /// an extractor's rejection), so that it too gets a JSON body with a stable code.
    pub fn for_status(status: u16) -> Option<HttpError> {
        Some(match status {
            404 => Self::NoRoute,
            405 => Self::MethodNotAllowed,
            413 => Self::PayloadTooLarge,
            415 => Self::UnsupportedMediaType,
            400 | 422 => Self::BadRequest,
            _ => return None,
        })
    }
}

/// Every storage kind, for tables and tests (a `match` in [`http_status`] keeps it complete).
pub const ALL_KINDS: [ErrorKind; 18] = [
    ErrorKind::NotFound,
    ErrorKind::AlreadyExists,
    ErrorKind::NotADirectory,
    ErrorKind::IsADirectory,
    ErrorKind::NotEmpty,
    ErrorKind::PermissionDenied,
    ErrorKind::InvalidPath,
    ErrorKind::QuotaExceeded,
    ErrorKind::InsufficientStorage,
    ErrorKind::Integrity,
    ErrorKind::Unavailable,
    ErrorKind::KeyUnavailable,
    ErrorKind::Busy,
    ErrorKind::Conflict,
    ErrorKind::Unsupported,
    ErrorKind::AuthFailed,
    ErrorKind::LockedOut,
    ErrorKind::Internal,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_not_now_failures_make_a_login_retry_later() {
        let later: Vec<_> = ALL_KINDS
            .iter()
            .copied()
            .filter(|k| login_retry_later(*k))
            .collect();
        assert_eq!(
            later,
            [
                ErrorKind::Unavailable,
                ErrorKind::KeyUnavailable,
                ErrorKind::Busy
            ]
        );
        // A wrong password, an unknown or locked user stay "no" (FTP 530).
        assert!(!login_retry_later(ErrorKind::AuthFailed));
        assert!(!login_retry_later(ErrorKind::LockedOut));
    }

    #[test]
    fn ftp_missing_file_and_permission_failures_are_550() {
        for k in [
            ErrorKind::NotFound,
            ErrorKind::IsADirectory,
            ErrorKind::NotADirectory,
            ErrorKind::NotEmpty,
            ErrorKind::PermissionDenied,
            ErrorKind::LockedOut,
        ] {
            assert_eq!(ftp_reply_code(k), 550, "{k:?}");
        }
    }

    #[test]
    fn ftp_quota_is_552_and_bad_names_are_553() {
        assert_eq!(ftp_reply_code(ErrorKind::QuotaExceeded), 552);
        assert_eq!(ftp_reply_code(ErrorKind::InvalidPath), 553);
        // MKD of a folder that exists: the 550 clients recognise (vsftpd, ProFTPD).
        assert_eq!(ftp_reply_code(ErrorKind::AlreadyExists), 550);
    }

    #[test]
    fn ftp_retryable_failures_are_transient_4xx_and_damage_is_451() {
        assert_eq!(ftp_reply_code(ErrorKind::Unavailable), 450);
        assert_eq!(ftp_reply_code(ErrorKind::Conflict), 450);
        assert_eq!(ftp_reply_code(ErrorKind::Integrity), 451);
        assert_eq!(ftp_reply_code(ErrorKind::Internal), 451);
        assert_eq!(ftp_reply_code(ErrorKind::Unsupported), 502);
    }

    #[test]
    fn a_full_server_disk_is_452_507_and_a_failure_naming_it() {
        assert_eq!(ftp_reply_code(ErrorKind::InsufficientStorage), 452);
        assert_eq!(
            http_status(ErrorKind::InsufficientStorage),
            HttpStatus {
                status: 507,
                code: "insufficient_storage"
            }
        );
        assert_eq!(
            sftp_status(ErrorKind::InsufficientStorage),
            SftpStatus::Failure
        );
    }

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
    fn key_unavailable_is_retryable_and_distinct_from_damage() {
        assert_eq!(http_status(ErrorKind::KeyUnavailable).status, 503);
        assert_eq!(
            http_status(ErrorKind::KeyUnavailable).code,
            "key_unavailable"
        );
        assert_eq!(ftp_reply_code(ErrorKind::KeyUnavailable), 450);
        assert_eq!(http_status(ErrorKind::Busy).status, 503);
        assert_eq!(http_status(ErrorKind::Integrity).code, "integrity_error");
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

    #[test]
    fn every_http_code_is_in_the_table_of_docs_https() {
        let doc = include_str!("../../../docs/HTTPS.md");
        let codes = ALL_KINDS
            .iter()
            .map(|k| http_status(*k))
            .chain(HttpError::ALL.iter().map(|e| e.status()));
        for s in codes {
            let row = format!("| `{}` | {} |", s.code, s.status);
            assert!(doc.contains(&row), "docs/HTTPS.md lacks the row {row}");
        }
    }

    #[test]
    fn http_level_codes_are_distinct_from_storage_codes() {
        let mut seen = std::collections::HashSet::new();
        for k in ALL_KINDS {
            assert!(seen.insert(http_status(k).code), "{k:?}");
        }
        for e in HttpError::ALL {
            assert!(seen.insert(e.status().code), "{e:?}");
        }
    }
}
