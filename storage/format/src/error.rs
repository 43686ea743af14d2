//! The single error type of the format crate.

/// Why sealing or opening an object failed.
///
/// Opening errors are ordered by where they are detected: header structure first, then the
/// content id, then the key commitment, and only then individual chunks.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum FormatError {
    /// The OS random number generator failed.
    #[error("the OS random number generator failed")]
    Random,
    /// Deriving the chunk or commitment key with HKDF failed (not reachable with the fixed
    /// output lengths used; kept so that no code path panics).
    #[error("key derivation failed")]
    KeyDerivation,
    /// The header is not exactly [`HEADER_LEN`](crate::HEADER_LEN) bytes long.
    #[error("the header is {0} bytes long, expected {len}", len = crate::HEADER_LEN)]
    HeaderLength(usize),
    /// The first bytes are not the Coffer object magic: this is not a Coffer object.
    #[error("not a Coffer object (bad magic)")]
    BadMagic,
    /// The header names a format version this build cannot read.
    #[error("unsupported format version {0}")]
    UnsupportedVersion(u8),
    /// The header names an algorithm suite this build does not know.
    #[error("unsupported algorithm {0}")]
    UnsupportedAlgorithm(u8),
    /// A header field is malformed: reserved bytes are not zero, or the recorded chunk size is
    /// not an allowed chunk size.
    #[error("malformed header (reserved bytes or chunk size)")]
    BadHeader,
    /// The header belongs to a different content stream than the one the database expects:
    /// the object was swapped or mislabelled.
    #[error("the object's content id differs from the expected one")]
    WrongContentId,
    /// The key commitment in the header does not match: the data key is wrong or the header
    /// was altered.
    #[error("key commitment mismatch (wrong key or tampered header)")]
    KeyCommitmentMismatch,
    /// Chunk `index` failed authentication: its bytes were altered, moved from another
    /// position or object, or its final flag is not what the trusted length implies.
    #[error("chunk {index} failed authentication")]
    ChunkAuthFailed {
        /// Index of the offending chunk.
        index: u64,
    },
    /// Chunk `index` has the wrong length for its position (a non-final chunk that is not
    /// full, a final chunk that is too long or empty, or sealed bytes cut short or run over).
    #[error("chunk {index} has the wrong length")]
    ChunkLength {
        /// Index of the offending chunk.
        index: u64,
    },
    /// The chunk index is beyond [`MAX_CHUNK_INDEX`](crate::MAX_CHUNK_INDEX): sealing more
    /// chunks under one key would raise the risk of a random nonce collision.
    #[error("chunk index {index} exceeds the per-key limit")]
    TooManyChunks {
        /// The rejected index.
        index: u64,
    },
    /// The chunk size is outside [`MIN_CHUNK_SIZE`](crate::MIN_CHUNK_SIZE)..=
    /// [`MAX_CHUNK_SIZE`](crate::MAX_CHUNK_SIZE) or not a power of two.
    #[error("invalid chunk size {0}: must be a power of two from 4 KiB to 16 MiB")]
    InvalidChunkSize(u32),
}
