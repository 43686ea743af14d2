//! The one protocol-neutral error every front end maps to its own replies.

use std::fmt;

/// What went wrong, in terms every protocol can answer. SFTP, FTP and HTTP each map this
/// enum to a status/reply code in one table, so the three protocols answer a failure alike.
///
/// Deliberately not `#[non_exhaustive]`: every front end matches it without a catch-all arm,
/// so a new kind does not compile until SFTP, FTP and HTTP each say how they answer it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// No such file or folder.
    NotFound,
    /// The name is already taken.
    AlreadyExists,
    /// A folder was expected.
    NotADirectory,
    /// A file was expected.
    IsADirectory,
    /// The folder still holds entries.
    NotEmpty,
    /// The user lacks the permission for this operation.
    PermissionDenied,
    /// The path is malformed or hostile (`..` escaping the root, NUL, control characters, too long).
    InvalidPath,
    /// The tenant's quota would be exceeded.
    QuotaExceeded,
    /// The server's own disk (spool, local object store) is nearly full: it refuses uploads
    /// before it runs out of space. Not the client's fault; retry later.
    InsufficientStorage,
    /// Stored data failed authentication: tampered, truncated, swapped or read with the wrong key.
    Integrity,
    /// A backend (database, object store) is unreachable; the client may retry later.
    Unavailable,
    /// A key could not be had: the key provider (local key file, KMS, a customer's own KMS key)
    /// did not answer or refused. Nothing stored is damaged; the client may retry later.
    KeyUnavailable,
    /// The server is at a limit it keeps to protect itself (logins being checked, connections
    /// before login); the client should retry shortly.
    Busy,
    /// The entry changed concurrently; the client lost a race and should retry.
    Conflict,
    /// The operation is valid but not supported by Coffer (symlinks, random rewrites far behind).
    Unsupported,
    /// Wrong user name or password/key.
    AuthFailed,
    /// Too many failed logins: the account is locked for a while.
    LockedOut,
    /// A bug or an unexpected local failure.
    Internal,
}

impl ErrorKind {
    /// A stable snake_case code, used in JSON errors and logs.
    pub fn code(self) -> &'static str {
        match self {
            Self::NotFound => "not_found",
            Self::AlreadyExists => "already_exists",
            Self::NotADirectory => "not_a_directory",
            Self::IsADirectory => "is_a_directory",
            Self::NotEmpty => "not_empty",
            Self::PermissionDenied => "permission_denied",
            Self::InvalidPath => "invalid_path",
            Self::QuotaExceeded => "quota_exceeded",
            Self::InsufficientStorage => "insufficient_storage",
            Self::Integrity => "integrity_error",
            Self::Unavailable => "unavailable",
            Self::KeyUnavailable => "key_unavailable",
            Self::Busy => "busy",
            Self::Conflict => "conflict",
            Self::Unsupported => "unsupported",
            Self::AuthFailed => "auth_failed",
            Self::LockedOut => "locked_out",
            Self::Internal => "internal",
        }
    }
}

/// An error from the Vfs: a kind and a human message that never contains a file name.
#[derive(Debug)]
pub struct VfsError {
    kind: ErrorKind,
    message: String,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl VfsError {
    /// A new error. The message is shown to clients and written to logs: never put a name in it.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// Attaches the underlying cause.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// The protocol-neutral kind.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The human message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for VfsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for VfsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// Result alias for the Vfs.
pub type VfsResult<T> = Result<T, VfsError>;

impl From<coffer_meta::MetaError> for VfsError {
    fn from(e: coffer_meta::MetaError) -> Self {
        use coffer_meta::MetaError as M;
        let (kind, msg) = match &e {
            M::NotFound => (ErrorKind::NotFound, "no such file or directory"),
            M::AlreadyExists => (
                ErrorKind::AlreadyExists,
                "an entry with that name already exists",
            ),
            M::NotEmpty => (ErrorKind::NotEmpty, "directory not empty"),
            M::WrongKind("root") => (
                ErrorKind::PermissionDenied,
                "the home folder cannot be changed",
            ),
            M::WrongKind(_) => (ErrorKind::NotADirectory, "not a directory"),
            M::Cycle => (ErrorKind::InvalidPath, "cannot move a folder into itself"),
            M::Conflict => (
                ErrorKind::Conflict,
                "the file changed while this operation ran; retry",
            ),
            M::QuotaExceeded => (ErrorKind::QuotaExceeded, "quota exceeded"),
            M::Unavailable(_) => (
                ErrorKind::Unavailable,
                "metadata store unavailable; retry later",
            ),
            _ => (ErrorKind::Internal, "metadata store error"),
        };
        VfsError::new(kind, msg).with_source(e)
    }
}

impl From<coffer_object::ObjectError> for VfsError {
    fn from(e: coffer_object::ObjectError) -> Self {
        use coffer_object::ObjectError as O;
        let (kind, msg) = match &e {
            // A committed row whose object is missing or short is damage, not "no such file".
            O::NotFound | O::RangeOutOfBounds { .. } => (
                ErrorKind::Integrity,
                "stored data failed integrity verification: the object is missing or truncated",
            ),
            O::Unavailable(_) => (
                ErrorKind::Unavailable,
                "object store unavailable; retry later",
            ),
            // The free-space floor should have refused the upload first; if the disk filled
            // anyway (another process wrote to it), say so rather than "internal".
            O::Io(io) if io.kind() == std::io::ErrorKind::StorageFull => (
                ErrorKind::InsufficientStorage,
                "insufficient storage: the server's object store disk is full; retry later",
            ),
            _ => (ErrorKind::Internal, "object store error"),
        };
        VfsError::new(kind, msg).with_source(e)
    }
}

impl From<coffer_format::FormatError> for VfsError {
    fn from(e: coffer_format::FormatError) -> Self {
        VfsError::new(
            ErrorKind::Integrity,
            "stored data failed integrity verification",
        )
        .with_source(e)
    }
}

impl From<coffer_keys::KeyError> for VfsError {
    fn from(e: coffer_keys::KeyError) -> Self {
        use coffer_keys::KeyError as K;
        let (kind, msg) = match &e {
            // Stored bytes that do not authenticate: damage or tampering.
            K::UnwrapFailed | K::DecryptFailed | K::BadBlob | K::NotUtf8 => (
                ErrorKind::Integrity,
                "key or encrypted metadata failed verification",
            ),
            // The key provider cannot give a key: nothing stored is damaged, retry later.
            K::Io(_)
            | K::InsecurePermissions { .. }
            | K::BadKeyFile { .. }
            | K::NoMatchingMasterKey
            | K::Unavailable(_)
            | K::NoKms
            | K::UnknownMasterKey(_)
            | K::NoSuchRegion(_) => (
                ErrorKind::KeyUnavailable,
                "encryption key unavailable; retry later",
            ),
            K::Random | K::SealFailed => (ErrorKind::Internal, "encryption failed"),
        };
        VfsError::new(kind, msg).with_source(e)
    }
}

impl From<crate::ids::RandomFailed> for VfsError {
    fn from(e: crate::ids::RandomFailed) -> Self {
        VfsError::new(ErrorKind::Internal, "the OS random generator failed").with_source(e)
    }
}

/// Shorthand for an internal error with a cause.
pub(crate) fn internal(msg: &str, e: impl std::error::Error + Send + Sync + 'static) -> VfsError {
    VfsError::new(ErrorKind::Internal, msg).with_source(e)
}
