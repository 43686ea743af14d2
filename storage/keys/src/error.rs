//! The one error type of the key hierarchy.

use std::path::PathBuf;

/// Everything that can go wrong while loading master keys or wrapping, unwrapping,
/// encrypting and decrypting with the key hierarchy.
///
/// Failures of authentication are deliberately coarse: they never say which input was wrong.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    /// Reading or writing a key file failed; the message names the file and the OS error.
    #[error("{0}")]
    Io(String),

    /// The master key file can be read or written by its group or by others.
    #[error(
        "master key file {} has mode {mode:04o}, so its group or other users can read or \
         change it; restrict it with `chmod 600 {}`",
        path.display(),
        path.display()
    )]
    InsecurePermissions {
        /// The refused file.
        path: PathBuf,
        /// Its permission bits (e.g. `0o640`).
        mode: u32,
    },

    /// The master key file exists but is not a usable key (wrong length, not a regular file).
    #[error("master key file {} is unusable: {reason}", path.display())]
    BadKeyFile {
        /// The refused file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// The OS random number generator failed.
    #[error("the OS random number generator failed")]
    Random,

    /// A wrapped key did not authenticate: wrong master or tenant key, wrong context
    /// (tenant or content id), or a tampered blob.
    #[error("a wrapped key could not be unwrapped (wrong key, wrong context or tampered)")]
    UnwrapFailed,

    /// An encrypted name or field did not authenticate: wrong key, wrong context, or tampered.
    #[error("an encrypted value could not be decrypted (wrong key, wrong context or tampered)")]
    DecryptFailed,

    /// A stored blob is too short to hold its header and tag, or has an unknown version byte.
    #[error("a stored key or ciphertext blob is malformed (too short or unknown version)")]
    BadBlob,

    /// A decrypted name is not valid UTF-8.
    #[error("a decrypted name is not valid UTF-8")]
    NotUtf8,

    /// The AEAD refused to seal (the input is larger than AES-256-GCM allows).
    #[error("the input is too large to encrypt")]
    SealFailed,

    /// None of a tenant key's wrapped copies was made by a master key this key ring holds.
    #[error("no wrapped copy of the tenant key matches a master key held by this node")]
    NoMatchingMasterKey,

    /// The key service could not answer or refused the key (unreachable, throttled, key
    /// disabled, revoked or deleted): retryable, and not a sign of damaged data. The message
    /// names the key and the service's error.
    #[error("key unavailable: {0}")]
    Unavailable(String),

    /// A KMS key was named but this region has no KMS configured.
    #[error("this region has no KMS configured (set keys.<region>.region and kind or endpoint)")]
    NoKms,

    /// A local master key id that is neither the region's current nor a previous key.
    #[error("master key {0} is not configured in this region")]
    UnknownMasterKey(String),

    /// A region name that is not `primary` or a configured `replica`.
    #[error("no such key region: {0} (regions are primary and replica)")]
    NoSuchRegion(String),
}
