//! `ChunkCipher`: seals and opens the chunks of one content stream under its data key.

use std::fmt;
use std::ops::Range;

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce};

use crate::header::{self, HEADER_LEN};
use crate::keys::DerivedKeys;
use crate::layout::{CHUNK_OVERHEAD, Layout, MAX_CHUNK_INDEX, NONCE_LEN};
use crate::nonce::NoncePool;
use crate::{CONTENT_ID_LEN, ContentId, DataKey, FormatError};

/// Associated data of one chunk: content id || index (u64 BE) || final flag.
const AD_LEN: usize = CONTENT_ID_LEN + 8 + 1;

/// Seals and opens the chunks of one content stream. Built either for writing
/// ([`ChunkCipher::new`]) or from a stored header ([`ChunkCipher::open_header`]), which
/// authenticates the header and the key before any chunk is touched.
pub struct ChunkCipher {
    chunk_key: LessSafeKey,
    layout: Layout,
    content_id: ContentId,
    header: [u8; HEADER_LEN],
    nonces: NoncePool,
}

impl fmt::Debug for ChunkCipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChunkCipher")
            .field("layout", &self.layout)
            .field("content_id", &self.content_id)
            .finish_non_exhaustive()
    }
}

impl ChunkCipher {
    /// A cipher for writing a new object with `chunk_size`-byte chunks.
    pub fn new(key: &DataKey, content_id: ContentId, chunk_size: u32) -> Result<Self, FormatError> {
        let layout = Layout::new(chunk_size)?;
        let keys = DerivedKeys::derive(key, content_id)?;
        let header = header::encode(layout, content_id, &keys.commit);
        Ok(Self {
            chunk_key: keys.chunk,
            layout,
            content_id,
            header,
            nonces: NoncePool::new(),
        })
    }

    /// A cipher for reading the object whose stored header is `header` (exactly
    /// [`HEADER_LEN`] bytes). Checks magic, version, algorithm, reserved bytes, chunk size,
    /// that the content id is `expected`, and the key commitment, in that order.
    pub fn open_header(
        key: &DataKey,
        expected: ContentId,
        header: &[u8],
    ) -> Result<Self, FormatError> {
        let parsed = header::parse(header)?;
        if parsed.content_id != expected {
            return Err(FormatError::WrongContentId);
        }
        let keys = DerivedKeys::derive(key, expected)?;
        parsed.verify(&keys.commit)?;
        let header = header
            .try_into()
            .map_err(|_| FormatError::HeaderLength(header.len()))?;
        Ok(Self {
            chunk_key: keys.chunk,
            layout: parsed.layout,
            content_id: expected,
            header,
            nonces: NoncePool::new(),
        })
    }

    /// The object's header bytes, to be stored at offset 0.
    pub fn header(&self) -> [u8; HEADER_LEN] {
        self.header
    }

    /// The object's chunk geometry.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// The content id bound into the header and every chunk.
    pub fn content_id(&self) -> ContentId {
        self.content_id
    }

    /// Zero-copy sealing: `buf` holds NONCE_LEN bytes (any value) followed by the plaintext
    /// (at most chunk_size bytes; only the final chunk may be shorter — a non-final chunk that
    /// is not exactly chunk_size is an error). On success buf holds nonce || ciphertext || tag.
    ///
    /// Give `buf` a capacity of `NONCE_LEN + chunk_size + TAG_LEN` so that appending the tag
    /// does not reallocate. Every call uses a fresh random nonce (never one derived from the
    /// index), so sealing the same index again — a resumed upload rewriting its tail — never
    /// reuses a nonce.
    pub fn seal_chunk_in_place(
        &self,
        index: u64,
        is_final: bool,
        buf: &mut Vec<u8>,
    ) -> Result<(), FormatError> {
        self.seal_from(index, is_final, buf, 0)
    }

    /// Convenience: appends the sealed chunk for `plaintext` to `out`. On error `out` is
    /// left as it was.
    pub fn seal_chunk(
        &self,
        index: u64,
        is_final: bool,
        plaintext: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), FormatError> {
        let start = out.len();
        out.reserve(plaintext.len() + CHUNK_OVERHEAD);
        out.extend_from_slice(&[0u8; NONCE_LEN]);
        out.extend_from_slice(plaintext);
        let sealed = self.seal_from(index, is_final, out, start);
        if sealed.is_err() {
            out.truncate(start);
        }
        sealed
    }

    /// Opens one sealed chunk in place: returns the plaintext sub-slice of `sealed`.
    ///
    /// On failure the ciphertext region of `sealed` is zeroed, so no unauthenticated
    /// plaintext is left behind for a careless caller.
    pub fn open_chunk_in_place<'a>(
        &self,
        index: u64,
        is_final: bool,
        sealed: &'a mut [u8],
    ) -> Result<&'a [u8], FormatError> {
        let length_error = FormatError::ChunkLength { index };
        let plain_len = sealed
            .len()
            .checked_sub(CHUNK_OVERHEAD)
            .ok_or(length_error)?;
        self.check_chunk_shape(index, is_final, plain_len)?;
        let (nonce, ciphertext_and_tag) = sealed
            .split_at_mut_checked(NONCE_LEN)
            .ok_or(FormatError::ChunkLength { index })?;
        let nonce = Nonce::try_assume_unique_for_key(nonce)
            .map_err(|_| FormatError::ChunkLength { index })?;
        let aad = Aad::from(self.associated_data(index, is_final));
        if self
            .chunk_key
            .open_in_place(nonce, aad, ciphertext_and_tag)
            .is_err()
        {
            ciphertext_and_tag.fill(0);
            return Err(FormatError::ChunkAuthFailed { index });
        }
        ciphertext_and_tag
            .get(..plain_len)
            .ok_or(FormatError::ChunkLength { index })
    }

    /// Opens a run of consecutive sealed chunks starting at chunk `first` (as read by one
    /// ranged GET), given the file's trusted plaintext length; appends plaintext to `out`.
    ///
    /// The run must be non-empty and end on a chunk boundary. The chunk whose index is the
    /// last one implied by `plaintext_len` is opened as final, so a dropped tail or a run
    /// that overlaps the end is refused. On error `out` is left as it was: callers never
    /// see part of a run that failed.
    pub fn open_chunks(
        &self,
        first: u64,
        sealed: &mut [u8],
        plaintext_len: u64,
        out: &mut Vec<u8>,
    ) -> Result<(), FormatError> {
        if sealed.is_empty() {
            return Err(FormatError::ChunkLength { index: first });
        }
        let start = out.len();
        out.reserve(sealed.len());
        let opened = self.open_run(first, sealed, plaintext_len, out);
        if opened.is_err() {
            out.truncate(start);
        }
        opened
    }

    /// Opens exactly the chunks `chunks` (clamped to the file's chunk count) from `sealed`,
    /// which must be exactly [`Layout::sealed_range`] long. A short read — the object was
    /// truncated, even at a chunk boundary — or a long one is [`FormatError::ChunkLength`]
    /// naming the first missing or surplus chunk. On error `out` is left as it was.
    pub fn open_chunk_range(
        &self,
        chunks: Range<u64>,
        sealed: &mut [u8],
        plaintext_len: u64,
        out: &mut Vec<u8>,
    ) -> Result<(), FormatError> {
        let expected = self.layout.sealed_range(chunks.clone(), plaintext_len);
        let expected_len = expected.end - expected.start;
        let actual_len = sealed.len() as u64;
        if actual_len < expected_len || expected_len == 0 {
            let whole_chunks_present = actual_len / self.layout.sealed_chunk_len();
            let index = chunks.start.saturating_add(whole_chunks_present);
            return Err(FormatError::ChunkLength { index });
        }
        if actual_len > expected_len {
            let index = chunks.end.min(self.layout.chunk_count(plaintext_len));
            return Err(FormatError::ChunkLength { index });
        }
        self.open_chunks(chunks.start, sealed, plaintext_len, out)
    }

    /// Writes a whole object — header, then every chunk of `plaintext` — in one buffer.
    /// For small files and tests; large files are sealed chunk by chunk as they stream in.
    pub fn seal_object(&self, plaintext: &[u8]) -> Result<Vec<u8>, FormatError> {
        let plaintext_len = plaintext.len() as u64;
        let capacity =
            usize::try_from(self.layout.object_len(plaintext_len)).unwrap_or(plaintext.len());
        let mut object = Vec::with_capacity(capacity);
        object.extend_from_slice(&self.header);
        let count = self.layout.chunk_count(plaintext_len);
        let mut chunks = plaintext.chunks(self.layout.chunk_size() as usize);
        for index in 0..count {
            let chunk = chunks.next().unwrap_or_default();
            self.seal_chunk(index, index + 1 == count, chunk, &mut object)?;
        }
        Ok(object)
    }

    /// Reads a whole object: verifies its header against `key` and `expected`, then opens
    /// every chunk the trusted `plaintext_len` implies. The reference decoder that the
    /// committed test vectors are checked with.
    pub fn open_object(
        key: &DataKey,
        expected: ContentId,
        object: &mut [u8],
        plaintext_len: u64,
    ) -> Result<Vec<u8>, FormatError> {
        let length = object.len();
        let (header, chunks) = object
            .split_at_mut_checked(HEADER_LEN)
            .ok_or(FormatError::HeaderLength(length))?;
        let cipher = Self::open_header(key, expected, header)?;
        let count = cipher.layout.chunk_count(plaintext_len);
        let mut plaintext = Vec::new();
        cipher.open_chunk_range(0..count, chunks, plaintext_len, &mut plaintext)?;
        Ok(plaintext)
    }

    fn open_run(
        &self,
        first: u64,
        mut rest: &mut [u8],
        plaintext_len: u64,
        out: &mut Vec<u8>,
    ) -> Result<(), FormatError> {
        let count = self.layout.chunk_count(plaintext_len);
        let mut index = first;
        while !rest.is_empty() {
            if index >= count {
                return Err(FormatError::ChunkLength { index });
            }
            let sealed_len = self.layout.chunk_plain_len(index, plaintext_len) + CHUNK_OVERHEAD;
            let (chunk, tail) = std::mem::take(&mut rest)
                .split_at_mut_checked(sealed_len)
                .ok_or(FormatError::ChunkLength { index })?;
            let is_final = index + 1 == count;
            out.extend_from_slice(self.open_chunk_in_place(index, is_final, chunk)?);
            rest = tail;
            index += 1;
        }
        Ok(())
    }

    /// Seals the chunk that occupies `buf[start..]` (nonce slot, then plaintext) and
    /// appends its tag.
    fn seal_from(
        &self,
        index: u64,
        is_final: bool,
        buf: &mut Vec<u8>,
        start: usize,
    ) -> Result<(), FormatError> {
        let length_error = FormatError::ChunkLength { index };
        let chunk = buf.get_mut(start..).ok_or(length_error)?;
        let (nonce_slot, plaintext) = chunk
            .split_at_mut_checked(NONCE_LEN)
            .ok_or(FormatError::ChunkLength { index })?;
        self.check_chunk_shape(index, is_final, plaintext.len())?;
        let nonce = self.nonces.take()?;
        nonce_slot.copy_from_slice(&nonce);
        let aad = Aad::from(self.associated_data(index, is_final));
        let tag = self
            .chunk_key
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), aad, plaintext)
            // aws-lc refuses only inputs beyond GCM's 64 GiB limit, far above MAX_CHUNK_SIZE.
            .map_err(|_| FormatError::ChunkLength { index })?;
        buf.extend_from_slice(tag.as_ref());
        Ok(())
    }

    /// Enforces the only chunk lengths a well-formed object contains: every non-final chunk
    /// is full; the final chunk is 1..=chunk_size bytes, or empty when it is chunk 0.
    fn check_chunk_shape(
        &self,
        index: u64,
        is_final: bool,
        plain_len: usize,
    ) -> Result<(), FormatError> {
        if index > MAX_CHUNK_INDEX {
            return Err(FormatError::TooManyChunks { index });
        }
        let full = self.layout.chunk_size() as usize;
        let well_formed = if is_final {
            plain_len <= full && (plain_len > 0 || index == 0)
        } else {
            plain_len == full
        };
        if well_formed {
            Ok(())
        } else {
            Err(FormatError::ChunkLength { index })
        }
    }

    /// Binds a chunk to this content stream, its position, and whether it ends the stream.
    fn associated_data(&self, index: u64, is_final: bool) -> [u8; AD_LEN] {
        let mut ad = [0u8; AD_LEN];
        let fields = self
            .content_id
            .0
            .into_iter()
            .chain(index.to_be_bytes())
            .chain([u8::from(is_final)]);
        for (slot, byte) in ad.iter_mut().zip(fields) {
            *slot = byte;
        }
        ad
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{MIN_CHUNK_SIZE, TAG_LEN};

    fn cipher() -> ChunkCipher {
        ChunkCipher::new(
            &DataKey::from_bytes([7; 32]),
            ContentId([9; 16]),
            MIN_CHUNK_SIZE,
        )
        .unwrap()
    }

    #[test]
    fn a_cipher_can_be_shared_across_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<ChunkCipher>();
    }

    #[test]
    fn associated_data_is_content_id_then_big_endian_index_then_final_flag() {
        let ad = cipher().associated_data(0x0102_0304_0506_0708, true);
        let mut expected = vec![9u8; 16];
        expected.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8, 1]);
        assert_eq!(ad.as_slice(), expected.as_slice());
    }

    #[test]
    fn debug_output_names_the_stream_but_not_the_keys() {
        let shown = format!("{:?}", cipher());
        assert!(shown.contains("content_id"), "{shown}");
        assert!(!shown.contains("key"), "{shown}");
    }

    #[test]
    fn sealing_a_short_non_final_chunk_is_refused_and_leaves_output_untouched() {
        let mut out = b"kept".to_vec();
        let err = cipher().seal_chunk(2, false, &[1; 100], &mut out);
        assert_eq!(err, Err(FormatError::ChunkLength { index: 2 }));
        assert_eq!(out, b"kept");
    }

    #[test]
    fn sealing_an_empty_final_chunk_after_chunk_zero_is_refused() {
        let mut out = Vec::new();
        let err = cipher().seal_chunk(1, true, &[], &mut out);
        assert_eq!(err, Err(FormatError::ChunkLength { index: 1 }));
    }

    #[test]
    fn sealing_an_oversized_chunk_is_refused() {
        let mut out = Vec::new();
        let err = cipher().seal_chunk(0, true, &[0; MIN_CHUNK_SIZE as usize + 1], &mut out);
        assert_eq!(err, Err(FormatError::ChunkLength { index: 0 }));
    }

    #[test]
    fn sealing_past_the_per_key_chunk_limit_is_refused() {
        let mut out = Vec::new();
        let index = MAX_CHUNK_INDEX + 1;
        let err = cipher().seal_chunk(index, true, &[1], &mut out);
        assert_eq!(err, Err(FormatError::TooManyChunks { index }));
    }

    #[test]
    fn seal_in_place_without_room_for_a_nonce_is_refused() {
        let mut buf = vec![0u8; NONCE_LEN - 1];
        let err = cipher().seal_chunk_in_place(0, true, &mut buf);
        assert_eq!(err, Err(FormatError::ChunkLength { index: 0 }));
    }

    #[test]
    fn failed_open_zeroes_the_buffer_instead_of_leaving_unverified_plaintext() {
        let cipher = cipher();
        let mut sealed = Vec::new();
        cipher
            .seal_chunk(0, true, &[0xAA; 64], &mut sealed)
            .unwrap();
        let last = sealed.len() - 1;
        sealed[last] ^= 1;
        let err = cipher.open_chunk_in_place(0, true, &mut sealed);
        assert_eq!(err, Err(FormatError::ChunkAuthFailed { index: 0 }));
        assert!(
            sealed[NONCE_LEN..sealed.len() - TAG_LEN]
                .iter()
                .all(|b| *b == 0)
        );
    }
}
