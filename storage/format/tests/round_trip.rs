//! Sealing then opening returns the plaintext at every boundary size, through every API.

mod common;

use coffer_format::{CHUNK_OVERHEAD, ChunkCipher, HEADER_LEN, Layout, NONCE_LEN, TAG_LEN};
use common::{DEFAULT_CHUNK, SMALL_CHUNK, id, key, open, plaintext, seal};

fn boundary_sizes(chunk_size: u32) -> [usize; 6] {
    let cs = chunk_size as usize;
    [0, 1, cs - 1, cs, cs + 1, cs * 11 / 2]
}

#[test]
fn whole_objects_round_trip_at_boundary_sizes_for_two_chunk_sizes() {
    for chunk_size in [SMALL_CHUNK, DEFAULT_CHUNK] {
        let layout = Layout::new(chunk_size).unwrap();
        for len in boundary_sizes(chunk_size) {
            let original = plaintext(len);
            let object = seal(chunk_size, &original);
            assert_eq!(
                object.len() as u64,
                layout.object_len(len as u64),
                "len {len}"
            );
            assert_eq!(
                open(&object, len).as_deref(),
                Ok(&original[..]),
                "len {len}"
            );
        }
    }
}

#[test]
fn chunks_sealed_in_place_open_in_place_at_boundary_sizes() {
    for chunk_size in [SMALL_CHUNK, DEFAULT_CHUNK] {
        let writer = ChunkCipher::new(&key(1), id(2), chunk_size).unwrap();
        let reader = ChunkCipher::open_header(&key(1), id(2), &writer.header()).unwrap();
        for len in boundary_sizes(chunk_size) {
            let original = plaintext(len);
            let count = writer.layout().chunk_count(len as u64);
            let mut recovered = Vec::new();
            let mut pieces = original.chunks(chunk_size as usize);
            for index in 0..count {
                let piece = pieces.next().unwrap_or_default();
                let is_final = index + 1 == count;
                let mut buf = Vec::with_capacity(piece.len() + CHUNK_OVERHEAD);
                buf.extend_from_slice(&[0xEE; NONCE_LEN]);
                buf.extend_from_slice(piece);
                writer
                    .seal_chunk_in_place(index, is_final, &mut buf)
                    .unwrap();
                assert_eq!(buf.len(), piece.len() + CHUNK_OVERHEAD);
                // A piece of a few bytes can come out equal to its ciphertext by chance (one
                // in 256 for a single byte: the nonce is random); from 16 bytes on the chance is
                // 2^-128, so the check means something there and never fails by luck.
                if piece.len() >= 16 {
                    assert_ne!(
                        &buf[NONCE_LEN..buf.len() - TAG_LEN],
                        piece,
                        "stored in the clear"
                    );
                }
                recovered.extend_from_slice(
                    reader
                        .open_chunk_in_place(index, is_final, &mut buf)
                        .unwrap(),
                );
            }
            assert_eq!(recovered, original, "chunk size {chunk_size}, len {len}");
        }
    }
}

#[test]
fn a_reader_rebuilt_from_the_header_has_the_writers_layout_and_content_id() {
    let writer = ChunkCipher::new(&key(1), id(2), 1 << 20).unwrap();
    let reader = ChunkCipher::open_header(&key(1), id(2), &writer.header()).unwrap();
    assert_eq!(reader.layout(), writer.layout());
    assert_eq!(reader.content_id(), id(2));
    assert_eq!(reader.header(), writer.header());
}

#[test]
fn random_access_opens_chunk_i_from_its_own_bytes_alone() {
    let len = SMALL_CHUNK as usize * 11 / 2;
    let original = plaintext(len);
    let object = seal(SMALL_CHUNK, &original);
    let reader = ChunkCipher::open_header(&key(1), id(2), &object[..HEADER_LEN]).unwrap();
    let layout = reader.layout();
    let count = layout.chunk_count(len as u64);
    for index in (0..count).rev() {
        let range = layout.sealed_range(index..index + 1, len as u64);
        let mut only_this_chunk = object[range.start as usize..range.end as usize].to_vec();
        let opened = reader
            .open_chunk_in_place(index, index + 1 == count, &mut only_this_chunk)
            .unwrap();
        let start = index as usize * SMALL_CHUNK as usize;
        let expected = &original[start..][..layout.chunk_plain_len(index, len as u64)];
        assert_eq!(opened, expected, "chunk {index}");
    }
}

#[test]
fn a_ranged_read_of_middle_and_tail_chunks_returns_exactly_that_plaintext() {
    let len = SMALL_CHUNK as usize * 11 / 2;
    let cs = SMALL_CHUNK as usize;
    let original = plaintext(len);
    let object = seal(SMALL_CHUNK, &original);
    let reader = ChunkCipher::open_header(&key(1), id(2), &object[..HEADER_LEN]).unwrap();
    for chunks in [1..3, 4..6, 2..99] {
        let range = reader.layout().sealed_range(chunks.clone(), len as u64);
        let mut fetched = object[range.start as usize..range.end as usize].to_vec();
        let mut out = Vec::new();
        reader
            .open_chunk_range(chunks.clone(), &mut fetched.clone(), len as u64, &mut out)
            .unwrap();
        let end = (chunks.end as usize * cs).min(len);
        assert_eq!(
            out,
            &original[chunks.start as usize * cs..end],
            "{chunks:?}"
        );
        let mut via_run = Vec::new();
        reader
            .open_chunks(chunks.start, &mut fetched, len as u64, &mut via_run)
            .unwrap();
        assert_eq!(via_run, out);
    }
}

#[test]
fn nonces_differ_between_two_seals_of_the_same_chunk() {
    let cipher = ChunkCipher::new(&key(1), id(2), SMALL_CHUNK).unwrap();
    let piece = plaintext(100);
    let (mut first, mut second) = (Vec::new(), Vec::new());
    cipher.seal_chunk(3, true, &piece, &mut first).unwrap();
    cipher.seal_chunk(3, true, &piece, &mut second).unwrap();
    assert_ne!(first[..NONCE_LEN], second[..NONCE_LEN]);
    assert_ne!(first[NONCE_LEN..], second[NONCE_LEN..]);
    assert_eq!(
        cipher.open_chunk_in_place(3, true, &mut first).unwrap(),
        &piece[..]
    );
    assert_eq!(
        cipher.open_chunk_in_place(3, true, &mut second).unwrap(),
        &piece[..]
    );
}

#[test]
fn a_resumed_upload_rewrites_its_tail_chunk_with_a_fresh_nonce() {
    let cs = SMALL_CHUNK as usize;
    let cipher = ChunkCipher::new(&key(1), id(2), SMALL_CHUNK).unwrap();
    let original = plaintext(cs + 50);
    let mut interrupted = Vec::new();
    cipher
        .seal_chunk(1, true, &original[cs..cs + 10], &mut interrupted)
        .unwrap();
    let mut resumed = Vec::new();
    cipher
        .seal_chunk(1, true, &original[cs..], &mut resumed)
        .unwrap();
    assert_ne!(interrupted[..NONCE_LEN], resumed[..NONCE_LEN]);
    let mut object = cipher.header().to_vec();
    cipher
        .seal_chunk(0, false, &original[..cs], &mut object)
        .unwrap();
    object.extend_from_slice(&resumed);
    assert_eq!(open(&object, cs + 50).unwrap(), original);
}
