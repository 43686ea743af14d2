//! The sealer: cuts the contiguous plaintext of an upload into fixed-size chunks and seals each
//! with the coffer format under the version's own data key, hashing the plaintext as it goes.
//!
//! A chunk is sealed only once a byte beyond it exists, so the last one can still be sealed as
//! final at commit. Until then its bytes may be rewritten in place; bytes already sealed may
//! not. Every seal takes a fresh random nonce (see `ChunkCipher::seal_chunk_in_place`).

use aws_lc_rs::digest;
use coffer_format::{ChunkCipher, ContentId, DataKey, HEADER_LEN, NONCE_LEN, TAG_LEN};

use crate::error::{ErrorKind, VfsError, VfsResult};

/// The plaintext → sealed chunks stage of one upload.
pub(super) struct Sealer {
    dek: DataKey,
    cipher: ChunkCipher,
    chunk_size: u64,
    /// `NONCE_LEN` placeholder bytes, then the plaintext of chunk `sealed`; right after
    /// [`Sealer::seal`], that chunk sealed, until the next call.
    chunk: Vec<u8>,
    /// `chunk` holds a sealed chunk handed out by the last [`Sealer::seal`].
    handed_out: bool,
    /// Chunks sealed so far.
    sealed: u64,
    hasher: digest::Context,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer")
            .field("chunk_size", &self.chunk_size)
            .field("sealed", &self.sealed)
            .finish_non_exhaustive()
    }
}

impl Sealer {
    /// A sealer under a fresh random data key and content id.
    pub(super) fn new(chunk_size: u32) -> VfsResult<Self> {
        let dek = DataKey::generate()?;
        let cipher = ChunkCipher::new(&dek, ContentId::generate()?, chunk_size)?;
        let chunk_size = u64::from(cipher.layout().chunk_size());
        let mut chunk = Vec::with_capacity(NONCE_LEN + chunk_size as usize + TAG_LEN);
        chunk.resize(NONCE_LEN, 0);
        Ok(Self {
            dek,
            cipher,
            chunk_size,
            chunk,
            handed_out: false,
            sealed: 0,
            hasher: digest::Context::new(&digest::SHA256),
        })
    }

    /// The object's header: what the object starts with, before the first chunk.
    pub(super) fn header(&self) -> [u8; HEADER_LEN] {
        self.cipher.header()
    }

    /// The data key the chunks are sealed under (wrapped into the row at commit).
    pub(super) fn data_key(&self) -> &DataKey {
        &self.dek
    }

    /// The version's content id (bound into every chunk's associated data).
    pub(super) fn content_id(&self) -> ContentId {
        self.cipher.content_id()
    }

    /// Plaintext bytes per chunk.
    pub(super) fn chunk_size(&self) -> u64 {
        self.chunk_size
    }

    /// Plaintext bytes taken so far: sealed, or waiting in the open chunk.
    pub(super) fn len(&self) -> u64 {
        self.sealed_len() + self.buffered() as u64
    }

    /// Plaintext bytes already sealed: they can no longer be rewritten.
    pub(super) fn sealed_len(&self) -> u64 {
        self.sealed * self.chunk_size
    }

    fn buffered(&self) -> usize {
        if self.handed_out {
            0
        } else {
            self.chunk.len() - NONCE_LEN
        }
    }

    /// Drops the sealed chunk handed out last, opening the next one.
    fn reopen(&mut self) {
        if self.handed_out {
            self.chunk.truncate(NONCE_LEN);
            self.handed_out = false;
        }
    }

    /// `true` when the open chunk is full: the next byte needs it sealed first.
    pub(super) fn is_full(&self) -> bool {
        self.buffered() as u64 == self.chunk_size
    }

    /// Takes as much of `data` as fits in the open chunk; returns how much it took.
    pub(super) fn fill(&mut self, data: &[u8]) -> usize {
        self.reopen();
        let room = self.chunk_size as usize - self.buffered();
        let take = room.min(data.len());
        let (now, _) = data.split_at(take);
        self.chunk.extend_from_slice(now);
        take
    }

    /// Replaces bytes at plaintext `offset` that are still in the open chunk (a client
    /// rewriting what it sent a moment ago). Bytes already sealed are refused with
    /// `Unsupported`.
    pub(super) fn rewrite(&mut self, offset: u64, data: &[u8]) -> VfsResult<()> {
        if data.is_empty() {
            return Ok(());
        }
        self.reopen();
        let end = offset.saturating_add(data.len() as u64);
        if offset < self.sealed_len() || end > self.len() {
            return Err(rewrite_refused());
        }
        let at = NONCE_LEN + (offset - self.sealed_len()) as usize;
        let dst = self
            .chunk
            .get_mut(at..at + data.len())
            .ok_or_else(rewrite_refused)?;
        dst.copy_from_slice(data);
        Ok(())
    }

    /// Seals the open chunk (as the file's last one if `is_final`) and returns it, sealed, as
    /// it is stored: nonce, ciphertext, tag.
    pub(super) fn seal(&mut self, is_final: bool) -> VfsResult<&[u8]> {
        self.reopen();
        if let Some(plain) = self.chunk.get(NONCE_LEN..) {
            self.hasher.update(plain);
        }
        self.cipher
            .seal_chunk_in_place(self.sealed, is_final, &mut self.chunk)?;
        self.sealed += 1;
        self.handed_out = true;
        Ok(&self.chunk)
    }

    /// Seals the last chunk of a `size`-byte file; `size` must be all the plaintext taken.
    pub(super) fn seal_final(&mut self, size: u64) -> VfsResult<&[u8]> {
        let count = self.cipher.layout().chunk_count(size);
        if self.len() != size || count != self.sealed + 1 {
            return Err(VfsError::new(
                ErrorKind::Internal,
                "upload chunk count is inconsistent",
            ));
        }
        self.seal(true)
    }

    /// SHA-256 of all the plaintext sealed (call after [`Sealer::seal_final`]).
    pub(super) fn content_hash(&mut self) -> digest::Digest {
        std::mem::replace(&mut self.hasher, digest::Context::new(&digest::SHA256)).finish()
    }
}

fn rewrite_refused() -> VfsError {
    VfsError::new(
        ErrorKind::Unsupported,
        "rewriting data far behind the write position is not supported; upload the file again",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use coffer_format::MIN_CHUNK_SIZE;

    const CS: usize = MIN_CHUNK_SIZE as usize;

    /// Feeds `plain` through the sealer as the writer does, returns the whole object.
    fn seal_all(sealer: &mut Sealer, plain: &[u8]) -> Vec<u8> {
        let mut object = sealer.header().to_vec();
        let mut rest = plain;
        while !rest.is_empty() {
            if sealer.is_full() {
                object.extend_from_slice(sealer.seal(false).unwrap());
                continue;
            }
            let n = sealer.fill(rest);
            rest = &rest[n..];
        }
        object.extend_from_slice(sealer.seal_final(plain.len() as u64).unwrap());
        object
    }

    fn open(sealer: &Sealer, object: &mut [u8], len: u64) -> Vec<u8> {
        ChunkCipher::open_object(sealer.data_key(), sealer.content_id(), object, len).unwrap()
    }

    fn round_trip(len: usize) {
        let plain: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let mut sealer = Sealer::new(MIN_CHUNK_SIZE).unwrap();
        let mut object = seal_all(&mut sealer, &plain);
        let layout = coffer_format::Layout::new(MIN_CHUNK_SIZE).unwrap();
        assert_eq!(
            object.len() as u64,
            layout.object_len(len as u64),
            "{len} bytes"
        );
        assert_eq!(open(&sealer, &mut object, len as u64), plain, "{len} bytes");
        let want = digest::digest(&digest::SHA256, &plain);
        assert_eq!(sealer.content_hash().as_ref(), want.as_ref(), "{len} bytes");
    }

    #[test]
    fn an_empty_file_is_one_empty_final_chunk() {
        round_trip(0);
    }

    #[test]
    fn exactly_one_chunk() {
        round_trip(CS);
    }

    #[test]
    fn one_chunk_and_one_byte() {
        round_trip(CS + 1);
    }

    #[test]
    fn one_byte_and_many_chunks() {
        round_trip(1);
        round_trip(CS - 1);
        round_trip(7 * CS);
        round_trip(7 * CS + 123);
    }

    #[test]
    fn a_full_chunk_is_not_sealed_until_a_byte_beyond_it_exists() {
        let mut sealer = Sealer::new(MIN_CHUNK_SIZE).unwrap();
        assert_eq!(sealer.fill(&[1; CS + 10]), CS, "one chunk at a time");
        assert!(sealer.is_full());
        assert_eq!((sealer.len(), sealer.sealed_len()), (CS as u64, 0));
        let sealed = sealer.seal(false).unwrap().len();
        assert_eq!(sealed, CS + NONCE_LEN + TAG_LEN);
        assert_eq!((sealer.len(), sealer.sealed_len()), (CS as u64, CS as u64));
        assert!(!sealer.is_full());
    }

    #[test]
    fn unsealed_bytes_may_be_rewritten_sealed_ones_may_not() {
        let mut sealer = Sealer::new(MIN_CHUNK_SIZE).unwrap();
        let mut object = sealer.header().to_vec();
        sealer.fill(&[1; CS]);
        object.extend_from_slice(sealer.seal(false).unwrap());
        sealer.fill(&[2; 100]);
        let err = sealer.rewrite(CS as u64 - 1, &[3; 2]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unsupported, "a sealed byte");
        let err = sealer.rewrite(CS as u64 + 99, &[3; 2]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unsupported, "beyond what was taken");
        sealer.rewrite(CS as u64 + 10, &[3; 5]).unwrap();
        object.extend_from_slice(sealer.seal_final(CS as u64 + 100).unwrap());
        let mut want = vec![1u8; CS];
        want.extend([2; 10]);
        want.extend([3; 5]);
        want.extend([2; 85]);
        assert_eq!(open(&sealer, &mut object, want.len() as u64), want);
        let hash = digest::digest(&digest::SHA256, &want);
        assert_eq!(sealer.content_hash().as_ref(), hash.as_ref());
    }

    #[test]
    fn sealing_the_same_chunk_twice_never_repeats_a_nonce() {
        let mut a = Sealer::new(MIN_CHUNK_SIZE).unwrap();
        a.fill(&[5; 10]);
        let first = a.seal(true).unwrap()[..NONCE_LEN].to_vec();
        let mut b = Sealer::new(MIN_CHUNK_SIZE).unwrap();
        b.fill(&[5; 10]);
        let second = b.seal(true).unwrap()[..NONCE_LEN].to_vec();
        assert_ne!(first, second);
    }

    #[test]
    fn a_size_that_does_not_match_what_was_taken_is_refused() {
        let mut sealer = Sealer::new(MIN_CHUNK_SIZE).unwrap();
        sealer.fill(&[1; 10]);
        assert_eq!(
            sealer.seal_final(11).unwrap_err().kind(),
            ErrorKind::Internal
        );
    }
}
