//! Why the SFTP front end could not start or stopped.

use std::net::SocketAddr;
use std::path::PathBuf;

/// Errors that stop the SFTP listener (errors of one session only end that session).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SftpError {
    /// The listen address could not be bound.
    #[error("sftp.listen: cannot bind {addr}: {source}")]
    Bind {
        /// The configured address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// A host key could not be read, generated or written.
    #[error("sftp.host_key_dir: host key {}: {reason}", path.display())]
    HostKey {
        /// The key file or directory.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// Accepting connections failed.
    #[error("sftp listener failed: {0}")]
    Accept(#[source] std::io::Error),
}
