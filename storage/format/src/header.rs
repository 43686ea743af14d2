//! The fixed 64-byte object header: encoding, structural parsing, and the key commitment.
//!
//! | offset | len | field                                                      |
//! |--------|-----|------------------------------------------------------------|
//! | 0      | 8   | [`MAGIC`]                                                  |
//! | 8      | 1   | format version ([`FORMAT_VERSION`])                        |
//! | 9      | 1   | algorithm ([`ALGORITHM_AES_256_GCM_HKDF_SHA256`])          |
//! | 10     | 2   | reserved, zero                                             |
//! | 12     | 4   | chunk size, u32 big-endian                                 |
//! | 16     | 16  | content id                                                 |
//! | 32     | 32  | key commitment: HMAC-SHA256(commit key, bytes 0..32)       |

use aws_lc_rs::hmac;

use crate::{CONTENT_ID_LEN, ContentId, FormatError, Layout};

/// Total header length. Frozen: chunk offsets of every stored object depend on it.
pub const HEADER_LEN: usize = 64;
/// Identifies a Coffer object. The high first byte catches 7-bit transports and the
/// trailing newline catches line-ending conversion (the PNG trick). Frozen.
pub const MAGIC: [u8; 8] = *b"\x89COFFER\n";
/// The only format version this build writes and reads.
pub const FORMAT_VERSION: u8 = 1;
/// Algorithm suite 1: HKDF-SHA256 key derivation, AES-256-GCM chunks with random 96-bit
/// nonces, HMAC-SHA256 key commitment.
pub const ALGORITHM_AES_256_GCM_HKDF_SHA256: u8 = 1;

/// Length of the reserved field, which must be zero in version 1.
const RESERVED_LEN: usize = 2;
/// Length of the key commitment (an HMAC-SHA256 tag).
const COMMITMENT_LEN: usize = 32;
/// The header bytes covered by the commitment: everything before it.
const COMMITTED_LEN: usize = HEADER_LEN - COMMITMENT_LEN;

/// A header whose structure is valid but whose commitment has not been checked yet.
pub(crate) struct UnverifiedHeader<'a> {
    pub(crate) layout: Layout,
    pub(crate) content_id: ContentId,
    committed: &'a [u8],
    commitment: &'a [u8],
}

impl UnverifiedHeader<'_> {
    /// Checks the commitment in constant time: fails on a wrong key or any altered byte.
    pub(crate) fn verify(&self, commit_key: &hmac::Key) -> Result<(), FormatError> {
        hmac::verify(commit_key, self.committed, self.commitment)
            .map_err(|_| FormatError::KeyCommitmentMismatch)
    }
}

/// Builds the complete header for a new object.
pub(crate) fn encode(
    layout: Layout,
    content_id: ContentId,
    commit_key: &hmac::Key,
) -> [u8; HEADER_LEN] {
    let mut header = [0u8; HEADER_LEN];
    let (committed, commitment) = header.split_at_mut(COMMITTED_LEN);
    let fields = MAGIC
        .into_iter()
        .chain([FORMAT_VERSION, ALGORITHM_AES_256_GCM_HKDF_SHA256])
        .chain([0u8; RESERVED_LEN])
        .chain(layout.chunk_size().to_be_bytes())
        .chain(content_id.0);
    for (slot, byte) in committed.iter_mut().zip(fields) {
        *slot = byte;
    }
    let tag = hmac::sign(commit_key, committed);
    commitment.copy_from_slice(tag.as_ref());
    header
}

/// Parses and structurally validates a header read from storage, in field order, so the
/// first malformed field determines the error.
pub(crate) fn parse(header: &[u8]) -> Result<UnverifiedHeader<'_>, FormatError> {
    if header.len() != HEADER_LEN {
        return Err(FormatError::HeaderLength(header.len()));
    }
    let truncated = || FormatError::HeaderLength(header.len());
    let (committed, commitment) = header
        .split_at_checked(COMMITTED_LEN)
        .ok_or_else(truncated)?;
    let (magic, rest) = committed.split_first_chunk::<8>().ok_or_else(truncated)?;
    let (&[version, algorithm], rest) = rest.split_first_chunk::<2>().ok_or_else(truncated)?;
    let (reserved, rest) = rest
        .split_first_chunk::<RESERVED_LEN>()
        .ok_or_else(truncated)?;
    let (chunk_size, rest) = rest.split_first_chunk::<4>().ok_or_else(truncated)?;
    let content_id = rest.first_chunk::<CONTENT_ID_LEN>().ok_or_else(truncated)?;

    if *magic != MAGIC {
        return Err(FormatError::BadMagic);
    }
    if version != FORMAT_VERSION {
        return Err(FormatError::UnsupportedVersion(version));
    }
    if algorithm != ALGORITHM_AES_256_GCM_HKDF_SHA256 {
        return Err(FormatError::UnsupportedAlgorithm(algorithm));
    }
    if *reserved != [0u8; RESERVED_LEN] {
        return Err(FormatError::BadHeader);
    }
    let layout =
        Layout::new(u32::from_be_bytes(*chunk_size)).map_err(|_| FormatError::BadHeader)?;
    Ok(UnverifiedHeader {
        layout,
        content_id: ContentId(*content_id),
        committed,
        commitment,
    })
}
