//! Body of the `open_object` fuzz target, shared with the stable-toolchain smoke test
//! `storage/format/tests/fuzz_smoke.rs` (which includes this file by path).
//!
//! Input layout: 1 mode byte, `first` chunk index (u64 BE), trusted plaintext length
//! (u64 BE), then object bytes: a 64-byte header followed by sealed chunks from `first` on.

use coffer_format::{ChunkCipher, ContentId, DataKey, HEADER_LEN, MIN_CHUNK_SIZE};

/// The data key every fuzz input is opened with.
pub const FUZZ_KEY: [u8; 32] = [0x42; 32];
/// The content id every fuzz input is expected to carry.
pub const FUZZ_CONTENT_ID: [u8; 16] = [0x24; 16];
/// Bytes before the object: mode, first index, plaintext length.
pub const PARAMS_LEN: usize = 17;

/// Decodes `data` as described in the module docs. Returns the plaintext when the header
/// verified and every chunk of the run opened — which, without the key, only a genuine
/// object can achieve.
pub fn open_object(data: &[u8]) -> Option<Vec<u8>> {
    let (params, object) = data.split_first_chunk::<PARAMS_LEN>()?;
    let (&[mode], rest) = params.split_first_chunk::<1>()?;
    let (first, plaintext_len) = rest.split_first_chunk::<8>()?;
    let first = u64::from_be_bytes(*first);
    let plaintext_len = u64::from_be_bytes(plaintext_len.first_chunk::<8>().copied()?);
    let key = DataKey::from_bytes(FUZZ_KEY);
    let content_id = ContentId(FUZZ_CONTENT_ID);

    exercise_chunks_behind_a_trusted_header(mode, first, plaintext_len, object);

    let (header, chunks) = object.split_at_checked(HEADER_LEN)?;
    let cipher = ChunkCipher::open_header(&key, content_id, header).ok()?;
    let mut plaintext = Vec::new();
    let mut sealed = chunks.to_vec();
    cipher
        .open_chunks(first, &mut sealed, plaintext_len, &mut plaintext)
        .ok()?;
    Some(plaintext)
}

/// The fuzzer cannot forge a key commitment, so the header check above stops almost every
/// input; this path feeds the same bytes to the chunk decoder under a cipher built from
/// the key, so chunk parsing is fuzzed too.
fn exercise_chunks_behind_a_trusted_header(mode: u8, first: u64, plaintext_len: u64, bytes: &[u8]) {
    let chunk_size = MIN_CHUNK_SIZE << (mode & 1);
    let key = DataKey::from_bytes(FUZZ_KEY);
    let Ok(cipher) = ChunkCipher::new(&key, ContentId(FUZZ_CONTENT_ID), chunk_size) else {
        return;
    };
    let mut out = Vec::new();
    let _ = cipher.open_chunks(first, &mut bytes.to_vec(), plaintext_len, &mut out);
    let end = first.saturating_add(u64::from(mode >> 1));
    let _ = cipher.open_chunk_range(first..end, &mut bytes.to_vec(), plaintext_len, &mut out);
    let _ = cipher.open_chunk_in_place(first, mode & 0x80 != 0, &mut bytes.to_vec());
}
