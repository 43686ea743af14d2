//! Helpers shared by the integration tests: fixed keys and ids, sample plaintexts, and
//! byte surgery on sealed objects.
#![allow(dead_code)]

use std::ops::Range;

use coffer_format::{ChunkCipher, ContentId, DataKey, FormatError, Layout};

/// The smallest chunk size, so multi-chunk objects stay small.
pub const SMALL_CHUNK: u32 = 4096;
/// The default chunk size.
pub const DEFAULT_CHUNK: u32 = 65536;

/// A data key whose bytes are all `byte`.
pub fn key(byte: u8) -> DataKey {
    DataKey::from_bytes([byte; 32])
}

/// A content id whose bytes are all `byte`.
pub fn id(byte: u8) -> ContentId {
    ContentId([byte; 16])
}

/// A plaintext of `len` bytes that differs from chunk to chunk and is not all zero.
pub fn plaintext(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i * 31 % 251) as u8 ^ (i >> 12) as u8)
        .collect()
}

/// Seals `plaintext` as a whole object under `key(1)`, `id(2)`.
pub fn seal(chunk_size: u32, plaintext: &[u8]) -> Vec<u8> {
    let cipher = ChunkCipher::new(&key(1), id(2), chunk_size).expect("valid chunk size");
    cipher.seal_object(plaintext).expect("seal")
}

/// Opens a whole object (a copy of it) under `key(1)`, `id(2)`.
pub fn open(object: &[u8], plaintext_len: usize) -> Result<Vec<u8>, FormatError> {
    ChunkCipher::open_object(&key(1), id(2), &mut object.to_vec(), plaintext_len as u64)
}

/// Where sealed chunk `index` sits in an object of `plaintext_len` bytes.
pub fn chunk_bytes(chunk_size: u32, index: u64, plaintext_len: usize) -> Range<usize> {
    let layout = Layout::new(chunk_size).expect("valid chunk size");
    let range = layout.sealed_range(index..index + 1, plaintext_len as u64);
    range.start as usize..range.end as usize
}

/// `object` with sealed chunks `a` and `b` (both full) swapped.
pub fn swap_chunks(object: &[u8], chunk_size: u32, a: u64, b: u64, len: usize) -> Vec<u8> {
    let (ra, rb) = (
        chunk_bytes(chunk_size, a, len),
        chunk_bytes(chunk_size, b, len),
    );
    let mut swapped = object.to_vec();
    swapped[ra.clone()].copy_from_slice(&object[rb.clone()]);
    swapped[rb].copy_from_slice(&object[ra]);
    swapped
}
