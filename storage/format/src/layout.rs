//! Chunk geometry: where sealed chunk `i` sits in an object and how long it is.

use std::ops::Range;

use crate::{FormatError, HEADER_LEN};

/// Length of the random nonce stored in front of every sealed chunk (AES-GCM's 96 bits).
pub const NONCE_LEN: usize = 12;
/// Length of the AES-GCM authentication tag stored after every chunk's ciphertext.
pub const TAG_LEN: usize = 16;
/// Bytes a sealed chunk adds to its plaintext: nonce in front, tag behind.
pub const CHUNK_OVERHEAD: usize = NONCE_LEN + TAG_LEN;
/// Plaintext chunk size used unless configured otherwise (64 KiB).
pub const DEFAULT_CHUNK_SIZE: u32 = 64 * 1024;
/// Smallest allowed chunk size (4 KiB): below it the 28-byte overhead exceeds 0.7%.
pub const MIN_CHUNK_SIZE: u32 = 4 * 1024;
/// Largest allowed chunk size (16 MiB): bounds the memory one chunk needs while it is
/// sealed or opened, which matters because a header from storage chooses it.
pub const MAX_CHUNK_SIZE: u32 = 16 * 1024 * 1024;
/// Highest chunk index that may be sealed or opened under one data key (2^32 - 1).
///
/// Every seal draws a fresh random 96-bit nonce; keeping a key below 2^32 seals keeps the
/// chance of any nonce collision under 2^-33 (birthday bound), per NIST SP 800-38D §8.3.
pub const MAX_CHUNK_INDEX: u64 = (1 << 32) - 1;

/// The geometry of objects with one chunk size. Cheap to copy; all arithmetic saturates
/// rather than overflows, so hostile lengths cannot panic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    chunk_size: u32,
}

impl Layout {
    /// A layout for `chunk_size`, which must be a power of two in
    /// [`MIN_CHUNK_SIZE`]..=[`MAX_CHUNK_SIZE`].
    pub fn new(chunk_size: u32) -> Result<Layout, FormatError> {
        let in_range = (MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&chunk_size);
        if in_range && chunk_size.is_power_of_two() {
            Ok(Layout { chunk_size })
        } else {
            Err(FormatError::InvalidChunkSize(chunk_size))
        }
    }

    /// Plaintext bytes in every chunk but the last.
    pub fn chunk_size(&self) -> u32 {
        self.chunk_size
    }

    /// Stored bytes of a full chunk: `chunk_size + CHUNK_OVERHEAD`.
    pub fn sealed_chunk_len(&self) -> u64 {
        u64::from(self.chunk_size) + CHUNK_OVERHEAD as u64
    }

    /// Number of chunks for a plaintext of `plaintext_len` bytes. An empty plaintext still
    /// has one (empty, final) chunk, so an empty object is authenticated too.
    pub fn chunk_count(&self, plaintext_len: u64) -> u64 {
        plaintext_len.div_ceil(u64::from(self.chunk_size)).max(1)
    }

    /// Byte offset of sealed chunk `index` within the object (header included).
    pub fn chunk_offset(&self, index: u64) -> u64 {
        index
            .saturating_mul(self.sealed_chunk_len())
            .saturating_add(HEADER_LEN as u64)
    }

    /// Plaintext bytes in chunk `index` of a `plaintext_len`-byte file; 0 past the end.
    pub fn chunk_plain_len(&self, index: u64, plaintext_len: u64) -> usize {
        if index >= self.chunk_count(plaintext_len) {
            return 0;
        }
        let chunk_start = index.saturating_mul(u64::from(self.chunk_size));
        let remaining = plaintext_len.saturating_sub(chunk_start);
        // Bounded by chunk_size (a u32), so the conversion is lossless.
        remaining.min(u64::from(self.chunk_size)) as usize
    }

    /// Total object length: header plus every sealed chunk.
    pub fn object_len(&self, plaintext_len: u64) -> u64 {
        let chunks = self.chunk_count(plaintext_len);
        (HEADER_LEN as u64)
            .saturating_add(plaintext_len)
            .saturating_add(chunks.saturating_mul(CHUNK_OVERHEAD as u64))
    }

    /// Index of the chunk holding plaintext byte `offset` (for ranged reads and resumes).
    pub fn chunk_index_of(&self, offset: u64) -> u64 {
        offset / u64::from(self.chunk_size)
    }

    /// Byte range within the object that holds sealed chunks `chunks` of a
    /// `plaintext_len`-byte file: what one ranged GET must fetch. Indexes past the final
    /// chunk are clamped away, so the range never runs past the object's end.
    pub fn sealed_range(&self, chunks: Range<u64>, plaintext_len: u64) -> Range<u64> {
        let end_chunk = chunks.end.min(self.chunk_count(plaintext_len));
        let start = self.chunk_offset(chunks.start);
        if end_chunk <= chunks.start {
            return start..start;
        }
        let last = end_chunk - 1;
        let last_len = self.chunk_plain_len(last, plaintext_len) as u64 + CHUNK_OVERHEAD as u64;
        start..self.chunk_offset(last).saturating_add(last_len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KIB: u32 = 1024;

    #[test]
    fn chunk_sizes_outside_bounds_or_not_powers_of_two_are_rejected() {
        for bad in [
            0,
            1,
            MIN_CHUNK_SIZE / 2,
            MAX_CHUNK_SIZE * 2,
            65 * KIB,
            u32::MAX,
        ] {
            assert_eq!(Layout::new(bad), Err(FormatError::InvalidChunkSize(bad)));
        }
        for good in [MIN_CHUNK_SIZE, DEFAULT_CHUNK_SIZE, MAX_CHUNK_SIZE] {
            assert_eq!(Layout::new(good).map(|l| l.chunk_size()), Ok(good));
        }
    }

    #[test]
    fn empty_plaintext_has_one_empty_final_chunk() {
        let layout = Layout::new(4 * KIB).unwrap();
        assert_eq!(layout.chunk_count(0), 1);
        assert_eq!(layout.chunk_plain_len(0, 0), 0);
        assert_eq!(layout.object_len(0), (HEADER_LEN + CHUNK_OVERHEAD) as u64);
    }

    #[test]
    fn chunk_counts_and_lengths_at_boundaries() {
        let layout = Layout::new(4 * KIB).unwrap();
        let cs = u64::from(4 * KIB);
        assert_eq!(layout.chunk_count(1), 1);
        assert_eq!(layout.chunk_count(cs - 1), 1);
        assert_eq!(layout.chunk_count(cs), 1);
        assert_eq!(layout.chunk_count(cs + 1), 2);
        assert_eq!(layout.chunk_plain_len(0, cs + 1), cs as usize);
        assert_eq!(layout.chunk_plain_len(1, cs + 1), 1);
        assert_eq!(layout.chunk_plain_len(2, cs + 1), 0);
        assert_eq!(layout.chunk_plain_len(0, cs), cs as usize);
        assert_eq!(layout.chunk_index_of(cs - 1), 0);
        assert_eq!(layout.chunk_index_of(cs), 1);
    }

    #[test]
    fn offsets_are_header_plus_whole_sealed_chunks() {
        let layout = Layout::new(DEFAULT_CHUNK_SIZE).unwrap();
        assert_eq!(layout.sealed_chunk_len(), 65536 + 28);
        assert_eq!(layout.chunk_offset(0), HEADER_LEN as u64);
        assert_eq!(layout.chunk_offset(3), HEADER_LEN as u64 + 3 * (65536 + 28));
        let len = 5 * 65536 + 100;
        assert_eq!(layout.object_len(len), layout.chunk_offset(5) + 100 + 28);
    }

    #[test]
    fn sealed_range_covers_exactly_the_requested_chunks_and_stops_at_the_object_end() {
        let layout = Layout::new(4 * KIB).unwrap();
        let len = 2 * 4096 + 10;
        let header = HEADER_LEN as u64;
        assert_eq!(layout.sealed_range(0..1, len), header..header + 4124);
        assert_eq!(
            layout.sealed_range(1..3, len),
            header + 4124..layout.object_len(len)
        );
        assert_eq!(
            layout.sealed_range(1..99, len),
            header + 4124..layout.object_len(len)
        );
        assert_eq!(
            layout.sealed_range(5..9, len),
            layout.chunk_offset(5)..layout.chunk_offset(5)
        );
    }

    #[test]
    fn hostile_lengths_saturate_instead_of_overflowing() {
        let layout = Layout::new(MAX_CHUNK_SIZE).unwrap();
        assert_eq!(layout.chunk_offset(u64::MAX), u64::MAX);
        assert_eq!(layout.object_len(u64::MAX), u64::MAX);
        assert_eq!(layout.chunk_plain_len(u64::MAX, u64::MAX), 0);
        assert_eq!(
            layout.chunk_plain_len(layout.chunk_count(u64::MAX) - 1, u64::MAX),
            (u64::MAX % u64::from(MAX_CHUNK_SIZE)) as usize
        );
    }
}
